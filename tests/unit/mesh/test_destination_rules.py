"""Which DestinationRule applies (istiod's push_context.go setDestinationRules / destinationRule,
destination_rule.go mergeDestinationRule, sidecar.go SidecarScope.DestinationRule)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import IstioDestinationRule
from xds_server.config.mesh import MeshConfig
from xds_server.config.parse import parse
from xds_server.mesh.destination_rules import (
    destination_rule_for,
    destination_rules_for,
    index_destination_rules,
    most_specific_host,
    traffic_policy_for,
)

MESH = MeshConfig(root_namespace="istio-system")
REVIEWS = "reviews.prod.svc.cluster.local"
SEED = Path(__file__).parents[2] / "fixtures" / "manifests" / "seed-inbound-tls" / "destinationrule-ratings-tls.yaml"


def dr(name: str, ns: str, host: str = REVIEWS, age: int = 0, **spec: Any) -> IstioDestinationRule:
    doc = {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
           "metadata": {"name": name, "namespace": ns, "creationTimestamp": f"2026-01-01T00:{age:02d}:00Z"},
           "spec": {"host": host, **spec}}
    obj, problems = parse(doc)
    assert isinstance(obj, IstioDestinationRule), problems
    return obj


def subsets(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "labels": {"version": n}} for n in names]


def source(rule: Any) -> list[str]:
    return [str(r) for r in rule.sources] if rule is not None else []


def lookup(objects: list[IstioDestinationRule], proxy_ns: str, host: str = REVIEWS, service_ns: str = "prod",
           labels: dict[str, str] | None = None, mesh: MeshConfig = MESH) -> list[str]:
    index = index_destination_rules(objects, mesh)
    return source(destination_rule_for(index, proxy_ns, labels or {}, host, service_ns))


# ---------------------------------------------------------------- lookup order
def test_proxy_namespace_then_service_namespace_then_root_namespace() -> None:
    in_client = dr("client-dr", "client")
    in_service = dr("service-dr", "prod")
    in_root = dr("root-dr", "istio-system")
    assert lookup([in_client, in_service, in_root], "client") == ["DestinationRule/client/client-dr"]
    assert lookup([in_service, in_root], "client") == ["DestinationRule/prod/service-dr"]
    assert lookup([in_root], "client") == ["DestinationRule/istio-system/root-dr"]
    assert lookup([in_client, in_service, in_root], "elsewhere") == ["DestinationRule/prod/service-dr"]


def test_short_hosts_resolve_against_the_destination_rule_namespace() -> None:
    assert lookup([dr("short", "prod", host="reviews")], "client") == ["DestinationRule/prod/short"]
    assert lookup([dr("short", "client", host="reviews")], "client") == []  # reviews.client..., not prod's


def test_export_to_limits_the_service_and_root_steps() -> None:
    private = dr("private", "prod", exportTo=["."])
    to_other = dr("to-other", "prod", exportTo=["other"])
    assert lookup([private], "client") == []
    assert lookup([private], "prod") == ["DestinationRule/prod/private"]
    assert lookup([to_other], "client") == []
    assert lookup([to_other], "other") == ["DestinationRule/prod/to-other"]
    assert lookup([to_other], "prod") == []  # exported elsewhere only: not even its own namespace
    root_private = dr("root-private", "istio-system", exportTo=["."])
    assert lookup([root_private], "client") == []
    assert lookup([root_private], "istio-system") == ["DestinationRule/istio-system/root-private"]


def test_the_mesh_default_export_to_makes_rules_without_export_to_private() -> None:
    private_mesh = MeshConfig(root_namespace="istio-system", default_destination_rule_export_to=(".",))
    rule = dr("default", "prod")
    assert lookup([rule], "client", mesh=private_mesh) == []
    assert lookup([rule], "prod", mesh=private_mesh) == ["DestinationRule/prod/default"]
    assert lookup([rule], "client") == ["DestinationRule/prod/default"]


def test_the_most_specific_host_is_chosen_before_the_export_to_filter() -> None:
    # istio getExportedDestinationRuleFromNamespace: the most specific host is chosen first, then
    # filtered by exportTo; a host found but not exported yields nothing from that step (the
    # visible wildcard rule of the same namespace is not consulted), and the root step follows.
    specific = dr("specific", "prod", exportTo=["other"])
    wildcard = dr("wildcard", "prod", host="*.prod.svc.cluster.local")
    root = dr("root", "istio-system")
    assert lookup([specific, wildcard, root], "client") == ["DestinationRule/istio-system/root"]


def test_the_most_specific_host_wins_within_a_step() -> None:
    assert most_specific_host("a.b.example.com", ["*.example.com", "*.b.example.com", "*"]) == "*.b.example.com"
    assert most_specific_host("a.example.com", ["*.example.com", "a.example.com"]) == "a.example.com"
    assert most_specific_host("a.example.org", ["*.example.com"]) is None
    rules = [dr("wild", "prod", host="*.svc.cluster.local"), dr("closer", "prod", host="*.prod.svc.cluster.local")]
    assert lookup(rules, "prod") == ["DestinationRule/prod/closer"]


# ---------------------------------------------------------------- workloadSelector
def test_a_selector_rule_applies_to_the_workloads_it_selects_in_its_namespace() -> None:
    general = dr("general", "client", age=1)
    selected = dr("for-web", "client", age=2, workloadSelector={"matchLabels": {"app": "web"}})
    assert lookup([general, selected], "client", labels={"app": "web", "v": "1"}) == ["DestinationRule/client/for-web"]
    assert lookup([general, selected], "client", labels={"app": "db"}) == ["DestinationRule/client/general"]
    # a selector rule is private to its namespace, whatever exportTo said
    other_ns = dr("for-web", "prod", workloadSelector={"matchLabels": {"app": "web"}})
    assert lookup([other_ns], "client", labels={"app": "web"}) == []


def test_a_selector_rule_that_does_not_select_the_proxy_still_ends_the_namespace_step() -> None:
    selected = dr("for-web", "client", workloadSelector={"matchLabels": {"app": "web"}})
    in_service = dr("service-dr", "prod")
    assert lookup([selected, in_service], "client", labels={"app": "db"}) == []


# ---------------------------------------------------------------- merging
def test_rules_for_one_host_merge_subsets_and_keep_the_oldest_policy() -> None:
    old = dr("old", "prod", age=1, subsets=subsets("v1"), trafficPolicy={"loadBalancer": {"simple": "RANDOM"}})
    new = dr("new", "prod", age=2, subsets=subsets("v1", "v2"),
             trafficPolicy={"loadBalancer": {"simple": "ROUND_ROBIN"}})
    index = index_destination_rules([new, old], MESH)
    (merged,) = destination_rules_for(index, "client", REVIEWS, "prod")
    assert source(merged) == ["DestinationRule/prod/old", "DestinationRule/prod/new"]
    assert [s.name for s in merged.spec.subsets] == ["v1", "v2"]
    assert merged.spec.subsets[0].labels["version"] == "v1"
    assert merged.duplicate_subsets == ("v1",)
    assert merged.spec.traffic_policy.load_balancer.simple == merged.spec.traffic_policy.load_balancer.RANDOM
    policy_later = dr("no-policy", "prod", age=0, subsets=subsets("v3"))
    (merged,) = destination_rules_for(index_destination_rules([policy_later, new], MESH), "client", REVIEWS, "prod")
    assert merged.spec.traffic_policy.load_balancer.simple == merged.spec.traffic_policy.load_balancer.ROUND_ROBIN


def test_different_export_to_stays_separate_and_a_superset_merges_and_stays() -> None:
    narrow = dr("narrow", "prod", age=1, subsets=subsets("v1"), exportTo=["a"])
    wide = dr("wide", "prod", age=2, subsets=subsets("v2"), exportTo=["a", "b"])
    other = dr("other", "prod", age=3, subsets=subsets("v3"), exportTo=["c"])
    index = index_destination_rules([narrow, wide, other], MESH)
    in_a = destination_rules_for(index, "a", REVIEWS, "prod")
    assert [source(r) for r in in_a] == [["DestinationRule/prod/narrow", "DestinationRule/prod/wide"],
                                         ["DestinationRule/prod/wide"]]
    in_b = destination_rules_for(index, "b", REVIEWS, "prod")
    assert [source(r) for r in in_b] == [["DestinationRule/prod/wide"]]
    assert [source(r) for r in destination_rules_for(index, "c", REVIEWS, "prod")] == [["DestinationRule/prod/other"]]


def test_wildcard_and_exact_hosts_are_not_merged() -> None:
    exact = dr("exact", "prod", subsets=subsets("v1"))
    wildcard = dr("wildcard", "prod", host="*.prod.svc.cluster.local", subsets=subsets("v2"))
    index = index_destination_rules([exact, wildcard], MESH)
    (found,) = destination_rules_for(index, "client", REVIEWS, "prod")
    assert source(found) == ["DestinationRule/prod/exact"]


def test_the_seed_ratings_rule_is_found_from_its_namespace_and_from_elsewhere() -> None:
    (doc,) = yaml.safe_load_all(SEED.read_text())
    obj, _ = parse(doc)
    assert isinstance(obj, IstioDestinationRule)
    host = "ratings.prod-us1.svc.cluster.local"
    assert lookup([obj], "prod-us1", host, "prod-us1") == ["DestinationRule/prod-us1/ratings-istio-mtls-exception"]
    assert lookup([obj], "frontend", host, "prod-us1") == ["DestinationRule/prod-us1/ratings-istio-mtls-exception"]


# ------------------------------------------------------------ policy precedence (istio MergeSubsetTrafficPolicy)
def _policy_rule() -> Any:
    rule = dr("pol", "prod", trafficPolicy={
        "loadBalancer": {"simple": "ROUND_ROBIN"},
        "connectionPool": {"tcp": {"maxConnections": 10}},
        "tunnel": {"protocol": "CONNECT", "targetHost": "t.example", "targetPort": 8080},
        "portLevelSettings": [{"port": {"number": 9080}, "outlierDetection": {"consecutive5xxErrors": 3}}],
    }, subsets=[
        {"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}},
        {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {
            "portLevelSettings": [{"port": {"number": 9080}, "tls": {"mode": "SIMPLE"}}]}},
        {"name": "v3", "labels": {"version": "v3"}},
    ])
    return destination_rule_for(index_destination_rules([rule], MESH), "prod", {}, REVIEWS, "prod")


def test_policy_top_level_and_port_level_replaces_wholesale() -> None:
    rule = _policy_rule()
    top = traffic_policy_for(rule, 8080)
    assert top is not None and top.load_balancer.simple == pb.LoadBalancerSettings.ROUND_ROBIN
    assert top.connection_pool.tcp.max_connections == 10 and top.HasField("tunnel")
    port = traffic_policy_for(rule, 9080)
    # The port-level entry replaces the four blocks: LB and pool fall back to defaults, tunnel dropped.
    assert port is not None and port.outlier_detection.consecutive_5xx_errors == 3
    assert not port.HasField("load_balancer") and not port.HasField("connection_pool")
    assert not port.HasField("tunnel")
    assert traffic_policy_for(None, 9080) is None


def test_policy_subset_overrides_blocks_it_sets() -> None:
    rule = _policy_rule()
    v1 = traffic_policy_for(rule, 8080, "v1")
    assert v1 is not None and v1.load_balancer.simple == pb.LoadBalancerSettings.RANDOM
    assert v1.connection_pool.tcp.max_connections == 10  # kept from the DR
    v2 = traffic_policy_for(rule, 9080, "v2")
    # The subset's port-level entry overrides all four blocks: the DR's port-level outlier is gone.
    assert v2 is not None and v2.tls.mode == pb.ClientTLSSettings.SIMPLE
    assert not v2.HasField("outlier_detection")
    v2_other_port = traffic_policy_for(rule, 8080, "v2")
    assert v2_other_port is not None and v2_other_port.load_balancer.simple == pb.LoadBalancerSettings.ROUND_ROBIN
    v3 = traffic_policy_for(rule, 8080, "v3")
    assert v3 is not None and v3.connection_pool.tcp.max_connections == 10  # no policy of its own
