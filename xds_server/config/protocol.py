"""Port protocols, the Istio way (pkg/config/protocol, pkg/config/kube/conversion.go).

Two entry points: `parse` for Istio objects (ServiceEntry ports, Sidecar ports: the protocol
field as written) and `from_kube_port` for Kubernetes Service ports (appProtocol, then the
port name prefix, then well-known ports). `listener_class` folds a protocol into the three
shapes an outbound/inbound listener can take: HTTP, TCP or AUTO (sniffed).
"""

from __future__ import annotations

from enum import StrEnum


class Protocol(StrEnum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    HTTP_PROXY = "HTTP_PROXY"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    MONGO = "Mongo"
    MYSQL = "MySQL"
    REDIS = "Redis"
    UDP = "UDP"
    UNSUPPORTED = "UnsupportedProtocol"  # unknown or empty: sniffed ("auto")


class ListenerClass(StrEnum):
    HTTP = "HTTP"
    TCP = "TCP"
    AUTO = "AUTO"


_BY_LOWER = {
    "tcp": Protocol.TCP,
    "udp": Protocol.UDP,
    "grpc": Protocol.GRPC,
    "grpc-web": Protocol.GRPC_WEB,
    "http": Protocol.HTTP,
    "http_proxy": Protocol.HTTP_PROXY,
    "http2": Protocol.HTTP2,
    "https": Protocol.HTTPS,
    "tls": Protocol.TLS,
    "mongo": Protocol.MONGO,
    "redis": Protocol.REDIS,
    "mysql": Protocol.MYSQL,
}

HTTP_FAMILY = frozenset({Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB,
                         Protocol.HTTP_PROXY})
TCP_FAMILY = frozenset({Protocol.TCP, Protocol.HTTPS, Protocol.TLS, Protocol.MONGO, Protocol.MYSQL,
                        Protocol.REDIS})
H2_FAMILY = frozenset({Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB})
TLS_FAMILY = frozenset({Protocol.HTTPS, Protocol.TLS})

# Server-first protocols: sniffing would hang waiting for the client, so Kubernetes ports with
# these numbers and no recognised name are TCP (Kubernetes only; ServiceEntry has no such rule).
WELL_KNOWN_TCP_PORTS = frozenset({25, 53, 3306, 27017})

_KUBE_APP_PROTOCOLS = {
    "kubernetes.io/h2c": Protocol.HTTP2,
    "kubernetes.io/ws": Protocol.HTTP,
    "kubernetes.io/wss": Protocol.HTTPS,
}


def parse(text: str) -> Protocol:
    """istio protocol.Parse: case-insensitive; anything else (including "") is UNSUPPORTED."""
    return _BY_LOWER.get(text.lower(), Protocol.UNSUPPORTED)


def from_kube_port(port: int, name: str = "", l4_protocol: str = "TCP", app_protocol: str = "") -> Protocol:
    """istio kube.ConvertProtocol for one Service port."""
    if l4_protocol.upper() == "UDP":
        return Protocol.UDP
    text = name
    if app_protocol:
        text = app_protocol
        known = _KUBE_APP_PROTOCOLS.get(app_protocol)
        if known is not None:
            return known
    # Before the prefix split: "grpc-web" contains the separator.
    if text.lower().startswith("grpc-web"):
        return Protocol.GRPC_WEB
    found = parse(text.partition("-")[0])
    if found is Protocol.UNSUPPORTED and port in WELL_KNOWN_TCP_PORTS:
        return Protocol.TCP
    return found


def is_http(p: Protocol) -> bool:
    return p in HTTP_FAMILY


def is_tcp(p: Protocol) -> bool:
    return p in TCP_FAMILY


def is_h2(p: Protocol) -> bool:
    """Clusters for these speak HTTP/2 upstream explicitly."""
    return p in H2_FAMILY


def is_tls(p: Protocol) -> bool:
    return p in TLS_FAMILY


def is_auto(p: Protocol) -> bool:
    return p is Protocol.UNSUPPORTED


def listener_class(p: Protocol) -> ListenerClass | None:
    """HTTP, TCP or AUTO; None for UDP (no listener is built for it)."""
    if p in HTTP_FAMILY:
        return ListenerClass.HTTP
    if p in TCP_FAMILY:
        return ListenerClass.TCP
    if p is Protocol.UNSUPPORTED:
        return ListenerClass.AUTO
    return None
