"""A DestinationRule's connectionPool applies to the inbound clusters of the service's own pods
(istiod's `cluster_builder.go` buildInboundCluster), below the Sidecar's pools, and a rule change
reaches a proxy whose own side is otherwise unchanged."""

from __future__ import annotations

from tests.unit.translate.dr_support import dr, istio_md
from tests.unit.translate.outbound_support import cluster, pod, proxy, sidecar, snap, svc, view_of
from xds_server.resources import TypeUrl
from xds_server.store import Store
from xds_server.translate import Memo, generate
from xds_server.translate.generator import Previous

SERVER = svc("reviews", ports="[{name: http, port: 9080, targetPort: 8080}, {name: tcp-x, port: 9300}]") + pod(
    "reviews-1", ip="10.244.0.1", labels="{app: reviews}")
RULE = dr("""
host: reviews
trafficPolicy:
  connectionPool: {tcp: {maxConnections: 11}, http: {http1MaxPendingRequests: 3}}
  outlierDetection: {consecutive5xxErrors: 2}
  portLevelSettings:
  - port: {number: 9300}
    connectionPool: {tcp: {maxConnections: 22}}
""")
ME = proxy("reviews-1", ip="10.244.0.1")


def limits(s: object, port: int) -> tuple[int, int]:
    t = cluster(s, f"inbound|{port}||").circuit_breakers.thresholds[0]  # type: ignore[arg-type]
    return t.max_connections.value, t.max_pending_requests.value


def test_the_rules_pool_applies_to_inbound_clusters_by_service_port() -> None:
    s = snap(view_of(SERVER, RULE), ME)
    assert limits(s, 8080) == (11, 3)  # service port 9080 -> target port 8080
    assert limits(s, 9300)[0] == 22  # the port-level entry for the service port
    c = cluster(s, "inbound|8080||")
    assert not c.HasField("outlier_detection")  # only the pool applies inbound
    assert istio_md(c)["config"] == "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"


def test_the_sidecar_pool_replaces_the_rules_and_selector_rules_never_apply_inbound() -> None:
    own = sidecar("inboundConnectionPool: {tcp: {maxConnections: 5}}")
    s = snap(view_of(SERVER, RULE, own), ME)
    assert limits(s, 8080) == (5, 4294967295)  # the whole block replaced, no field merge
    selected = dr("host: reviews\nworkloadSelector: {matchLabels: {app: reviews}}\n"
                  "trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}", name="sel")
    s = snap(view_of(SERVER, selected), ME)
    assert limits(s, 8080) == (4294967295, 4294967295)
    assert "config" not in istio_md(cluster(s, "inbound|8080||"))


def test_a_rule_change_rebuilds_the_inbound_pool_of_an_unchanged_proxy() -> None:
    from tests.unit.translate.outbound_support import objects

    store = Store()
    store.replace("server", objects(SERVER))
    memo = Memo()
    first = generate(store.view(), ME, memo)
    assert limits(first.snapshot, 8080) == (4294967295, 4294967295)
    store.replace("rule", objects(RULE))
    memo.rotate()
    view = store.view()
    # A DestinationRule is no part of a proxy's own side (its Pod, its namespace's Services and
    # Sidecars): the push stage carries the own parts over, and the rule must still reach the pools.
    second = generate(view, ME, memo, Previous(first, first.generation, own_side_changed=False))
    assert second.parts is not None and first.parts is not None
    assert second.parts.workload is first.parts.workload  # carried over, not looked up again
    assert limits(second.snapshot, 8080) == (11, 3)
    assert second.snapshot.get(TypeUrl.CLUSTER)["inbound|8080||"] is not first.snapshot.get(
        TypeUrl.CLUSTER)["inbound|8080||"]
    fresh = generate(view, ME, Memo()).snapshot
    assert {n: b.version for n, b in second.snapshot.get(TypeUrl.CLUSTER).items()} == {
        n: b.version for n, b in fresh.get(TypeUrl.CLUSTER).items()}
