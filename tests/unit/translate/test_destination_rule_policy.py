"""DestinationRule trafficPolicy on outbound clusters, decoded from the generated Cluster: load
balancer (simple, consistent hash, warmup), connection pool, HTTP/2 upgrade, outlier detection,
TLS origination from files (never half-built), PROXY protocol, precedence per (port, subset), and
one build per distinct policy."""

from __future__ import annotations

from pathlib import Path

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.proxy_protocol.v3 import upstream_proxy_protocol_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2

from tests.unit.translate.dr_support import REVIEWS, dr, http_options, istio_md, tls_context
from tests.unit.translate.outbound_support import cluster, pod, proxy, service_entry, snap, svc, view_of
from xds_server.resources import TypeUrl
from xds_server.translate import Memo

Cluster = cluster_pb2.Cluster
SAN = common_pb2.SubjectAltNameMatcher
PORTS = "[{name: http, port: 9080}, {name: grpc, port: 9090}, {name: tcp, port: 9300}, {name: x, port: 9400}]"
BASE = svc("reviews", ports=PORTS) + pod("reviews-1", ip="10.244.0.1", labels="{app: reviews, version: v1}")


def built(policy: str, port: int = 9080, subset: str = "", extra: str = "") -> Cluster:
    spec = "host: reviews\ntrafficPolicy:\n" + "\n".join("  " + ln for ln in policy.strip("\n").splitlines())
    s = snap(view_of(BASE, dr(spec + extra)))
    return cluster(s, f"outbound|{port}|{subset}|{REVIEWS}")


# ------------------------------------------------------------------ load balancer
def test_simple_load_balancers() -> None:
    assert built("loadBalancer: {simple: ROUND_ROBIN}").lb_policy == Cluster.ROUND_ROBIN
    assert built("loadBalancer: {simple: RANDOM}").lb_policy == Cluster.RANDOM
    assert built("loadBalancer: {simple: LEAST_REQUEST}").lb_policy == Cluster.LEAST_REQUEST
    assert built("loadBalancer: {simple: LEAST_CONN}").lb_policy == Cluster.LEAST_REQUEST
    assert built("connectionPool: {tcp: {maxConnections: 1}}").lb_policy == Cluster.LEAST_REQUEST  # unset
    c = built("loadBalancer: {simple: PASSTHROUGH}")
    assert (c.type, c.lb_policy) == (Cluster.ORIGINAL_DST, Cluster.CLUSTER_PROVIDED)


def test_consistent_hash_picks_ring_hash_1024_or_the_named_algorithm() -> None:
    c = built("loadBalancer: {consistentHash: {httpHeaderName: x-user}}")
    assert c.lb_policy == Cluster.RING_HASH and c.ring_hash_lb_config.minimum_ring_size.value == 1024
    c = built("loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 64}}")
    assert c.ring_hash_lb_config.minimum_ring_size.value == 64
    c = built("loadBalancer: {consistentHash: {httpHeaderName: x, ringHash: {minimumRingSize: 2048}}}")
    assert c.lb_policy == Cluster.RING_HASH and c.ring_hash_lb_config.minimum_ring_size.value == 2048
    c = built("loadBalancer: {consistentHash: {httpHeaderName: x, ringHash: {}}}")
    assert c.lb_policy == Cluster.RING_HASH and not c.HasField("ring_hash_lb_config")
    c = built("loadBalancer: {consistentHash: {httpCookie: {name: u, ttl: 0s}, maglev: {tableSize: 65537}}}")
    assert c.lb_policy == Cluster.MAGLEV and c.maglev_lb_config.table_size.value == 65537


def test_warmup_becomes_slow_start_with_istios_defaults() -> None:
    c = built("loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 30s}}")
    slow = c.round_robin_lb_config.slow_start_config
    assert slow.slow_start_window.seconds == 30 and slow.min_weight_percent.value == 10.0
    assert (slow.aggression.default_value, slow.aggression.runtime_key) == (1.0, "(")
    c = built("loadBalancer: {warmup: {duration: 10s, minimumPercent: 25, aggression: 2}}")
    slow = c.least_request_lb_config.slow_start_config
    assert (slow.min_weight_percent.value, slow.aggression.default_value) == (25.0, 2.0)
    c = built("loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 15s}")
    slow = c.least_request_lb_config.slow_start_config
    assert slow.slow_start_window.seconds == 15 and not slow.HasField("aggression")


