"""Small real Envoy resources for tests that drive the xDS layer directly."""

from __future__ import annotations

from collections.abc import Callable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2

from xds_server.memo import Memo
from xds_server.mesh.proxy import Proxy
from xds_server.push.planner import Generate
from xds_server.resources import Built, ProxySnapshot, TypeUrl
from xds_server.store import StoreView
from xds_server.translate import Generated, Previous


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def eds_cluster(name: str, connect_timeout_s: int = 1) -> Built:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.connect_timeout.seconds = connect_timeout_s
    c.eds_cluster_config.eds_config.CopyFrom(_ads())
    c.eds_cluster_config.service_name = name
    return Built.of(TypeUrl.CLUSTER, name, c, refs=(name,))


def bad_cluster(name: str) -> Built:
    """A cluster Envoy rejects: negative connect_timeout ("Invalid duration")."""
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    c.connect_timeout.seconds = -5
    c.eds_cluster_config.eds_config.CopyFrom(_ads())
    c.eds_cluster_config.service_name = name
    return Built.of(TypeUrl.CLUSTER, name, c, refs=(name,))


def endpoints(name: str, *addrs: tuple[str, int]) -> Built:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    group = cla.endpoints.add()
    for host, port in addrs:
        lb = group.lb_endpoints.add()
        lb.endpoint.address.socket_address.address = host
        lb.endpoint.address.socket_address.port_value = port
    return Built.of(TypeUrl.ENDPOINT, name, cla)


def http_listener(name: str, port: int, route: str, address: str = "127.0.0.1") -> Built:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name)
    hcm.rds.route_config_name = route
    hcm.rds.config_source.CopyFrom(_ads())
    router = any_pb2.Any()
    router.Pack(router_pb2.Router())
    hcm.http_filters.add(name="envoy.filters.http.router", typed_config=router)
    typed = any_pb2.Any()
    typed.Pack(hcm)
    lis = listener_pb2.Listener(name=name)
    sock = address_pb2.SocketAddress(address=address, port_value=port)
    lis.address.CopyFrom(address_pb2.Address(socket_address=sock))
    lis.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager", typed_config=typed)
    return Built.of(TypeUrl.LISTENER, name, lis, refs=(route,))


def route(name: str, cluster: str, domains: tuple[str, ...] = ("*",)) -> Built:
    rc = route_pb2.RouteConfiguration(name=name)
    vh = rc.virtual_hosts.add(name=f"{name}-vh", domains=list(domains))
    r = vh.routes.add()
    r.match.prefix = "/"
    r.route.cluster = cluster
    return Built.of(TypeUrl.ROUTE, name, rc)


def snapshot(*builts: Built) -> ProxySnapshot:
    out: dict[TypeUrl, dict[str, Built]] = {}
    for b in builts:
        out.setdefault(b.type_url, {})[b.name] = b
    return ProxySnapshot(out)




def stand_in(snapshot_for: Callable[[Proxy], ProxySnapshot]) -> Generate:
    """The translator replaced by snapshots the test makes; they report no dependencies, so every push asks again."""

    def generate(view: StoreView, proxy: Proxy, memo: Memo, previous: Previous | None) -> Generated:
        return Generated(snapshot_for(proxy))

    return generate
