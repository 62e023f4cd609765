"""Every Envoy resource name the translator emits, built and parsed in one place.

Names follow istiod exactly (pilot/pkg/model/service.go BuildSubsetKey, gateway.go
getListenerName, httproute.go) because users and tools grep for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds_server.config.address import is_unix

# Fixed clusters (cluster_builder.go).
BLACKHOLE_CLUSTER = "BlackHoleCluster"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
INBOUND_PASSTHROUGH_CLUSTER = "InboundPassthroughCluster"

# Virtual listeners and their fixed ports (MeshConfig proxyListenPort / proxyInboundListenPort).
VIRTUAL_OUTBOUND = "virtualOutbound"
VIRTUAL_INBOUND = "virtualInbound"
VIRTUAL_OUTBOUND_PORT = 15001
VIRTUAL_INBOUND_PORT = 15006
# Bootstrap-static ports of the agent's Envoy: never emitted on a wildcard listener.
STATUS_PORT = 15021
PROMETHEUS_PORT = 15090
RESERVED_PORTS = frozenset({VIRTUAL_OUTBOUND_PORT, VIRTUAL_INBOUND_PORT, STATUS_PORT, PROMETHEUS_PORT})

# Filter chain names.
PASSTHROUGH_FILTER_CHAIN = "PassthroughFilterChain"
VIRTUAL_OUTBOUND_BLACKHOLE_CHAIN = "virtualOutbound-blackhole"
VIRTUAL_OUTBOUND_CATCHALL_CHAIN = "virtualOutbound-catchall-tcp"
VIRTUAL_INBOUND_BLACKHOLE_CHAIN = "virtualInbound-blackhole"
VIRTUAL_INBOUND_PASSTHROUGH_CHAIN = "virtualInbound"
VIRTUAL_INBOUND_CATCHALL_HTTP_CHAIN = "virtualInbound-catchall-http"

# Catch-all virtual hosts, last in every non-sniffed outbound route (istiod's `httproute.go`).
ALLOW_ANY_VHOST = "allow_any"
BLOCK_ALL_VHOST = "block_all"

OUTBOUND = "outbound"
INBOUND = "inbound"


# ------------------------------------------------------------------ clusters
def outbound_cluster(port: int, host: str, subset: str = "") -> str:
    """`outbound|9080||reviews.default.svc.cluster.local` (subset between the bars)."""
    return f"{OUTBOUND}|{port}|{subset}|{host}"


def inbound_cluster(port: int) -> str:
    """`inbound|8080||`: inbound clusters are per arriving (target) port, no host."""
    return f"{INBOUND}|{port}||"


@dataclass(frozen=True, slots=True)
class ClusterName:
    direction: str  # "outbound" | "inbound"
    port: int
    subset: str
    host: str


def parse_cluster(name: str) -> ClusterName | None:
    """The parts of a `direction|port|subset|host` name; None for any other name."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] not in (OUTBOUND, INBOUND) or not parts[1].isdigit():
        return None
    return ClusterName(parts[0], int(parts[1]), parts[2], parts[3])


# ------------------------------------------------------------------ listeners
def listener(bind: str, port: int) -> str:
    """`0.0.0.0_9080`, `10.96.0.5_3306`, `unix:///var/run/a.sock_0` (primary bind + port)."""
    return f"{bind}_{port}"


def outbound_http_stat_prefix(bind: str, port: int) -> str:
    """HCM stat prefix of an outbound HTTP chain, with istiod's `;` delimiter: `outbound_0.0.0.0_9080;`."""
    return f"{OUTBOUND}_{listener(bind, port)};"


def inbound_stat_prefix(bind: str, port: int) -> str:
    """HCM stat prefix of an inbound HTTP chain: `inbound_0.0.0.0_8080`."""
    return f"{INBOUND}_{listener(bind, port)}"


def inbound_chain(bind: str, port: int) -> str:
    """Per-port chain inside virtualInbound: `0.0.0.0_8080`."""
    return listener(bind, port)


# ------------------------------------------------------------------ routes
def port_route(port: int) -> str:
    """Shared outbound route for every HTTP service on a port: `"9080"`."""
    return str(port)


def host_port_route(host: str, port: int) -> str:
    """Per-service route of a VIP-bound auto listener: `reviews.default.svc.cluster.local:9080`."""
    return f"{host}:{port}"


def virtual_host(host: str, port: int) -> str:
    """Outbound virtual host name: `reviews.default.svc.cluster.local:9080`."""
    return f"{host}:{port}"


def inbound_virtual_host(service_port: int) -> str:
    return f"{INBOUND}|http|{service_port}"


@dataclass(frozen=True, slots=True)
class RouteName:
    """What an RDS name asks for. kind: "port" | "host_port" | "unix" | "other"."""

    kind: str
    port: int = 0
    host: str = ""
    bind: str = ""


def parse_route(name: str) -> RouteName:
    """Classify an RDS name the way istiod's route generator does (httproute.go)."""
    if name.isdigit():
        return RouteName("port", port=int(name))
    if is_unix(name):
        return RouteName("unix", bind=name)
    host, sep, port = name.rpartition(":")
    if sep and host and port.isdigit():
        return RouteName("host_port", port=int(port), host=host)
    return RouteName("other")
