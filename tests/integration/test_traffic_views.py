"""VirtualServices and DestinationRules in every view a user has: `xds-server validate`,
`xds-server render` (`--type rules`, and the Envoy config they produce), `/debug/configz`
(mesh-wide and `?proxy=`) and `/debug/config_dump` of a connected proxy (real App, real
translator, real gRPC).

The mesh is tests/fixtures/manifests/traffic-views: two VirtualServices for reviews (the older
routes, the newer is shadowed), two DestinationRules for reviews merged with a duplicate subset
dropped, a ratings VirtualService exported to its own namespace only, a ratings DestinationRule
asking for ISTIO_MUTUAL and an SDS credentialName (both kept plaintext, with a warning).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.admin_http import admin_json
from tests.support.ads_client import AdsClient, node
from xds_server.app import App
from xds_server.commands.render import load_objects
from xds_server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MESH = ROOT / "tests" / "fixtures" / "manifests" / "traffic-views"
REL = MESH.relative_to(ROOT)
REVIEWS = "reviews.shop.svc.cluster.local"
RATINGS = "ratings.shop.svc.cluster.local"
IST0109 = (f"VirtualService/shop/reviews-late: spec.hosts[0]: {REVIEWS} is also routed by VirtualService/shop/reviews "
           "(older); a sidecar uses one VirtualService per host, the first in istiod's order (private to its "
           "namespace, exported to it, public; then oldest), and ignores the other for that host (istioctl IST0109)")
DROPPED = (f"DestinationRule/shop/reviews-more: spec.subsets[0].name: subset v2 of host {REVIEWS} is already defined "
           "by DestinationRule/shop/reviews (older); the DestinationRules are merged and this subset is dropped")
PLAINTEXT = [
    f"outbound|9080||{RATINGS}: tls mode ISTIO_MUTUAL is ignored (xds-server has no mesh mTLS): plaintext",
    f"outbound|9443||{RATINGS}: tls credentialName is ignored (xds-server has no SDS): plaintext",
]
REVIEWS_RULE = {"host": REVIEWS, "namespace": "shop",
                "sources": ["DestinationRule/shop/reviews", "DestinationRule/shop/reviews-more"],
                "subsets": ["v1", "v2", "v3"], "duplicate_subsets": ["v2"], "export_to": [], "workload_selector": None}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xds_server", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def routes_of(view: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {r["host"]: (r["virtual_service"], r["shadowed"]) for e in view["egress"] for r in e["routes"]}


# ------------------------------------------------------------------ validate
def test_validate_prints_cross_object_and_tls_warnings_with_file_and_field() -> None:
    result = cli("validate", str(REL))
    assert result.returncode == 0, result.stderr  # warnings only
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"{REL}/destinationrules.yaml:1: warning: {DROPPED}",
        f"{REL}/destinationrules.yaml:2: warning: DestinationRule/shop/ratings: spec.trafficPolicy.tls.mode: "
        "ISTIO_MUTUAL needs Istio's mesh mTLS (its CA and agent), which does not exist in xds-server: connections "
        "for this policy stay plaintext"]
    assert lines[2].startswith(  # the rest of the sentence is validate_destination_rule.py's
        f"{REL}/destinationrules.yaml:2: warning: DestinationRule/shop/ratings: "
        "spec.trafficPolicy.portLevelSettings[0].tls.credentialName: credentials from secrets (SDS) are not "
        "available in xds-server")
    assert lines[3:] == [f"{REL}/virtualservices.yaml:1: warning: {IST0109}"]


def test_validate_does_not_warn_when_export_to_keeps_two_virtual_services_apart(tmp_path: Path) -> None:
    vs = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\n"
          "spec: {{hosts: [web.a.svc.cluster.local], exportTo: [{to}], http: [{{route: [{{destination: "
          "{{host: web.a.svc.cluster.local}}}}]}}]}}\n")
    (tmp_path / "vs.yaml").write_text(vs.format(name="x", ns="a", to="'.'") + "---\n" + vs.format(name="y", ns="b",
                                                                                                   to="'.'"))
    assert (cli("validate", str(tmp_path)).stdout) == ""
    (tmp_path / "vs.yaml").write_text(vs.format(name="x", ns="a", to="'.'") + "---\n" + vs.format(name="y", ns="b",
                                                                                                   to="a"))
    assert "VirtualService/b/y: spec.hosts[0]: web.a.svc.cluster.local is also routed by VirtualService/a/x" in (
        cli("validate", str(tmp_path)).stdout)


# ------------------------------------------------------------------ render
def test_render_rules_shows_the_routing_vs_the_shadowed_one_and_the_merged_dr() -> None:
    result = cli("render", "--config-dir", str(MESH), "--proxy", "client-1.shop", "--type", "rules")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert (view["proxy"], view["namespace"], view["sidecar"]) == ("client-1.shop", "shop", None)
    assert routes_of(view) == {
        RATINGS: ("VirtualService/shop/ratings", []),
        REVIEWS: ("VirtualService/shop/reviews", ["VirtualService/shop/reviews-late"]),
    }
    rules = {d["host"]: d for d in view["destination_rules"]}
    assert rules[REVIEWS]["destination_rule"] == REVIEWS_RULE and rules[REVIEWS]["warnings"] == []
    assert rules[RATINGS]["destination_rule"]["sources"] == ["DestinationRule/shop/ratings"]
    assert rules[RATINGS]["warnings"] == PLAINTEXT
    assert view["warnings"] == [f"warning: {IST0109}", f"warning: {DROPPED}"]


def test_render_rules_of_another_namespace_respects_export_to() -> None:
    view = json.loads(cli("render", "--config-dir", str(MESH), "--proxy", "client-1.other", "--type", "rules").stdout)
    assert routes_of(view) == {REVIEWS: ("VirtualService/shop/reviews", ["VirtualService/shop/reviews-late"])}
    # exportTo of the DestinationRules is the mesh default (everywhere): found at the service's namespace
    assert {d["host"]: d["destination_rule"]["sources"] for d in view["destination_rules"]} == {
        RATINGS: ["DestinationRule/shop/ratings"], REVIEWS: REVIEWS_RULE["sources"]}


def test_render_rejects_a_bad_proxy_name_cleanly() -> None:
    result = cli("render", "--config-dir", str(MESH), "--proxy", "nodot", "--type", "rules")
    assert (result.returncode, result.stdout) == (2, "")
    assert "expected POD.NAMESPACE" in result.stderr and "Traceback" not in result.stderr


def _route(dump: dict[str, Any], name: str) -> dict[str, Any]:
    (routes,) = [c for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")]
    found = [r["route_config"] for r in routes["dynamic_route_configs"] if r["route_config"]["name"] == name]
    assert found, [r["route_config"]["name"] for r in routes["dynamic_route_configs"]]
    return found[0]


def _vhost(route_config: dict[str, Any], name: str) -> dict[str, Any]:
    (vhost,) = [v for v in route_config["virtual_hosts"] if v["name"] == name]
    return vhost


def _clusters(dump: dict[str, Any]) -> list[str]:
    (clusters,) = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")]
    return [c["cluster"]["name"] for c in clusters["dynamic_active_clusters"]]


def assert_translated(dump: dict[str, Any], exported_ratings: bool) -> None:
    """The Envoy side of the same rules (istiod's BuildHTTPRoutesForVirtualService, buildSubsetCluster)."""
    reviews = _vhost(_route(dump, "9080"), f"{REVIEWS}:9080")
    (only,) = reviews["routes"]  # reviews-late (shadowed) adds nothing
    assert only["route"]["weighted_clusters"]["clusters"] == [
        {"name": f"outbound|9080|v1|{REVIEWS}", "weight": 75}, {"name": f"outbound|9080|v2|{REVIEWS}", "weight": 25}]
    names = _clusters(dump)
    assert {f"outbound|9080|{s}|{REVIEWS}" for s in ("", "v1", "v2", "v3")} <= set(names)
    ratings = _vhost(_route(dump, "9080"), f"{RATINGS}:9080")
    assert [r["route"].get("timeout") for r in ratings["routes"]] == (["2s"] if exported_ratings else ["0s"])


def test_render_gives_the_virtual_service_routes_and_the_subset_clusters() -> None:
    for proxy, sees_ratings_vs in (("client-1.shop", True), ("client-1.other", False)):
        result = cli("render", "--config-dir", str(MESH), "--proxy", proxy)
        assert result.returncode == 0, result.stderr
        assert_translated(json.loads(result.stdout), sees_ratings_vs)


# ------------------------------------------------------------------ the live views
@pytest.fixture
async def app() -> AsyncIterator[App]:
    a = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_host="127.0.0.1", admin_port=0, debounce_quiet=0.02,
                     drain_seconds=0), sources=[])
    a.store.replace(str(MESH), load_objects(str(MESH)))
    await a.start()
    yield a
    await a.stop(0)


