"""Small shared Envoy builders: addresses, Any packing, durations, tcp_proxy, HCM, listener filters.

Everything here returns a fresh protobuf message; callers memoise the resources they assemble
from them (see memo.py). Istio-only filters (istio.metadata_exchange, istio.stats, istio.alpn)
are deliberately absent: the targets are upstream Envoy builds, which do not have them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.http_inspector.v3 import http_inspector_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from xds_server.config.address import is_unix, unix_path

# Well-known filter names (the `name` field; Envoy dispatches on the typed_config type).
HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
ROUTER = "envoy.filters.http.router"
CORS = "envoy.filters.http.cors"
FAULT = "envoy.filters.http.fault"
GRPC_STATS = "envoy.filters.http.grpc_stats"
HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
ORIGINAL_DST = "envoy.filters.listener.original_dst"
ORIGINAL_SRC = "envoy.filters.listener.original_src"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Transport socket names (a TransportSocket's `name`).
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"
UPSTREAM_PROXY_PROTOCOL_SOCKET = "envoy.transport_sockets.upstream_proxy_protocol"

# Application protocols the http_inspector reports for plaintext HTTP (no PILOT_HTTP10).
PLAINTEXT_HTTP_ALPNS: tuple[str, ...] = ("http/1.1", "h2c")
RAW_BUFFER = "raw_buffer"
TLS = "tls"

MAX_UINT32 = 4294967295
# Source address of inbound ORIGINAL_DST/passthrough clusters: iptables exempts it from capture.
INBOUND_PASSTHROUGH_BIND_V4 = "127.0.0.6"
INBOUND_PASSTHROUGH_BIND_V6 = "::6"


# ------------------------------------------------------------------ primitives
def pack(message: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def u32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def config_metadata(path: str) -> base_pb2.Metadata:
    """istio `util.BuildConfigInfoMetadata`: `istio.config`, the path of the object a route or
    filter chain came from."""
    out = base_pb2.Metadata()
    out.filter_metadata["istio"].CopyFrom(struct_pb2.Struct(fields={"config": struct_pb2.Value(string_value=path)}))
    return out


# ------------------------------------------------------------------ addresses
def is_ipv6(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 6
    except ValueError:
        return False


def socket_address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=ip, port_value=port))


def pipe_address(path: str) -> address_pb2.Address:
    return address_pb2.Address(pipe=address_pb2.Pipe(path=path))


def bind_address(bind: str, port: int) -> address_pb2.Address:
    """A listener/endpoint address from a Sidecar `bind` or endpoint: `unix://` becomes a pipe."""
    if is_unix(bind):
        return pipe_address(unix_path(bind))
    return socket_address(bind, port)


def wildcard_for(ips: Sequence[str]) -> str:
    """`0.0.0.0`, or `::` for an IPv6-only proxy."""
    return "::" if ips and all(is_ipv6(ip) for ip in ips) else "0.0.0.0"


def localhost_for(ips: Sequence[str]) -> str:
    """`127.0.0.1`, or `::1` for an IPv6-only proxy."""
    return "::1" if ips and all(is_ipv6(ip) for ip in ips) else "127.0.0.1"


def upstream_bind(ip: str) -> address_pb2.BindConfig:
    return address_pb2.BindConfig(source_address=address_pb2.SocketAddress(address=ip, port_value=0))


# ------------------------------------------------------------------ transport sockets
def transport_socket(name: str, config: Message) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=name, typed_config=pack(config))


def tls_transport_socket(context: Message) -> base_pb2.TransportSocket:
    """The `tls` transport socket around an Upstream- or DownstreamTlsContext."""
    return transport_socket(TLS_SOCKET, context)


# ------------------------------------------------------------------ xDS sources
def ads_source() -> config_source_pb2.ConfigSource:
    """`{ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}` as istiod sends it."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        initial_fetch_timeout=duration(0),
        resource_api_version=config_source_pb2.V3,
    )


# ------------------------------------------------------------------ network filters
def tcp_proxy(cluster: str, stat_prefix: str | None = None) -> listener_components_pb2.Filter:
    """tcp_proxy to one cluster; the stat prefix defaults to the cluster name, as in istiod."""
    config = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix or cluster, cluster=cluster)
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=pack(config))