# ------------------------------------------------------------------ connection pool
POOL = """
connectionPool:
  tcp:
    maxConnections: 3
    connectTimeout: 250ms
    maxConnectionDuration: 60s
    idleTimeout: 20s
    tcpKeepalive: {probes: 4, time: 30s, interval: 5s}
  http:
    http1MaxPendingRequests: 5
    http2MaxRequests: 6
    maxRequestsPerConnection: 1
    maxRetries: 2
    idleTimeout: 10s
    maxConcurrentStreams: 50
"""


def test_connection_pool_sets_breakers_timeouts_keepalive_and_http_options() -> None:
    for port in (9080, 9090, 9300):
        c = built(POOL, port)
        t = c.circuit_breakers.thresholds[0]
        assert (t.max_connections.value, t.max_pending_requests.value, t.max_requests.value,
                t.max_retries.value) == (3, 5, 6, 2)
        assert (c.connect_timeout.seconds, c.connect_timeout.nanos) == (0, 250_000_000)
        ka = c.upstream_connection_options.tcp_keepalive
        assert (ka.keepalive_probes.value, ka.keepalive_time.value, ka.keepalive_interval.value) == (4, 30, 5)
        opts = http_options(c)
        assert opts is not None
        common = opts.common_http_protocol_options
        assert common.idle_timeout.seconds == 10  # http wins over tcp
        assert common.max_requests_per_connection.value == 1
        assert common.max_connection_duration.seconds == 60
    grpc = http_options(built(POOL, 9090))
    assert grpc is not None and grpc.explicit_http_config.http2_protocol_options.max_concurrent_streams.value == 50
    http1 = http_options(built(POOL, 9080))
    assert http1 is not None and http1.explicit_http_config.HasField("http_protocol_options")


def test_tcp_idle_timeout_applies_when_http_has_none_and_defaults_stay_istios() -> None:
    c = built("connectionPool: {tcp: {idleTimeout: 7s}}", 9300)
    opts = http_options(c)
    assert opts is not None and opts.common_http_protocol_options.idle_timeout.seconds == 7
    c = built("outlierDetection: {}")
    t = c.circuit_breakers.thresholds[0]
    assert t.max_connections.value == t.max_requests.value == 4294967295
    assert c.connect_timeout.seconds == 10 and http_options(c) is None


def test_h2_upgrade_and_use_client_protocol() -> None:
    up = http_options(built("connectionPool: {http: {h2UpgradePolicy: UPGRADE}}", 9080))
    assert up is not None and up.explicit_http_config.HasField("http2_protocol_options")
    # The DR's UPGRADE applies even on a port istiod would not upgrade by itself, as in istiod.
    tcp = http_options(built("connectionPool: {http: {h2UpgradePolicy: UPGRADE}}", 9300))
    assert tcp is not None and tcp.explicit_http_config.HasField("http2_protocol_options")
    auto = http_options(built("connectionPool: {http: {h2UpgradePolicy: UPGRADE}}", 9400))
    assert auto is not None and auto.explicit_http_config.HasField("http2_protocol_options")
    assert not auto.HasField("use_downstream_protocol_config")
    assert http_options(built("connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE}}", 9080)) is None
    client = http_options(built("connectionPool: {http: {useClientProtocol: true}}", 9080))
    assert client is not None and client.HasField("use_downstream_protocol_config")


def test_retry_budget_sets_the_threshold_budget() -> None:
    t = built("retryBudget: {percent: 30}").circuit_breakers.thresholds[0]
    assert (t.retry_budget.budget_percent.value, t.retry_budget.min_retry_concurrency.value) == (30.0, 3)
    t = built("retryBudget: {minRetryConcurrency: 5}").circuit_breakers.thresholds[0]
    assert (t.retry_budget.budget_percent.value, t.retry_budget.min_retry_concurrency.value) == (0.2, 5)  # istiod


