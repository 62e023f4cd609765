"""Port protocol rules (istio `pkg/config/protocol`, `pilot/pkg/serviceregistry/kube/conversion.go`) and
the one place names are built."""

from __future__ import annotations

import pytest

from xds_server.config import protocol
from xds_server.config.protocol import ListenerClass, Protocol
from xds_server.mesh import names


@pytest.mark.parametrize(("port", "name", "l4", "app", "expected"), [
    (80, "http", "TCP", "", Protocol.HTTP),
    (80, "http-web", "TCP", "", Protocol.HTTP),
    (80, "HTTP2-x", "TCP", "", Protocol.HTTP2),
    (80, "grpc-web-x", "TCP", "", Protocol.GRPC_WEB),
    (80, "grpc", "TCP", "", Protocol.GRPC),
    (80, "web", "TCP", "", Protocol.UNSUPPORTED),
    (80, "", "TCP", "", Protocol.UNSUPPORTED),
    (3306, "", "TCP", "", Protocol.TCP),
    (3306, "mysql", "TCP", "", Protocol.MYSQL),
    (25, "smtp", "TCP", "", Protocol.TCP),
    (53, "dns", "UDP", "", Protocol.UDP),
    (80, "tcp-x", "TCP", "http", Protocol.HTTP),  # appProtocol wins over the name
    (80, "x", "TCP", "kubernetes.io/h2c", Protocol.HTTP2),
    (80, "x", "TCP", "kubernetes.io/ws", Protocol.HTTP),
    (443, "x", "TCP", "kubernetes.io/wss", Protocol.HTTPS),
])
def test_kubernetes_port_protocol(port: int, name: str, l4: str, app: str, expected: Protocol) -> None:
    assert protocol.from_kube_port(port, name, l4, app) is expected


def test_istio_protocol_parse_is_case_insensitive_and_unknown_is_auto() -> None:
    assert protocol.parse("tls") is Protocol.TLS
    assert protocol.parse("Mongo") is Protocol.MONGO
    assert protocol.parse("") is Protocol.UNSUPPORTED
    assert protocol.parse("thrift") is Protocol.UNSUPPORTED


def test_listener_classes() -> None:
    assert protocol.listener_class(Protocol.GRPC) is ListenerClass.HTTP
    assert protocol.listener_class(Protocol.HTTPS) is ListenerClass.TCP
    assert protocol.listener_class(Protocol.UNSUPPORTED) is ListenerClass.AUTO
    assert protocol.listener_class(Protocol.UDP) is None


def test_cluster_names_round_trip() -> None:
    name = names.outbound_cluster(9080, "reviews.default.svc.cluster.local")
    assert name == "outbound|9080||reviews.default.svc.cluster.local"
    parsed = names.parse_cluster(name)
    assert parsed is not None and (parsed.port, parsed.host) == (9080, "reviews.default.svc.cluster.local")
    assert names.inbound_cluster(8080) == "inbound|8080||"
    assert names.parse_cluster("PassthroughCluster") is None


def test_route_names_are_classified_like_istiod() -> None:
    assert names.parse_route("9080").kind == "port"
    assert names.parse_route("reviews.default.svc.cluster.local:9080").port == 9080
    assert names.parse_route("unix:///var/run/a.sock").kind == "unix"
    assert names.parse_route("whatever").kind == "other"
    assert names.listener("unix:///var/run/a.sock", 0) == "unix:///var/run/a.sock_0"
