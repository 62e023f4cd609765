"""DestinationRule subsets in CDS and EDS: a cluster per subset on every port, taking the parent's
kind; EDS assignments of the endpoints whose labels include the subset's; DNS subsets inline and
dropped when empty; PASSTHROUGH; metadata; sharing across proxies and Pod changes."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2

from tests.unit.translate.dr_support import REVIEWS, dr, istio_md
from tests.unit.translate.outbound_support import (
    assignment,
    cluster,
    endpoint_addresses,
    names,
    outbound_clusters,
    pod,
    proxy,
    service_entry,
    snap,
    svc,
    view_of,
)
from xds_server.config.parse import parse
from xds_server.push.dependencies import ProxyDependencies
from xds_server.resources import PUSH_ORDER, TypeUrl
from xds_server.store import Store
from xds_server.translate import Memo, generate, proxy_from_node

Cluster = cluster_pb2.Cluster
SUBSETS = """
host: reviews
subsets:
- {name: v1, labels: {version: v1}}
- {name: v2, labels: {version: v2}}
- {name: v9, labels: {version: v9}}
"""
TWO_PORTS = "[{name: http, port: 9080}, {name: grpc-x, port: 9090, targetPort: 7070}]"
PODS = (pod("reviews-1", ip="10.244.0.1", labels="{app: reviews, version: v1}")
        + pod("reviews-2", ip="10.244.0.2", labels="{app: reviews, version: v2}")
        + pod("reviews-3", ip="10.244.0.3", labels="{app: reviews, version: v2}"))


def name(port: int, subset: str = "", host: str = REVIEWS) -> str:
    return f"outbound|{port}|{subset}|{host}"


def test_every_subset_gets_a_cluster_on_every_port_with_its_own_filtered_assignment() -> None:
    s = snap(view_of(svc("reviews", ports=TWO_PORTS), PODS, dr(SUBSETS)))
    assert outbound_clusters(s) == sorted(name(p, sub) for p in (9080, 9090) for sub in ("", "v1", "v2", "v9"))
    for port, target in ((9080, 9080), (9090, 7070)):
        assert endpoint_addresses(assignment(s, name(port))) == [f"10.244.0.{i}:{target}" for i in (1, 2, 3)]
        assert endpoint_addresses(assignment(s, name(port, "v1"))) == [f"10.244.0.1:{target}"]
        assert endpoint_addresses(assignment(s, name(port, "v2"))) == [f"10.244.0.{i}:{target}" for i in (2, 3)]
        # No pod has version v9: the cluster exists with an empty assignment (503 UH, as istiod).
        empty = assignment(s, name(port, "v9"))
        assert empty.cluster_name == name(port, "v9") and not empty.endpoints
        c = cluster(s, name(port, "v1"))
        assert c.type == Cluster.EDS and c.eds_cluster_config.service_name == name(port, "v1")
    assert not s.dangling()


def test_subset_clusters_carry_the_rule_and_subset_metadata_the_default_one_the_rule() -> None:
    s = snap(view_of(svc("reviews"), PODS, dr(SUBSETS, name="rev-rule")))
    config = "/apis/networking.istio.io/v1/namespaces/default/destination-rule/rev-rule"
    md = istio_md(cluster(s, name(9080, "v2")))
    assert md["config"] == config and md["subset"] == "v2"
    assert md["services"] == [{"host": REVIEWS, "name": "reviews", "namespace": "default"}]
    default = istio_md(cluster(s, name(9080)))
    assert default["config"] == config and "subset" not in default
    # Without a rule the cluster is exactly as before: no config key.
    plain = snap(view_of(svc("reviews"), PODS))
    assert "config" not in istio_md(cluster(plain, name(9080)))


def test_a_subset_whose_label_contradicts_the_service_selector_is_empty() -> None:
    rule = dr("host: reviews\nsubsets: [{name: other, labels: {app: ratings}}, {name: all}]")
    s = snap(view_of(svc("reviews"), PODS, pod("ratings-1", ip="10.244.0.9", labels="{app: ratings}"), rule))
    assert not assignment(s, name(9080, "other")).endpoints
    # A subset without labels holds every endpoint of the port.
    assert endpoint_addresses(assignment(s, name(9080, "all"))) == endpoint_addresses(assignment(s, name(9080)))


DNS_SE = """
hosts: [api.example.com]
ports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
resolution: DNS
endpoints:
- {address: eu.api.example.com, labels: {region: eu}}
- {address: us.api.example.com, labels: {region: us}, ports: {http: 8080}}
"""


def test_dns_subsets_are_inline_filtered_and_not_emitted_when_empty() -> None:
    rule = dr("host: api.example.com\n"
              "subsets: [{name: eu, labels: {region: eu}}, {name: asia, labels: {region: asia}}]", name="api")
    s = snap(view_of(service_entry(DNS_SE, name="api"), rule))
    host = "api.example.com"
    assert outbound_clusters(s) == sorted(name(p, sub, host) for p in (80, 443) for sub in ("", "eu"))
    eu = cluster(s, name(80, "eu", host))
    assert eu.type == Cluster.STRICT_DNS
    assert endpoint_addresses(eu.load_assignment) == ["eu.api.example.com:80"]
    assert endpoint_addresses(cluster(s, name(80, "", host)).load_assignment) == [
        "eu.api.example.com:80", "us.api.example.com:8080"]
    assert not any(n.startswith("outbound|") for n in names(s, TypeUrl.ENDPOINT))  # DNS: nothing in EDS


def test_dns_service_entry_without_endpoints_has_no_labelled_endpoint() -> None:
    se = "hosts: [db.example.com]\nports: [{number: 5432, name: tcp, protocol: TCP}]\nresolution: DNS"
    rule = dr("host: db.example.com\nsubsets: [{name: any}, {name: primary, labels: {role: primary}}]", name="db")
    s = snap(view_of(service_entry(se, name="db"), rule))
    assert outbound_clusters(s) == ["outbound|5432|any|db.example.com", "outbound|5432||db.example.com"]


def test_headless_parent_and_passthrough_balancer_give_original_dst_subsets_without_eds() -> None:
    headless = snap(view_of(svc("reviews", headless=True), PODS, dr(SUBSETS)))
    c = cluster(headless, name(9080, "v1"))
    assert (c.type, c.lb_policy) == (Cluster.ORIGINAL_DST, Cluster.CLUSTER_PROVIDED)
    assert name(9080, "v1") not in headless.get(TypeUrl.ENDPOINT)

    rule = dr("""