# ------------------------------------------------------------------ outlier detection
def test_outlier_detection_maps_fields_and_always_sets_the_panic_threshold() -> None:
    c = built("""
outlierDetection:
  consecutive5xxErrors: 3
  consecutiveGatewayErrors: 0
  interval: 2s
  baseEjectionTime: 45s
  maxEjectionPercent: 50
  minHealthPercent: 20
  splitExternalLocalOriginErrors: true
  consecutiveLocalOriginFailures: 4
""")
    o = c.outlier_detection
    assert o.enforcing_success_rate.value == 0 and o.HasField("enforcing_success_rate")
    assert (o.consecutive_5xx.value, o.enforcing_consecutive_5xx.value) == (3, 100)
    assert o.HasField("consecutive_gateway_failure") and o.consecutive_gateway_failure.value == 0
    assert o.HasField("enforcing_consecutive_gateway_failure") and o.enforcing_consecutive_gateway_failure.value == 0
    assert (o.interval.seconds, o.base_ejection_time.seconds, o.max_ejection_percent.value) == (2, 45, 50)
    assert o.split_external_local_origin_errors
    assert (o.consecutive_local_origin_failure.value, o.enforcing_consecutive_local_origin_failure.value) == (4, 100)
    assert o.HasField("enforcing_local_origin_success_rate")
    assert c.common_lb_config.healthy_panic_threshold.value == 20.0

    empty = built("outlierDetection: {}")
    assert empty.HasField("outlier_detection") and not empty.outlier_detection.HasField("consecutive_5xx")
    assert empty.common_lb_config.HasField("healthy_panic_threshold")
    assert empty.common_lb_config.healthy_panic_threshold.value == 0.0  # Envoy's panic mode off
    assert not built("loadBalancer: {simple: RANDOM}").HasField("outlier_detection")


# ------------------------------------------------------------------ TLS
def test_simple_tls_with_ca_file_sans_and_no_sni_sets_auto_sni_only() -> None:
    c = built("tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem, subjectAltNames: [r.example, spiffe://x/y]}")
    ctx = tls_context(c)
    assert ctx is not None and ctx.sni == ""
    common = ctx.common_tls_context
    assert (common.tls_params.tls_minimum_protocol_version, common.tls_params.tls_maximum_protocol_version) == (
        common_pb2.TlsParameters.TLSv1_2, common_pb2.TlsParameters.TLSv1_3)
    assert common.validation_context.trusted_ca.filename == "/etc/certs/ca.pem"
    assert [(m.san_type, m.matcher.exact) for m in common.validation_context.match_typed_subject_alt_names] == [
        (SAN.DNS, "r.example"), (SAN.URI, "r.example"), (SAN.DNS, "spiffe://x/y"), (SAN.URI, "spiffe://x/y")]
    assert not common.tls_certificates and not common.alpn_protocols
    opts = http_options(c)
    assert opts is not None
    assert opts.upstream_http_protocol_options.auto_sni and not opts.upstream_http_protocol_options.auto_san_validation


def test_simple_tls_defaults_to_system_roots_and_auto_san_validation() -> None:
    c = built("tls: {mode: SIMPLE}", 9300)
    ctx = tls_context(c)
    assert ctx is not None and ctx.common_tls_context.validation_context.HasField("system_root_certs")
    assert not ctx.common_tls_context.validation_context.HasField("trusted_ca")
    opts = http_options(c)
    assert opts is not None and opts.explicit_http_config.HasField("http_protocol_options")
    assert opts.upstream_http_protocol_options.auto_sni and opts.upstream_http_protocol_options.auto_san_validation


def test_sni_crl_skip_verify_and_h2_alpn() -> None:
    c = built("tls: {mode: SIMPLE, sni: reviews.example, caCertificates: /ca.pem, caCrl: /crl.pem}", 9090)
    ctx = tls_context(c)
    assert ctx is not None and ctx.sni == "reviews.example"
    assert ctx.common_tls_context.validation_context.crl.filename == "/crl.pem"
    assert list(ctx.common_tls_context.alpn_protocols) == ["h2"]
    opts = http_options(c)
    assert opts is not None and not opts.HasField("upstream_http_protocol_options")
    skip = tls_context(built("tls: {mode: SIMPLE, insecureSkipVerify: true}"))
    assert skip is not None and skip.common_tls_context.HasField("validation_context")
    assert skip.common_tls_context.validation_context.ByteSize() == 0
    opts = http_options(built("tls: {mode: SIMPLE, insecureSkipVerify: true}"))
    assert opts is not None and not opts.upstream_http_protocol_options.auto_san_validation


def test_mutual_tls_adds_the_client_certificate_files() -> None:
    ctx = tls_context(built("tls: {mode: MUTUAL, clientCertificate: /c/cert.pem, privateKey: /c/key.pem, "
                            "caCertificates: /c/ca.pem}"))
    assert ctx is not None
    (cert,) = ctx.common_tls_context.tls_certificates
    assert (cert.certificate_chain.filename, cert.private_key.filename) == ("/c/cert.pem", "/c/key.pem")


