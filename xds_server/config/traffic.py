"""Connection pool and server TLS settings as hashable, frozen values.

Parsed once from the Istio messages (`ConnectionPoolSettings`, `ServerTLSSettings` of istio
`networking/v1alpha3`); the translator keys its memo on them and builds Envoy fields from them
directly. Zero means unset, as in proto3 and istiod; a message field that is absent is None.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import duration_pb2
from google.protobuf.message import Message

from xds_server._proto import istio_config_pb2 as pb

TLSMode = pb.ServerTLSSettings.TLSmode
TLSProtocol = pb.ServerTLSSettings.TLSProtocol


@dataclass(frozen=True, slots=True)
class Duration:
    """A protobuf Duration, exactly (seconds and nanos)."""

    seconds: int
    nanos: int = 0

    @classmethod
    def of(cls, message: duration_pb2.Duration) -> Duration:
        return cls(message.seconds, message.nanos)

    def to_proto(self) -> duration_pb2.Duration:
        return duration_pb2.Duration(seconds=self.seconds, nanos=self.nanos)


def _duration(parent: Message, name: str) -> Duration | None:
    return Duration.of(getattr(parent, name)) if parent.HasField(name) else None


@dataclass(frozen=True, slots=True)
class TcpKeepalive:
    probes: int = 0
    time: Duration | None = None
    interval: Duration | None = None


@dataclass(frozen=True, slots=True)
class TcpSettings:
    max_connections: int = 0
    connect_timeout: Duration | None = None
    tcp_keepalive: TcpKeepalive | None = None
    max_connection_duration: Duration | None = None
    idle_timeout: Duration | None = None


@dataclass(frozen=True, slots=True)
class HttpSettings:
    http1_max_pending_requests: int = 0
    http2_max_requests: int = 0
    max_requests_per_connection: int = 0
    max_retries: int = 0
    idle_timeout: Duration | None = None
    use_client_protocol: bool = False
    max_concurrent_streams: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    """Istio `ConnectionPoolSettings`: the `tcp` and `http` blocks, each None when not written."""

    tcp: TcpSettings | None = None
    http: HttpSettings | None = None

    @classmethod
    def of(cls, message: pb.ConnectionPoolSettings) -> ConnectionPool:
        tcp = http = None
        if message.HasField("tcp"):
            t = message.tcp
            keepalive = None
            if t.HasField("tcp_keepalive"):
                k = t.tcp_keepalive
                keepalive = TcpKeepalive(k.probes, _duration(k, "time"), _duration(k, "interval"))
            tcp = TcpSettings(t.max_connections, _duration(t, "connect_timeout"), keepalive,
                              _duration(t, "max_connection_duration"), _duration(t, "idle_timeout"))
        if message.HasField("http"):
            h = message.http
            http = HttpSettings(h.http1_max_pending_requests, h.http2_max_requests, h.max_requests_per_connection,
                                h.max_retries, _duration(h, "idle_timeout"), h.use_client_protocol,
                                h.max_concurrent_streams)
        return cls(tcp, http)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """Istio `ServerTLSSettings` as a Sidecar ingress listener's `tls` (the fields a sidecar may use)."""

    mode: TLSMode = pb.ServerTLSSettings.PASSTHROUGH
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    credential_names: tuple[str, ...] = ()
    verify_certificate_spki: tuple[str, ...] = ()
    verify_certificate_hash: tuple[str, ...] = ()
    min_protocol_version: TLSProtocol = pb.ServerTLSSettings.TLS_AUTO
    max_protocol_version: TLSProtocol = pb.ServerTLSSettings.TLS_AUTO
    cipher_suites: tuple[str, ...] = ()

    @classmethod
    def of(cls, message: pb.ServerTLSSettings) -> ServerTls:
        return cls(
            mode=message.mode, server_certificate=message.server_certificate, private_key=message.private_key,
            ca_certificates=message.ca_certificates, ca_crl=message.ca_crl,
            credential_name=message.credential_name, credential_names=tuple(message.credential_names),
            verify_certificate_spki=tuple(message.verify_certificate_spki),
            verify_certificate_hash=tuple(message.verify_certificate_hash),
            min_protocol_version=message.min_protocol_version, max_protocol_version=message.max_protocol_version,
            cipher_suites=tuple(message.cipher_suites),
        )

    @property
    def mutual(self) -> bool:
        return self.mode == pb.ServerTLSSettings.MUTUAL

    @property
    def servable(self) -> bool:
        """Whether a file-based DownstreamTlsContext can serve these settings (see translate/inbound_tls.py)."""
        if self.mode not in (pb.ServerTLSSettings.SIMPLE, pb.ServerTLSSettings.MUTUAL):
            return False
        if self.credential_name or self.credential_names:
            return False  # Kubernetes Secrets need SDS, which this control plane does not serve
        if not (self.server_certificate and self.private_key):
            return False
        return not self.mutual or bool(self.ca_certificates)
