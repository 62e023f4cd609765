"""Istio networking objects: metadata plus the typed spec (protos/.../istio_config.proto).

A Sidecar's listeners are also parsed once into frozen values (`SidecarIngress`,
`SidecarEgress`): ports with their protocol, binds, the ingress `defaultEndpoint` with its kind,
connection pool and TLS settings; ServiceEntry ports with their protocol. The translator reads
these, never the raw strings. Binds stay the validated text (an IP, `unix://path` or empty): that
text also names the Envoy listener, and config/address.py answers the one question asked of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import protocol
from xds_server.config.address import ORIGINAL_DST_ENDPOINT, Endpoint
from xds_server.config.protocol import Protocol
from xds_server.config.refs import Kind, ObjectMeta, ObjectRef
from xds_server.config.traffic import ConnectionPool, ServerTls

# Re-exported so that callers spell enums once: pb.CaptureMode.NONE etc.
SidecarSpec = pb.Sidecar
ServiceEntrySpec = pb.ServiceEntry
CaptureMode = pb.CaptureMode


@dataclass(frozen=True, slots=True)
class SidecarPort:
    """A Sidecar listener's `port`; number 0 when absent (ingress) or a unix socket (egress)."""

    number: int
    protocol: Protocol = Protocol.UNSUPPORTED  # istio protocol.Parse of the field as written
    name: str = ""

    @classmethod
    def of(cls, message: pb.SidecarPort) -> SidecarPort:
        return cls(message.number, protocol.parse(message.protocol), message.name)


@dataclass(frozen=True, slots=True)
class SidecarIngress:
    """One `ingress` entry (istio `IstioIngressListener`)."""

    port: SidecarPort
    bind: str = ""  # an IP; "" = the instance IP (or the wildcard)
    capture_mode: CaptureMode = CaptureMode.DEFAULT
    default_endpoint: Endpoint = ORIGINAL_DST_ENDPOINT
    tls: ServerTls | None = None
    connection_pool: ConnectionPool | None = None

    @classmethod
    def of(cls, message: pb.IstioIngressListener) -> SidecarIngress:
        return cls(
            port=SidecarPort.of(message.port), bind=message.bind, capture_mode=message.capture_mode,
            default_endpoint=Endpoint.parse(message.default_endpoint),
            tls=ServerTls.of(message.tls) if message.HasField("tls") else None,
            connection_pool=ConnectionPool.of(message.connection_pool) if message.HasField("connection_pool") else None,
        )


@dataclass(frozen=True, slots=True)
class SidecarEgress:
    """One `egress` entry (istio `IstioEgressListener`)."""

    port: SidecarPort | None  # None: the portless catch-all
    bind: str = ""  # an IP, `unix:///path`, or ""
    capture_mode: CaptureMode = CaptureMode.DEFAULT
    hosts: tuple[str, ...] = ()

    @classmethod
    def of(cls, message: pb.IstioEgressListener) -> SidecarEgress:
        port = SidecarPort.of(message.port) if message.HasField("port") else None
        return cls(port, message.bind, message.capture_mode, tuple(message.hosts))


@dataclass(frozen=True, slots=True, eq=False)
class IstioSidecar:
    meta: ObjectMeta
    spec: pb.Sidecar  # treat as read-only
    api_version: str = "networking.istio.io/v1"
    # Parsed from `spec` once, when the object is made.
    ingress: tuple[SidecarIngress, ...] = field(init=False)
    egress: tuple[SidecarEgress, ...] = field(init=False)
    inbound_connection_pool: ConnectionPool | None = field(init=False)

    kind = Kind.SIDECAR

    def __post_init__(self) -> None:
        spec = self.spec
        object.__setattr__(self, "ingress", tuple(SidecarIngress.of(e) for e in spec.ingress))
        object.__setattr__(self, "egress", tuple(SidecarEgress.of(e) for e in spec.egress))
        pool = ConnectionPool.of(spec.inbound_connection_pool) if spec.HasField("inbound_connection_pool") else None
        object.__setattr__(self, "inbound_connection_pool", pool)

    def connection_pool_for_port(self, port: int) -> ConnectionPool | None:
        """istio `SidecarScope.InboundConnectionPoolForPort`: the ingress entry's pool, else the top-level one."""
        for entry in self.ingress:
            if entry.port.number == port and entry.connection_pool is not None:
                return entry.connection_pool
        return self.inbound_connection_pool

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.SIDECAR, self.meta.namespace, self.meta.name)


@dataclass(frozen=True, slots=True)
class ServiceEntryPort:
    """A ServiceEntry `ports` entry (istio `ServicePort`)."""

    number: int
    protocol: Protocol  # istio protocol.Parse of the field as written
    name: str = ""
    target_port: int = 0  # 0: unset

    @classmethod
    def of(cls, message: pb.ServicePort) -> ServiceEntryPort:
        return cls(message.number, protocol.parse(message.protocol), message.name, message.target_port)


@dataclass(frozen=True, slots=True, eq=False)
class IstioServiceEntry:
    meta: ObjectMeta
    spec: pb.ServiceEntry  # treat as read-only
    api_version: str = "networking.istio.io/v1"
    ports: tuple[ServiceEntryPort, ...] = field(init=False)  # parsed from `spec` once

    kind = Kind.SERVICE_ENTRY

    def __post_init__(self) -> None:
        object.__setattr__(self, "ports", tuple(ServiceEntryPort.of(p) for p in self.spec.ports))

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(Kind.SERVICE_ENTRY, self.meta.namespace, self.meta.name)