def test_disable_istio_mutual_and_credential_name_keep_plaintext() -> None:
    for policy in ("tls: {mode: DISABLE}", "tls: {mode: ISTIO_MUTUAL}", "tls: {mode: SIMPLE, credentialName: s}",
                   "tls: {mode: MUTUAL, credentialName: s}"):
        c = built(policy)
        assert not c.HasField("transport_socket") and not c.transport_socket_matches, policy
        assert http_options(c) is None, policy  # no auto_sni either: nothing half-configured
    # ISTIO_MUTUAL keeps the rest of the rule (mesh-wide "mTLS + subsets" rules are common).
    c = built("tls: {mode: ISTIO_MUTUAL}\nconnectionPool: {tcp: {maxConnections: 9}}")
    assert c.circuit_breakers.thresholds[0].max_connections.value == 9


def test_proxy_protocol_wraps_the_tls_or_raw_socket() -> None:
    for policy, inner in (("proxyProtocol: {version: V2}", "envoy.transport_sockets.raw_buffer"),
                          ("proxyProtocol: {version: V1}\ntls: {mode: SIMPLE}", "envoy.transport_sockets.tls")):
        c = built(policy, 9300)
        assert c.transport_socket.name == "envoy.transport_sockets.upstream_proxy_protocol"
        wrapper = upstream_proxy_protocol_pb2.ProxyProtocolUpstreamTransport()
        c.transport_socket.typed_config.Unpack(wrapper)
        assert wrapper.transport_socket.name == inner
        assert wrapper.config.version == (1 if "V2" in policy else 0)


# ------------------------------------------------------------------ precedence
PRECEDENCE = """
host: reviews
trafficPolicy:
  connectionPool: {tcp: {maxConnections: 1}}
  outlierDetection: {consecutive5xxErrors: 7}
  portLevelSettings:
  - port: {number: 9090}
    connectionPool: {tcp: {maxConnections: 2}}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 3}}
    portLevelSettings:
    - port: {number: 9300}
      connectionPool: {tcp: {maxConnections: 4}}
- name: v2
  labels: {version: v2}
"""


def test_subset_port_level_beats_subset_beats_port_level_beats_rule() -> None:
    s = snap(view_of(BASE, dr(PRECEDENCE)))

    def limit(port: int, subset: str = "") -> int:
        return cluster(s, f"outbound|{port}|{subset}|{REVIEWS}").circuit_breakers.thresholds[0].max_connections.value

    assert [limit(9080), limit(9090), limit(9300)] == [1, 2, 1]
    assert [limit(9080, "v1"), limit(9090, "v1"), limit(9300, "v1")] == [3, 3, 4]
    assert [limit(9080, "v2"), limit(9090, "v2")] == [1, 2]
    # A port-level entry replaces the blocks wholesale: no outlier detection on 9090.
    assert cluster(s, f"outbound|9080||{REVIEWS}").HasField("outlier_detection")
    assert not cluster(s, f"outbound|9090||{REVIEWS}").HasField("outlier_detection")
    # The subset's port-level entry on 9300 drops the outlier detection it would inherit.
    assert cluster(s, f"outbound|9080|v1|{REVIEWS}").HasField("outlier_detection")
    assert not cluster(s, f"outbound|9300|v1|{REVIEWS}").HasField("outlier_detection")


def test_a_workload_selector_rule_applies_only_to_the_proxies_it_selects() -> None:
    selected = dr("host: reviews\nworkloadSelector: {matchLabels: {app: canary}}\n"
                  "trafficPolicy: {connectionPool: {tcp: {maxConnections: 5}}}", name="sel")
    view = view_of(BASE, selected, pod("canary-1", ip="10.244.0.50", labels="{app: canary}"),
                   pod("client-1", ip="10.244.0.100", labels="{app: client}"))
    memo = Memo()
    canary = cluster(snap(view, proxy("canary-1", ip="10.244.0.50"), memo), f"outbound|9080||{REVIEWS}")
    client = cluster(snap(view, proxy("client-1", ip="10.244.0.100"), memo), f"outbound|9080||{REVIEWS}")
    assert canary.circuit_breakers.thresholds[0].max_connections.value == 5
    assert client.circuit_breakers.thresholds[0].max_connections.value == 4294967295


