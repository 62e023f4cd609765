"""A resolved DestinationRule TrafficPolicy applied to one outbound cluster (istiod's
`pilot/pkg/networking/core/cluster_traffic_policy.go` applyTrafficPolicy, applyLoadBalancer,
ApplyRingHashLoadBalancer, shouldH2Upgrade, applyUpstreamProxyProtocol; `cluster_tls.go`).

The policy is already resolved for the cluster's (port, subset) by
mesh/destination_rules.py `traffic_policy_for`. The order is istiod's: connection pool, HTTP/2
upgrade, outlier detection, load balancer, TLS, PROXY protocol, so that TLS sees whether the
cluster ended up HTTP/2 (ALPN `h2`) and the load balancer sees whether outlier detection is on.

Not modelled: locality load balancing (no topology labels here, where istiod changes nothing
either), MeshConfig `h2UpgradePolicy`, `tcpKeepalive`, `tlsDefaults` and `defaultTrafficPolicy`
(MeshConfig carries none of them here: their defaults apply).
"""

from __future__ import annotations

from typing import TypeAlias

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import base_pb2, proxy_protocol_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.type.v3 import percent_pb2

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import ObjectRef, protocol
from xds_server.config.protocol import Protocol
from xds_server.config.traffic import ConnectionPool
from xds_server.translate import cluster_tls, connection_pool, envoy
from xds_server.translate.connection_pool import HttpOptions
from xds_server.translate.outlier import apply_outlier_detection

Cluster: TypeAlias = cluster_pb2.Cluster
_LB = pb.LoadBalancerSettings
_H2 = pb.ConnectionPoolSettings.HTTPSettings
DEFAULT_MINIMUM_RING_SIZE = 1024  # Envoy's default, written out by istiod
DEFAULT_WARMUP_MIN_WEIGHT_PERCENT = 10.0  # Envoy's default
DEFAULT_WARMUP_AGGRESSION = 1.0  # linear ramp
WARMUP_AGGRESSION_RUNTIME_KEY = "("  # istiod's fixed key: the value is not meant to be overridden at runtime
# istiod's applyRetryBudget default, written as Percent{0.2}: 0.2 % on Envoy's 0-100 scale, though
# its comment says 20 % (istiod's output is what Envoy gets, so it is kept).
DEFAULT_RETRY_BUDGET_PERCENT = 0.2
DEFAULT_RETRY_BUDGET_MIN_CONCURRENCY = 3
MESH_H2_UPGRADE = False  # MeshConfig h2UpgradePolicy default DO_NOT_UPGRADE


def rule_config_path(ref: ObjectRef) -> str:
    """`istio.config` metadata (istio `util.AddConfigInfoMetadata`): the rule's path in istiod's
    internal API version, v1, whichever version it was written in."""
    return f"/apis/networking.istio.io/v1/namespaces/{ref.namespace}/destination-rule/{ref.name}"


def is_passthrough(policy: pb.TrafficPolicy | None) -> bool:
    """LoadBalancer PASSTHROUGH: the cluster becomes ORIGINAL_DST (no endpoints of its own)."""
    return policy is not None and policy.HasField("load_balancer") and policy.load_balancer.simple == _LB.PASSTHROUGH