host: reviews
subsets:
- {name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}
- {name: v2, labels: {version: v2}}
""")
    s = snap(view_of(svc("reviews"), PODS, rule))
    v1, v2 = cluster(s, name(9080, "v1")), cluster(s, name(9080, "v2"))
    assert (v1.type, v1.lb_policy) == (Cluster.ORIGINAL_DST, Cluster.CLUSTER_PROVIDED)
    assert not v1.HasField("eds_cluster_config") and not v1.HasField("load_assignment")
    assert name(9080, "v1") not in s.get(TypeUrl.ENDPOINT) and name(9080, "v2") in s.get(TypeUrl.ENDPOINT)
    assert v2.type == Cluster.EDS
    assert not s.dangling()


def test_service_entry_static_endpoints_and_workload_selector_filter_by_labels() -> None:
    static = """
hosts: [pay.internal]
addresses: [240.1.0.1]
ports: [{number: 80, name: http, protocol: HTTP}]
resolution: STATIC
endpoints: [{address: 10.9.0.1, labels: {track: stable}}, {address: 10.9.0.2, labels: {track: canary}}]
"""
    selected = """
hosts: [vm.internal]
addresses: [240.1.0.2]
ports: [{number: 80, name: http, protocol: HTTP}]
resolution: STATIC
workloadSelector: {labels: {app: vm}}
"""
    view = view_of(service_entry(static, name="pay"), service_entry(selected, name="vm", created=1),
                   pod("vm-1", ip="10.244.1.1", labels="{app: vm, track: stable}"),
                   pod("vm-2", ip="10.244.1.2", labels="{app: vm, track: canary}"),
                   dr("host: pay.internal\nsubsets: [{name: canary, labels: {track: canary}}]", name="pay"),
                   dr("host: vm.internal\nsubsets: [{name: stable, labels: {track: stable}}]", name="vm"))
    s = snap(view)
    assert endpoint_addresses(assignment(s, "outbound|80|canary|pay.internal")) == ["10.9.0.2:80"]
    assert endpoint_addresses(assignment(s, "outbound|80|stable|vm.internal")) == ["10.244.1.1:80"]


def test_proxies_share_subset_clusters_and_assignments() -> None:
    view = view_of(svc("reviews"), PODS, dr(SUBSETS),
                   pod("client-1", ip="10.244.0.100", labels="{app: c}"),
                   pod("client-2", "other", ip="10.244.0.101", labels="{app: c}"))
    memo = Memo()
    a = snap(view, proxy("client-1"), memo)
    b = snap(view, proxy("client-2", "other", "10.244.0.101"), memo)
    for n in (name(9080, "v1"), name(9080, "v2"), name(9080)):
        assert a.get(TypeUrl.CLUSTER)[n] is b.get(TypeUrl.CLUSTER)[n]
        assert a.get(TypeUrl.ENDPOINT)[n] is b.get(TypeUrl.ENDPOINT)[n]


def _doc(text: str) -> Any:
    obj, problems = parse(yaml.safe_load(text), "test")
    assert obj is not None, problems
    return obj


def _pod(name: str, version: str, ip: str, ready: bool = True) -> Any:
    return _doc(f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: reviews, version: {version}}}}}
spec: {{containers: [{{name: c}}]}}
status: {{podIP: {ip}, conditions: [{{type: Ready, status: "{'True' if ready else 'False'}"}}]}}
""")