async def test_configz_shows_the_rules_mesh_wide_and_for_one_proxy(app: App) -> None:
    port = app.admin_port
    body = await admin_json(port, "/debug/configz")
    assert body["counts"]["VirtualService"] == 3 and body["counts"]["DestinationRule"] == 3
    assert not any("translated" in o or "note" in o for o in body["objects"])
    traffic = body["traffic"]
    assert [(v["virtual_service"], v["hosts"], v["export_to"]) for v in traffic["virtual_services"]] == [
        ("VirtualService/shop/ratings", [RATINGS], ["shop"]),
        ("VirtualService/shop/reviews", [REVIEWS], ["*"]),
        ("VirtualService/shop/reviews-late", [REVIEWS], ["*"]),
    ]
    assert REVIEWS_RULE in traffic["destination_rules"]
    assert [(w["name"], w["severity"], w["origin"]) for w in traffic["warnings"]] == [
        ("reviews-late", "warning", str(MESH)), ("reviews-more", "warning", str(MESH))]
    assert [w["message"] for w in traffic["warnings"]] == [IST0109.split(": ", 1)[1], DROPPED.split(": ", 1)[1]]

    # a proxy not connected (yet): the view of an injected Envoy of that Pod
    offline = (await admin_json(port, "/debug/configz?proxy=client-1.shop"))["proxy_traffic"]
    assert offline["connected"] is False
    assert routes_of(offline)[REVIEWS] == ("VirtualService/shop/reviews", ["VirtualService/shop/reviews-late"])
    assert {d["host"]: d["warnings"] for d in offline["destination_rules"]}[RATINGS] == PLAINTEXT
    assert "POD.NAMESPACE" in (await admin_json(port, "/debug/configz?proxy=nodot", status=400))["error"]

    client = AdsClient(f"127.0.0.1:{app.xds_port}", delta=True)
    try:
        client.send(node=node("sidecar~10.0.6.9~client-1.other~other.svc.cluster.local", NAMESPACE="other"),
                    type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster")
        await client.recv()
        live = (await admin_json(port, "/debug/configz?proxy=client-1.other"))["proxy_traffic"]
        assert live["connected"] is True and live["namespace"] == "other"
        assert RATINGS not in routes_of(live)  # exportTo "." keeps the ratings VirtualService in shop
        dump = await admin_json(port, "/debug/config_dump?proxy=client-1.other")
        assert_translated(dump, exported_ratings=False)
    finally:
        await client.close()