def apply_traffic_policy(cluster: Cluster, http_opts: HttpOptions | None, policy: pb.TrafficPolicy | None, *,
                         port_protocol: Protocol, connect_timeout_s: float,
                         service_sans: tuple[str, ...] = ()) -> HttpOptions | None:
    """Apply `policy` to `cluster` (type, name and upstream protocol already set); returns the HTTP
    options still to be packed (connection_pool.finish_http_options). `service_sans`: a
    ServiceEntry's subjectAltNames, verified when the rule's `tls` names none."""
    pool = policy.connection_pool if policy is not None and policy.HasField("connection_pool") else None
    http_opts = connection_pool.apply_connection_pool(
        cluster, http_opts, ConnectionPool.of(pool) if pool is not None else None,
        connect_timeout_s=connect_timeout_s, http_port=True)  # istiod applies HTTP limits on every outbound port
    if policy is not None and policy.HasField("retry_budget"):
        _apply_retry_budget(cluster.circuit_breakers.thresholds[0], policy.retry_budget)
    if _should_h2_upgrade(pool, port_protocol):
        http_opts = connection_pool.h2_options(_without_downstream(http_opts))
    apply_outlier_detection(cluster, policy.outlier_detection
                            if policy is not None and policy.HasField("outlier_detection") else None)
    apply_load_balancer(cluster, policy.load_balancer
                        if policy is not None and policy.HasField("load_balancer") else None)
    tls = policy.tls if policy is not None and policy.HasField("tls") else None
    origination = cluster_tls.upstream_tls(tls, h2=connection_pool.is_h2(http_opts), default_sans=service_sans)
    if origination is not None:
        cluster.transport_socket.CopyFrom(envoy.tls_transport_socket(origination.context))
        if origination.auto_sni or origination.auto_san_validation:
            http_opts = http_opts if http_opts is not None else HttpOptions()
            upstream = http_opts.upstream_http_protocol_options
            upstream.auto_sni = origination.auto_sni
            upstream.auto_san_validation = origination.auto_san_validation
    if policy is not None and policy.HasField("proxy_protocol"):
        _wrap_proxy_protocol(cluster, policy.proxy_protocol.version)
    return http_opts


# ------------------------------------------------------------------ HTTP/2 upgrade
def _should_h2_upgrade(pool: pb.ConnectionPoolSettings | None, port_protocol: Protocol) -> bool:
    """istiod shouldH2Upgrade: the DR's UPGRADE applies to any port (the user vouches for HTTP),
    DO_NOT_UPGRADE never; otherwise the mesh default, DO_NOT_UPGRADE here, and never on non-HTTP ports."""
    if pool is not None and pool.HasField("http"):
        if pool.http.h2_upgrade_policy == _H2.UPGRADE:
            return True
        if pool.http.h2_upgrade_policy == _H2.DO_NOT_UPGRADE:
            return False
    if not protocol.is_http(port_protocol):
        return False
    return MESH_H2_UPGRADE  # MeshConfig h2UpgradePolicy (not configurable here)


def _without_downstream(http_opts: HttpOptions | None) -> HttpOptions | None:
    if http_opts is not None and http_opts.HasField("use_downstream_protocol_config"):
        http_opts.ClearField("use_downstream_protocol_config")
    return http_opts


# ------------------------------------------------------------------ load balancer
def apply_load_balancer(cluster: Cluster, lb: pb.LoadBalancerSettings | None) -> None:
    """istiod applyLoadBalancer: simple policies (LEAST_REQUEST by default, with warmup), consistent
    hash (RING_HASH, MAGLEV). PASSTHROUGH is decided by the cluster's spec (clusters.py: resolution
    PASSTHROUGH, so the cluster arrives here as ORIGINAL_DST without endpoints), and an ORIGINAL_DST
    cluster only takes CLUSTER_PROVIDED."""
    if cluster.type == Cluster.ORIGINAL_DST:
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
        return
    simple = lb.simple if lb is not None and lb.HasField("simple") else _LB.UNSPECIFIED
    if simple == _LB.RANDOM:
        cluster.lb_policy = Cluster.RANDOM
    elif simple == _LB.ROUND_ROBIN:
        cluster.lb_policy = Cluster.ROUND_ROBIN
        slow_start = _slow_start(lb)
        if slow_start is not None:
            cluster.round_robin_lb_config.slow_start_config.CopyFrom(slow_start)
    else:  # LEAST_REQUEST, LEAST_CONN (its old name) and unset; PASSTHROUGH returned above
        cluster.lb_policy = Cluster.LEAST_REQUEST
        slow_start = _slow_start(lb)
        if slow_start is not None:
            cluster.least_request_lb_config.slow_start_config.CopyFrom(slow_start)
    if lb is not None and lb.HasField("consistent_hash"):
        _apply_consistent_hash(cluster, lb.consistent_hash)


