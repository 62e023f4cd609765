"""Values the config stage parses once: addresses, Sidecar listeners, pool and TLS settings."""

from __future__ import annotations

import pytest
from google.protobuf import json_format

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioServiceEntry, IstioSidecar, ObjectMeta
from xds_server.config.address import Endpoint, EndpointKind, host_port
from xds_server.config.istio import CaptureMode, SidecarPort
from xds_server.config.protocol import Protocol
from xds_server.config.traffic import ConnectionPool, Duration, HttpSettings, ServerTls, TcpKeepalive, TcpSettings


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:80", ("127.0.0.1", 80)),
    ("[::1]:8080", ("::1", 8080)),
    (":0", ("", 0)),
    ("host:65535", ("host", 65535)),
    ("host:65536", None),
    ("host:http", None),
    ("host:+80", None),
    ("::1:80", None),  # IPv6 needs brackets, as in Go's net.SplitHostPort
    ("host", None),
])
def test_host_port(text: str, expected: tuple[str, int] | None) -> None:
    assert host_port(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("", Endpoint(EndpointKind.ORIGINAL_DST)),
    ("unix:///var/run/app.sock", Endpoint(EndpointKind.UNIX, address="unix:///var/run/app.sock")),
    ("unix://@abstract", Endpoint(EndpointKind.UNIX, address="unix://@abstract")),
    ("0.0.0.0:8080", Endpoint(EndpointKind.HOST_PORT, "0.0.0.0", 8080, "0.0.0.0:8080")),
    ("[::]:9", Endpoint(EndpointKind.HOST_PORT, "::", 9, "[::]:9")),
    ("127.0.0.1", Endpoint(EndpointKind.INVALID, address="127.0.0.1")),
])
def test_default_endpoint_is_parsed_with_its_kind(text: str, expected: Endpoint) -> None:
    assert Endpoint.parse(text) == expected


def _sidecar(spec: dict[str, object]) -> IstioSidecar:
    return IstioSidecar(ObjectMeta("s", "ns"), json_format.ParseDict(spec, pb.Sidecar()))


def test_sidecar_listeners_are_typed_once() -> None:
    sc = _sidecar({
        "ingress": [{
            "port": {"number": 8443, "protocol": "https", "name": "web"},
            "bind": "10.0.0.1", "captureMode": "NONE", "defaultEndpoint": "127.0.0.1:8080",
            "tls": {"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k", "caCertificates": "/ca",
                    "cipherSuites": ["A", "B"], "minProtocolVersion": "TLSV1_2"},
            "connectionPool": {"tcp": {"maxConnections": 5, "connectTimeout": "1.5s",
                                       "tcpKeepalive": {"probes": 3, "time": "60s"}},
                               "http": {"idleTimeout": "30s", "useClientProtocol": True}},
        }],
        "egress": [{"port": {"number": 0, "protocol": "HTTP"}, "bind": "unix:///run/a.sock", "hosts": ["*/*"]},
                   {"hosts": ["./*"]}],
        "inboundConnectionPool": {"http": {"maxRetries": 2}},
    })
    ingress = sc.ingress[0]
    assert ingress.port == SidecarPort(8443, Protocol.HTTPS, "web")
    assert ingress.bind == "10.0.0.1"
    assert ingress.capture_mode == CaptureMode.NONE
    assert ingress.default_endpoint == Endpoint(EndpointKind.HOST_PORT, "127.0.0.1", 8080, "127.0.0.1:8080")
    assert ingress.tls == ServerTls(mode=pb.ServerTLSSettings.MUTUAL, server_certificate="/c", private_key="/k",
                                    ca_certificates="/ca", cipher_suites=("A", "B"),
                                    min_protocol_version=pb.ServerTLSSettings.TLSV1_2)
    assert ingress.tls.servable
    assert ingress.connection_pool == ConnectionPool(
        tcp=TcpSettings(max_connections=5, connect_timeout=Duration(1, 500_000_000),
                        tcp_keepalive=TcpKeepalive(probes=3, time=Duration(60))),
        http=HttpSettings(idle_timeout=Duration(30), use_client_protocol=True))
    assert sc.egress[0].port == SidecarPort(0, Protocol.HTTP)
    assert sc.egress[0].bind == "unix:///run/a.sock"
    assert sc.egress[1].port is None and sc.egress[1].hosts == ("./*",)
    # The entry's own pool wins its port; other ports take the Sidecar's inboundConnectionPool.
    assert sc.connection_pool_for_port(8443) is ingress.connection_pool
    assert sc.connection_pool_for_port(9000) == ConnectionPool(http=HttpSettings(max_retries=2))
    # Hashable: they key the translator's memo.
    assert len({ingress, ingress.tls, ingress.connection_pool}) == 3


@pytest.mark.parametrize(("tls", "servable"), [
    ({"mode": "SIMPLE", "serverCertificate": "/c", "privateKey": "/k"}, True),
    ({"mode": "MUTUAL", "serverCertificate": "/c", "privateKey": "/k"}, False),  # no CA
    ({"mode": "SIMPLE", "credentialName": "secret"}, False),  # needs SDS
    ({"mode": "PASSTHROUGH", "serverCertificate": "/c", "privateKey": "/k"}, False),
])
def test_servable_tls(tls: dict[str, object], servable: bool) -> None:
    assert ServerTls.of(json_format.ParseDict(tls, pb.ServerTLSSettings())).servable is servable


def test_service_entry_ports_carry_their_protocol() -> None:
    se = IstioServiceEntry(ObjectMeta("se", "ns"), json_format.ParseDict(
        {"hosts": ["a.example"], "ports": [{"number": 80, "protocol": "http", "name": "h", "targetPort": 8080},
                                            {"number": 9, "name": "x"}]}, pb.ServiceEntry()))
    assert [(p.number, p.protocol, p.name, p.target_port) for p in se.ports] == [
        (80, Protocol.HTTP, "h", 8080), (9, Protocol.UNSUPPORTED, "x", 0)]


def test_command_line_addresses_use_the_same_splitter() -> None:
    from xds_server.cli import build_parser
    from xds_server.commands.bootstrap import BootstrapError, build_bootstrap

    args = build_parser().parse_args(["serve", "--xds-address", "[::1]:15010", "--admin-address", ":0"])
    assert args.xds_address == ("::1", 15010) and args.admin_address == ("0.0.0.0", 0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--xds-address", "::1:15010"])  # ambiguous: needs brackets
    node = "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local"
    cluster = next(c for c in build_bootstrap(node, "[fd00::1]:15010")["static_resources"]["clusters"])
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {"address": "fd00::1", "port_value": 15010}
    with pytest.raises(BootstrapError):
        build_bootstrap(node, "fd00::1:15010")


def test_kubernetes_service_ports_carry_istios_protocol() -> None:
    from xds_server.config import ServicePort

    assert ServicePort(80, "http-web").istio_protocol is Protocol.HTTP
    assert ServicePort(8080, "web", app_protocol="kubernetes.io/h2c").istio_protocol is Protocol.HTTP2
    assert ServicePort(3306, "db").istio_protocol is Protocol.TCP  # a well-known server-first port
    assert ServicePort(53, "dns", "UDP").istio_protocol is Protocol.UDP
    assert ServicePort(80, "http-web") == ServicePort(80, "http-web")