def test_a_rule_change_rebuilds_only_its_hosts_clusters() -> None:
    other = svc("ratings", created=1) + pod("ratings-1", ip="10.244.0.7", labels="{app: ratings}")
    ratings_rule = dr("host: ratings\ntrafficPolicy: {loadBalancer: {simple: RANDOM}}", name="ratings")
    memo = Memo()
    first = snap(view_of(BASE, other, ratings_rule, dr("host: reviews\ntrafficPolicy: {tls: {mode: SIMPLE}}")),
                 memo=memo)
    memo.rotate()
    second = snap(view_of(BASE, other, ratings_rule,
                          dr("host: reviews\ntrafficPolicy: {tls: {mode: DISABLE}}"), generation=2), memo=memo)
    before, after = first.get(TypeUrl.CLUSTER), second.get(TypeUrl.CLUSTER)
    changed = sorted(n for n in after if before.get(n) is not after[n])
    assert changed == sorted(f"outbound|{p}||{REVIEWS}" for p in (9080, 9090, 9300, 9400))


# ------------------------------------------------------------------ seed 002, client side
SEED = Path(__file__).parents[2] / "fixtures" / "manifests" / "seed-inbound-tls" / "destinationrule-ratings-tls.yaml"
RATINGS = "ratings.prod-us1.svc.cluster.local"


def test_seed_ratings_rule_originates_tls_on_9443_only() -> None:
    view = view_of(svc("ratings", "prod-us1", ports="[{name: http, port: 9080}, {name: https-ratings, port: 9443}]"),
                   pod("ratings-1", "prod-us1", ip="10.244.3.1", labels="{app: ratings}"), SEED.read_text())
    for client in (proxy("client-1", "prod-us1", "10.244.3.100"), proxy("client-2", "default", "10.244.0.100")):
        s = snap(view, client)
        plain = cluster(s, f"outbound|9080||{RATINGS}")
        assert not plain.HasField("transport_socket") and http_options(plain) is None
        secure = cluster(s, f"outbound|9443||{RATINGS}")
        ctx = tls_context(secure)
        assert ctx is not None and ctx.sni == ""
        assert ctx.common_tls_context.validation_context.trusted_ca.filename == "/etc/certs/ca-certs.pem"
        assert not ctx.common_tls_context.validation_context.match_typed_subject_alt_names
        opts = http_options(secure)
        assert opts is not None
        assert opts.upstream_http_protocol_options.auto_sni and opts.upstream_http_protocol_options.auto_san_validation
        assert opts.explicit_http_config.HasField("http_protocol_options")
        assert secure.type == Cluster.EDS and secure.lb_policy == Cluster.LEAST_REQUEST
        assert istio_md(secure)["config"] == (
            "/apis/networking.istio.io/v1/namespaces/prod-us1/destination-rule/ratings-istio-mtls-exception")


def test_service_entry_dns_cluster_with_tls() -> None:
    se = "hosts: [api.example.com]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS"
    s = snap(view_of(service_entry(se, name="api"),
                     dr("host: api.example.com\ntrafficPolicy: {tls: {mode: SIMPLE, sni: api.example.com}}",
                        name="api")))
    c = cluster(s, "outbound|443||api.example.com")
    ctx = tls_context(c)
    assert c.type == Cluster.STRICT_DNS and ctx is not None and ctx.sni == "api.example.com"


def test_a_service_entrys_subject_alt_names_are_checked_when_the_rule_names_none() -> None:
    se = ("hosts: [api.example.com]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS\n"
          "subjectAltNames: [api.example.com]")
    own = snap(view_of(service_entry(se, name="api"),
                       dr("host: api.example.com\ntrafficPolicy: {tls: {mode: SIMPLE}}", name="api")))
    ctx = tls_context(cluster(own, "outbound|443||api.example.com"))
    assert ctx is not None
    assert [(m.san_type, m.matcher.exact) for m in ctx.common_tls_context.validation_context
            .match_typed_subject_alt_names] == [(SAN.DNS, "api.example.com"), (SAN.URI, "api.example.com")]
    opts = http_options(cluster(own, "outbound|443||api.example.com"))
    assert opts is not None and opts.upstream_http_protocol_options.auto_san_validation  # as istiod
    named = snap(view_of(service_entry(se, name="api"), dr(
        "host: api.example.com\ntrafficPolicy: {tls: {mode: SIMPLE, subjectAltNames: [x.example]}}", name="api")))
    ctx = tls_context(cluster(named, "outbound|443||api.example.com"))
    assert ctx is not None
    assert {m.matcher.exact for m in ctx.common_tls_context.validation_context.match_typed_subject_alt_names} == {
        "x.example"}
