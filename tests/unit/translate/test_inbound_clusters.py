"""Inbound clusters (istiod's `cluster.go` buildInboundClusters) and their connection pools
(`cluster_traffic_policy.go` applyConnectionPool)."""

from __future__ import annotations

from tests.unit.translate.inbound_support import (
    build,
    endpoint_address,
    http_options,
    pod,
    service,
    sidecar,
    sport,
)
from xds_server.config import MeshConfig

MAX = 4294967295


def one_cluster(*objects: object, port: int = 9080, **kwargs: object):  # type: ignore[no-untyped-def]
    return build(*objects, **kwargs).clusters[f"inbound|{port}||"]  # type: ignore[arg-type]


def test_passthrough_policy_gives_original_dst_from_127_0_0_6() -> None:
    c = one_cluster(pod(), service("reviews", sport(9080, "http")))
    assert c.type == c.ORIGINAL_DST
    assert c.lb_policy == c.CLUSTER_PROVIDED
    assert c.cleanup_interval.seconds == 9223372035  # cleanup effectively disabled
    assert c.upstream_bind_config.source_address.address == "127.0.0.6"
    assert c.upstream_bind_config.source_address.port_value == 0
    assert c.alt_stat_name == "inbound|9080||;"
    assert c.connect_timeout.ToSeconds() == 10
    assert http_options(c) is None  # HTTP/1.1 by default: nothing to say


def test_localhost_policy_gives_a_static_loopback_cluster_without_source_bind() -> None:
    mesh = MeshConfig(inbound_traffic_policy="LOCALHOST", connect_timeout_s=2.5)
    c = one_cluster(pod(), service("reviews", sport(80, "http", 9080)), mesh=mesh)
    assert c.type == c.STATIC
    assert endpoint_address(c) == "127.0.0.1:9080"
    assert not c.HasField("upstream_bind_config")
    assert c.connect_timeout.ToMilliseconds() == 2500


def test_h2_ports_get_explicit_http2_upstream() -> None:
    c = one_cluster(pod(), service("api", sport(9080, "grpc")))
    opts = http_options(c)
    assert opts is not None and opts.explicit_http_config.HasField("http2_protocol_options")


def test_auto_ports_mirror_the_downstream_protocol() -> None:
    c = one_cluster(pod(), service("api", sport(9080, "unnamed")))
    opts = http_options(c)
    assert opts is not None and opts.HasField("use_downstream_protocol_config")


def test_default_pool_is_effectively_unlimited() -> None:
    c = one_cluster(pod(), service("reviews", sport(9080, "http")))
    (t,) = c.circuit_breakers.thresholds
    assert (t.max_connections.value, t.max_pending_requests.value, t.max_requests.value,
            t.max_retries.value, t.track_remaining) == (MAX, MAX, MAX, MAX, True)


def test_inbound_connection_pool_applies_to_service_derived_clusters_too() -> None:
    sc = sidecar({"inboundConnectionPool": {"tcp": {"maxConnections": 7}}})
    c = one_cluster(pod(), service("reviews", sport(9080, "http")), sidecar_obj=sc)
    assert c.circuit_breakers.thresholds[0].max_connections.value == 7


def test_port_pool_replaces_the_sidecar_pool_instead_of_merging() -> None:
    sc = sidecar({
        "inboundConnectionPool": {"tcp": {"maxConnections": 7, "connectTimeout": "3s"}},
        "ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "http"},
                     "connectionPool": {"http": {"maxRetries": 3}}}],
    })
    c = one_cluster(pod(), sidecar_obj=sc)
    t = c.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_retries.value) == (MAX, 3)
    assert c.connect_timeout.ToSeconds() == 10  # the Sidecar-level 3s does not leak in