def http_filters() -> list[hcm_pb2.HttpFilter]:
    """Upstream-Envoy subset of istiod's sidecar chain: grpc_stats, fault, cors, router."""
    return [
        hcm_pb2.HttpFilter(name=GRPC_STATS, typed_config=pack(grpc_stats_pb2.FilterConfig(
            emit_filter_state=True, stats_for_all_methods=wrappers_pb2.BoolValue(value=False)))),
        hcm_pb2.HttpFilter(name=FAULT, typed_config=pack(fault_pb2.HTTPFault())),
        hcm_pb2.HttpFilter(name=CORS, typed_config=pack(cors_pb2.Cors())),
        hcm_pb2.HttpFilter(name=ROUTER, typed_config=pack(router_pb2.Router())),
    ]


def http_connection_manager(stat_prefix: str, *, rds: str) -> listener_components_pb2.Filter:
    """The outbound HCM filter: routes from RDS."""
    return listener_components_pb2.Filter(name=HCM, typed_config=pack(http_connection_manager_config(stat_prefix,
                                                                                                     rds=rds)))


def http_connection_manager_config(
    stat_prefix: str,
    *,
    rds: str | None = None,
    route_config: route_pb2.RouteConfiguration | None = None,
) -> hcm_pb2.HttpConnectionManager:
    """HCM with either an RDS name (outbound) or an inline route (inbound); exactly one is given.

    Returned unpacked, so that a caller adds its own settings before packing it once.
    """
    if (rds is None) == (route_config is None):
        raise ValueError("give exactly one of rds= or route_config=")
    config = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_filters=http_filters(),
        use_remote_address=wrappers_pb2.BoolValue(value=False),
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        stream_idle_timeout=duration(0),
        normalize_path=wrappers_pb2.BoolValue(value=True),
        path_with_escaped_slashes_action=hcm_pb2.HttpConnectionManager.KEEP_UNCHANGED,
    )
    if rds is not None:
        config.rds.CopyFrom(hcm_pb2.Rds(route_config_name=rds, config_source=ads_source()))
    else:
        assert route_config is not None
        config.route_config.CopyFrom(route_config)
    return config


# ------------------------------------------------------------------ listener filters
def http_inspector() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(name=HTTP_INSPECTOR,
                                                  typed_config=pack(http_inspector_pb2.HttpInspector()))


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(name=TLS_INSPECTOR,
                                                  typed_config=pack(tls_inspector_pb2.TlsInspector()))


def original_dst() -> listener_components_pb2.ListenerFilter:
    return listener_components_pb2.ListenerFilter(name=ORIGINAL_DST,
                                                  typed_config=pack(original_dst_pb2.OriginalDst()))


def filter_chain_match(
    *,
    destination_port: int | None = None,
    transport_protocol: str = "",
    application_protocols: Iterable[str] = (),
    server_names: Iterable[str] = (),
    prefix_ranges: Iterable[str] = (),
) -> listener_components_pb2.FilterChainMatch:
    """A FilterChainMatch; prefix_ranges are `ip/len` (or bare IPs, taken as full length)."""
    match = listener_components_pb2.FilterChainMatch(
        transport_protocol=transport_protocol,
        application_protocols=list(application_protocols),
        server_names=list(server_names),
        prefix_ranges=[cidr_range(c) for c in prefix_ranges],
    )
    if destination_port is not None:
        match.destination_port.value = destination_port
    return match


def cidr_range(text: str) -> address_pb2.CidrRange:
    net = ipaddress.ip_network(text, strict=False)
    return address_pb2.CidrRange(address_prefix=str(net.network_address), prefix_len=u32(net.prefixlen))


# ------------------------------------------------------------------ cluster pieces
def max_circuit_breakers() -> circuit_breaker_pb2.CircuitBreakers:
    """istiod's default thresholds: everything at uint32 max, remaining counts tracked."""
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=u32(MAX_UINT32),
        max_pending_requests=u32(MAX_UINT32),
        max_requests=u32(MAX_UINT32),
        max_retries=u32(MAX_UINT32),
        track_remaining=True,
    )])


def http_protocol_options(
    *, h2: bool = False, use_downstream: bool = False, idle_timeout_s: float | None = None,
) -> http_protocol_options_pb2.HttpProtocolOptions:
    """Upstream HTTP options: explicit h2, or mirror the downstream protocol (auto ports)."""
    opts = http_protocol_options_pb2.HttpProtocolOptions()
    if idle_timeout_s is not None:
        opts.common_http_protocol_options.idle_timeout.CopyFrom(duration(idle_timeout_s))
    if h2:
        opts.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    elif use_downstream:
        opts.use_downstream_protocol_config.CopyFrom(
            http_protocol_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
            ))
    else:
        opts.explicit_http_config.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    return opts


def set_http_protocol_options(
    cluster: cluster_pb2.Cluster, opts: http_protocol_options_pb2.HttpProtocolOptions,
) -> None:
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(opts))