def test_a_pod_change_rebuilds_only_the_subset_assignments_it_changes() -> None:
    store = Store()
    store.replace("svc", [_doc(svc("reviews"))])
    store.replace("dr", [_doc(dr(SUBSETS))])
    store.replace("pod/1", [_pod("reviews-1", "v1", "10.244.0.1")])
    store.replace("pod/2", [_pod("reviews-2", "v2", "10.244.0.2")])
    client = proxy_from_node("sidecar~10.244.0.100~client.default~default.svc.cluster.local", {})
    memo, last = Memo(), ProxyDependencies()
    first = generate(store.view(), client, memo)
    last.put(client.key, first)

    store.replace("pod/3", [_pod("reviews-3", "v2", "10.244.0.3")])  # a new v2 pod
    memo.rotate()
    view = store.view()
    second = generate(view, client, memo, last.previous(client.key, view))
    before, after = first.snapshot.get(TypeUrl.ENDPOINT), second.snapshot.get(TypeUrl.ENDPOINT)
    changed = sorted(n for n in after if before[n] is not after[n])
    assert changed == sorted([name(9080), name(9080, "v2")])  # v1 and v9 are the very same Builts
    assert endpoint_addresses(assignment(second.snapshot, name(9080, "v2"))) == ["10.244.0.2:9080", "10.244.0.3:9080"]
    assert second.snapshot.get(TypeUrl.CLUSTER) is first.snapshot.get(TypeUrl.CLUSTER)

    store.replace("pod/1", [_pod("reviews-1", "v2", "10.244.0.1")])  # relabelled: leaves v1 for v2
    memo.rotate()
    view = store.view()
    last.put(client.key, second)
    third = generate(view, client, memo, last.previous(client.key, view))
    assert not assignment(third.snapshot, name(9080, "v1")).endpoints
    assert endpoint_addresses(assignment(third.snapshot, name(9080, "v2"))) == [
        "10.244.0.1:9080", "10.244.0.2:9080", "10.244.0.3:9080"]


def _contents(snapshot: Any) -> dict[str, dict[str, str]]:
    return {t.value: {n: b.version for n, b in snapshot.get(t).items()} for t in PUSH_ORDER}


@pytest.mark.parametrize("seed", range(8))
def test_carried_over_subsets_equal_a_fresh_translation(seed: int) -> None:
    rng = random.Random(seed)
    store = Store()
    store.replace("svc", [_doc(svc("reviews", ports=TWO_PORTS))])
    store.replace("dr", [_doc(dr(SUBSETS))])
    client = proxy_from_node("sidecar~10.244.0.100~client.default~default.svc.cluster.local", {})
    memo, last = Memo(), ProxyDependencies()
    for n in range(40):
        i = rng.randrange(5)
        if rng.random() < 0.25:
            store.replace(f"pod/{i}", ())
        else:
            store.replace(f"pod/{i}", [_pod(f"reviews-{i}", rng.choice(["v1", "v2", "v3"]), f"10.244.0.{i + 1}",
                                            rng.random() < 0.8)])
        if rng.random() < 0.1:
            store.replace("dr", [_doc(dr(SUBSETS if rng.random() < 0.5 else
                                         "host: reviews\nsubsets: [{name: v3, labels: {version: v3}}]"))])
        memo.rotate()
        view = store.view()
        if rng.random() < 0.2:
            continue
        kept = generate(view, client, memo, last.previous(client.key, view))
        last.put(client.key, kept)
        assert _contents(kept.snapshot) == _contents(generate(view, client, Memo()).snapshot), (seed, n)