def _slow_start(lb: pb.LoadBalancerSettings | None) -> cluster_pb2.Cluster.SlowStartConfig | None:
    """istiod setWarmup (`warmup`), else setSlowStartConfig (deprecated `warmupDurationSecs`)."""
    if lb is None:
        return None
    if lb.HasField("warmup"):
        warmup = lb.warmup
        aggression = warmup.aggression if warmup.HasField("aggression") else DEFAULT_WARMUP_AGGRESSION
        minimum = warmup.minimum_percent if warmup.HasField("minimum_percent") else DEFAULT_WARMUP_MIN_WEIGHT_PERCENT
        out = Cluster.SlowStartConfig(min_weight_percent=percent_pb2.Percent(value=minimum))
        if warmup.HasField("duration"):
            out.slow_start_window.CopyFrom(warmup.duration)
        out.aggression.default_value = aggression
        out.aggression.runtime_key = WARMUP_AGGRESSION_RUNTIME_KEY
        return out
    if lb.HasField("warmup_duration_secs"):
        return Cluster.SlowStartConfig(slow_start_window=lb.warmup_duration_secs)
    return None


def _apply_consistent_hash(cluster: Cluster, hashing: pb.LoadBalancerSettings.ConsistentHashLB) -> None:
    """istiod ApplyRingHashLoadBalancer. The hash key itself (header, cookie, source IP, query
    parameter) is a route's `hash_policy`, built with the routes."""
    cluster.ClearField("lb_config")
    if hashing.HasField("maglev"):
        cluster.lb_policy = Cluster.MAGLEV
        if hashing.maglev.table_size:
            cluster.maglev_lb_config.table_size.value = hashing.maglev.table_size
    elif hashing.HasField("ring_hash"):
        cluster.lb_policy = Cluster.RING_HASH
        if hashing.ring_hash.minimum_ring_size:
            cluster.ring_hash_lb_config.minimum_ring_size.value = hashing.ring_hash.minimum_ring_size
    else:
        cluster.lb_policy = Cluster.RING_HASH
        cluster.ring_hash_lb_config.minimum_ring_size.value = hashing.minimum_ring_size or DEFAULT_MINIMUM_RING_SIZE


# ------------------------------------------------------------------ retry budget, PROXY protocol
def _apply_retry_budget(threshold: circuit_breaker_pb2.CircuitBreakers.Thresholds,
                        budget: pb.TrafficPolicy.RetryBudget) -> None:
    out = threshold.retry_budget
    out.budget_percent.value = budget.percent or DEFAULT_RETRY_BUDGET_PERCENT
    out.min_retry_concurrency.value = budget.min_retry_concurrency or DEFAULT_RETRY_BUDGET_MIN_CONCURRENCY


def _wrap_proxy_protocol(cluster: Cluster, version: int) -> None:
    """istiod applyUpstreamProxyProtocol: the cluster's socket (TLS, else raw buffer) inside
    `upstream_proxy_protocol`, which writes the PROXY header first."""
    if cluster.HasField("transport_socket"):
        inner = base_pb2.TransportSocket()
        inner.CopyFrom(cluster.transport_socket)
    else:
        inner = envoy.transport_socket(envoy.RAW_BUFFER_SOCKET, raw_buffer_pb2.RawBuffer())
    wrapper = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport(
        config=proxy_protocol_pb2.ProxyProtocolConfig(version=version), transport_socket=inner)
    cluster.transport_socket.CopyFrom(envoy.transport_socket(envoy.UPSTREAM_PROXY_PROTOCOL_SOCKET, wrapper))