def test_every_pool_field_maps_onto_the_cluster() -> None:
    sc = sidecar({"ingress": [{
        "port": {"number": 9080, "protocol": "GRPC", "name": "grpc"},
        "connectionPool": {
            "tcp": {"maxConnections": 11, "connectTimeout": "1.5s", "maxConnectionDuration": "60s",
                    "idleTimeout": "30s", "tcpKeepalive": {"probes": 3, "time": "20s", "interval": "5s"}},
            "http": {"http1MaxPendingRequests": 12, "http2MaxRequests": 13, "maxRetries": 14,
                     "maxRequestsPerConnection": 15, "idleTimeout": "40s", "maxConcurrentStreams": 16},
        },
    }]})
    c = one_cluster(pod(), sidecar_obj=sc)
    t = c.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_pending_requests.value, t.max_requests.value,
            t.max_retries.value, t.track_remaining) == (11, 12, 13, 14, True)
    assert c.connect_timeout.ToMilliseconds() == 1500
    ka = c.upstream_connection_options.tcp_keepalive
    assert (ka.keepalive_probes.value, ka.keepalive_time.value, ka.keepalive_interval.value) == (3, 20, 5)
    opts = http_options(c)
    assert opts is not None
    common = opts.common_http_protocol_options
    assert common.max_requests_per_connection.value == 15
    assert common.idle_timeout.ToSeconds() == 40  # http.idleTimeout wins over tcp.idleTimeout
    assert common.max_connection_duration.ToSeconds() == 60
    assert opts.explicit_http_config.http2_protocol_options.max_concurrent_streams.value == 16


def test_tcp_idle_timeout_is_used_when_http_has_none() -> None:
    sc = sidecar({"inboundConnectionPool": {"tcp": {"idleTimeout": "30s"}}})
    c = one_cluster(pod(), service("reviews", sport(9080, "http")), sidecar_obj=sc)
    opts = http_options(c)
    assert opts is not None
    assert opts.common_http_protocol_options.idle_timeout.ToSeconds() == 30
    assert opts.explicit_http_config.HasField("http_protocol_options")  # Envoy needs a protocol


def test_empty_keepalive_still_turns_keepalive_on() -> None:
    sc = sidecar({"inboundConnectionPool": {"tcp": {"tcpKeepalive": {}}}})
    c = one_cluster(pod(), service("reviews", sport(9080, "http")), sidecar_obj=sc)
    assert c.upstream_connection_options.HasField("tcp_keepalive")


def test_use_client_protocol_mirrors_the_downstream_protocol() -> None:
    sc = sidecar({"inboundConnectionPool": {"http": {"useClientProtocol": True}}})
    c = one_cluster(pod(), service("reviews", sport(9080, "http")), sidecar_obj=sc)
    opts = http_options(c)
    assert opts is not None and opts.HasField("use_downstream_protocol_config")


def test_max_concurrent_streams_needs_an_h2_cluster() -> None:
    sc = sidecar({"inboundConnectionPool": {"http": {"maxConcurrentStreams": 5}}})
    c = one_cluster(pod(), service("reviews", sport(9080, "http")), sidecar_obj=sc)
    opts = http_options(c)
    assert opts is not None
    assert not opts.explicit_http_config.HasField("http2_protocol_options")


def test_http_settings_are_ignored_on_tcp_ports() -> None:
    sc = sidecar({"inboundConnectionPool": {
        "tcp": {"maxConnections": 9},
        "http": {"maxRetries": 3, "maxRequestsPerConnection": 2, "useClientProtocol": True}}})
    c = one_cluster(pod(), service("db", sport(9080, "tcp")), sidecar_obj=sc)
    t = c.circuit_breakers.thresholds[0]
    assert (t.max_connections.value, t.max_retries.value) == (9, MAX)
    assert http_options(c) is None


def test_http_settings_apply_to_sniffed_ports() -> None:
    sc = sidecar({"inboundConnectionPool": {"http": {"maxRetries": 3}}})
    c = one_cluster(pod(), service("x", sport(9080, "unnamed")), sidecar_obj=sc)
    assert c.circuit_breakers.thresholds[0].max_retries.value == 3


def test_same_port_same_pool_is_one_shared_cluster_across_pods() -> None:
    from xds_server.memo import Memo

    memo = Memo()
    sc = sidecar({"ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "h"},
                               "defaultEndpoint": "127.0.0.1:8080"}]})
    a = build(pod("a", ips=("10.0.0.1",)), sidecar_obj=sc, pod_name="a", ip="10.0.0.1", memo=memo)
    b = build(pod("b", ips=("10.0.0.2",)), sidecar_obj=sc, pod_name="b", ip="10.0.0.2", memo=memo)
    assert a.parts.clusters[0] is b.parts.clusters[0]
    # ... but a different pool is a different cluster.
    sc2 = sidecar({"inboundConnectionPool": {"tcp": {"maxConnections": 1}},
                   "ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "h"},
                                "defaultEndpoint": "127.0.0.1:8080"}]})
    c = build(pod("c", ips=("10.0.0.3",)), sidecar_obj=sc2, pod_name="c", ip="10.0.0.3", memo=memo)
    assert c.parts.clusters[0] is not a.parts.clusters[0]
