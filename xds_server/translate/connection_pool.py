"""Istio ConnectionPoolSettings -> Envoy cluster fields (istiod's `cluster_traffic_policy.go` applyConnectionPool).

Inbound clusters take, in precedence, the Sidecar ingress entry's `connectionPool` for that port,
else the Sidecar's `inboundConnectionPool`, else the `connectionPool` of the DestinationRule of the
service served on that port (translate/inbound.py, istiod's `cluster_builder.go`
buildInboundCluster), else nothing (the mesh defaultTrafficPolicy step is not modelled). The chosen
block replaces the others whole: there is no field merge. Zero means unset (proto3 cannot tell them
apart, and neither can istiod).

Upstream HTTP options are accumulated in an `HttpProtocolOptions` the caller owns, the way
istiod's clusterWrapper does, and packed once at the end (`finish_http_options`).
"""

from __future__ import annotations

from typing import TypeAlias

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo_pb2

from xds_server.config.traffic import ConnectionPool, TcpKeepalive
from xds_server.translate import envoy

HttpOptions: TypeAlias = hpo_pb2.HttpProtocolOptions


def apply_connection_pool(
    cluster: cluster_pb2.Cluster,
    http_opts: HttpOptions | None,
    pool: ConnectionPool | None,
    *,
    connect_timeout_s: float,
    http_port: bool,
) -> HttpOptions | None:
    """Set connect timeout, circuit breakers, keepalive and HTTP options; return the HTTP options.

    `http_port` False (a TCP/TLS/UDP port) drops the `http` block: only TCP settings apply there
    (istiod's validation warns about them; we make the documented rule hold).
    """
    breakers = envoy.max_circuit_breakers()
    threshold = breakers.thresholds[0]
    http = pool.http if pool is not None and http_port else None
    tcp = pool.tcp if pool is not None else None

    idle_timeout = None
    max_requests_per_connection = 0
    max_concurrent_streams = 0
    if http is not None:
        if http.http2_max_requests > 0:  # Envoy applies max_requests to HTTP/2 only
            threshold.max_requests.value = http.http2_max_requests
        if http.http1_max_pending_requests > 0:  # ... and max_pending_requests to HTTP/1.1
            threshold.max_pending_requests.value = http.http1_max_pending_requests
        if http.max_retries > 0:
            threshold.max_retries.value = http.max_retries
        idle_timeout = http.idle_timeout
        max_requests_per_connection = max(http.max_requests_per_connection, 0)
        max_concurrent_streams = max(http.max_concurrent_streams, 0)

    cluster.connect_timeout.CopyFrom(envoy.duration(connect_timeout_s))
    max_connection_duration = None
    if tcp is not None:
        if tcp.connect_timeout is not None:
            cluster.connect_timeout.CopyFrom(tcp.connect_timeout.to_proto())
        if tcp.max_connections > 0:
            threshold.max_connections.value = tcp.max_connections
        max_connection_duration = tcp.max_connection_duration
        if idle_timeout is None:
            idle_timeout = tcp.idle_timeout
        if tcp.tcp_keepalive is not None:
            _apply_keepalive(cluster, tcp.tcp_keepalive)
    cluster.circuit_breakers.CopyFrom(breakers)

    if max_connection_duration is not None or idle_timeout is not None or max_requests_per_connection \
            or max_concurrent_streams:
        http_opts = http_opts if http_opts is not None else HttpOptions()
        common = http_opts.common_http_protocol_options
        if idle_timeout is not None:
            common.idle_timeout.CopyFrom(idle_timeout.to_proto())
        if max_requests_per_connection:
            common.max_requests_per_connection.value = max_requests_per_connection
        if max_connection_duration is not None:
            common.max_connection_duration.CopyFrom(max_connection_duration.to_proto())
        if max_concurrent_streams and is_h2(http_opts):
            http_opts.explicit_http_config.http2_protocol_options.max_concurrent_streams.value = max_concurrent_streams
    if http is not None and http.use_client_protocol:
        http_opts = use_downstream_protocol(http_opts)
    return http_opts


def _apply_keepalive(cluster: cluster_pb2.Cluster, keepalive: TcpKeepalive) -> None:
    # An empty tcp_keepalive still turns SO_KEEPALIVE on with the OS defaults.
    out = cluster.upstream_connection_options.tcp_keepalive
    out.SetInParent()
    if keepalive.probes > 0:
        out.keepalive_probes.value = keepalive.probes
    if keepalive.time is not None:
        out.keepalive_time.value = keepalive.time.seconds
    if keepalive.interval is not None:
        out.keepalive_interval.value = keepalive.interval.seconds


def is_h2(http_opts: HttpOptions | None) -> bool:
    """Whether the upstream is explicitly HTTP/2 (`h2_options`)."""
    return http_opts is not None and http_opts.HasField("explicit_http_config") \
        and http_opts.explicit_http_config.HasField("http2_protocol_options")


def h2_options(http_opts: HttpOptions | None) -> HttpOptions:
    """Explicit HTTP/2 upstream (HTTP2/GRPC ports), keeping any common options already set."""
    http_opts = http_opts if http_opts is not None else HttpOptions()
    http_opts.explicit_http_config.http2_protocol_options.SetInParent()
    return http_opts


def use_downstream_protocol(http_opts: HttpOptions | None) -> HttpOptions:
    """Mirror the downstream HTTP version (auto ports, useClientProtocol); keeps explicit HTTP/1 options."""
    http_opts = http_opts if http_opts is not None else HttpOptions()
    http1 = protocol_pb2.Http1ProtocolOptions()
    if http_opts.HasField("explicit_http_config") \
            and http_opts.explicit_http_config.HasField("http_protocol_options"):
        http1.CopyFrom(http_opts.explicit_http_config.http_protocol_options)
    http_opts.use_downstream_protocol_config.CopyFrom(HttpOptions.UseDownstreamHttpConfig(
        http_protocol_options=http1, http2_protocol_options=protocol_pb2.Http2ProtocolOptions()))
    return http_opts


def finish_http_options(cluster: cluster_pb2.Cluster, http_opts: HttpOptions | None) -> None:
    """Pack the options into the cluster; Envoy requires an upstream protocol, so default to HTTP/1."""
    if http_opts is None:
        return
    if http_opts.WhichOneof("upstream_protocol_options") is None:
        http_opts.explicit_http_config.http_protocol_options.SetInParent()
    envoy.set_http_protocol_options(cluster, http_opts)
