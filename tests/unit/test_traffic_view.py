"""admin/traffic.py on small meshes: the per-proxy view follows the model the translator uses
(wildcard hosts, delegates, workloadSelector DestinationRules, Sidecar imports), and the
mesh-wide warnings only fire when two objects really collide."""

from __future__ import annotations

from typing import Any

import yaml

from xds_server.admin import traffic
from xds_server.config import ConfigObject
from xds_server.config.parse import parse
from xds_server.mesh.rule_warnings import rule_warnings
from xds_server.resources import TypeUrl
from xds_server.store.view import StoreView
from xds_server.translate import Memo, generate, proxy_from_node

BASE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec: {clusterIP: 10.96.0.2, selector: {app: db}, ports: [{name: tcp, port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client-1, namespace: shop, labels: {app: client}}
status: {podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other-1, namespace: shop, labels: {app: other}}
status: {podIP: 10.0.0.2, conditions: [{type: Ready, status: "True"}]}
"""


def objects(extra: str) -> list[ConfigObject]:
    out = []
    for doc in yaml.safe_load_all(BASE + "---\n" + extra):
        obj, problems = parse(doc, "test")
        assert obj is not None, problems
        out.append(obj)
    return out


def view_for(extra: str, pod: str = "client-1", namespace: str = "shop") -> dict[str, Any]:
    objs = objects(extra)
    ip = {"client-1": "10.0.0.1", "other-1": "10.0.0.2"}.get(pod, "10.9.9.9")
    proxy = proxy_from_node(f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local", {"NAMESPACE": namespace})
    return traffic.proxy_rules(StoreView.build(1, objs), proxy)


def routes(view: dict[str, Any]) -> dict[str, tuple[str, str, list[str]]]:
    return {r["host"]: (r["virtual_service"], r["matched_host"], r["shadowed"]) for e in view["egress"]
            for r in e["routes"]}


def vs(name: str, hosts: str, namespace: str = "shop", extra: str = "", created: str = "2024-01-01T00:00:00Z") -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: "
            f"{namespace}, creationTimestamp: '{created}'}}\nspec: {{hosts: {hosts}, {extra}http: [{{route: "
            f"[{{destination: {{host: web.shop.svc.cluster.local}}}}]}}]}}\n")


def test_the_exact_host_beats_an_older_wildcard_and_shadows_it() -> None:
    view = view_for(vs("wild", "['*.shop.svc.cluster.local']") + "---\n"
                    + vs("exact", "[web]", created="2025-01-01T00:00:00Z"))
    assert routes(view) == {"web.shop.svc.cluster.local": (
        "VirtualService/shop/exact", "web.shop.svc.cluster.local", ["VirtualService/shop/wild"])}


def test_a_sidecar_that_imports_another_namespace_only_sees_no_virtual_service_of_shop() -> None:
    sidecar = ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\n"
               "spec: {egress: [{hosts: ['data/*']}]}\n")
    view = view_for(vs("web", "[web]") + "---\n" + sidecar)
    assert view["sidecar"] == "Sidecar/shop/default"
    assert [(e["virtual_services"], e["routes"]) for e in view["egress"]] == [([], [])]


def test_a_delegate_is_listed_with_its_root() -> None:
    root = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: root, namespace: shop}\n"
            "spec: {hosts: [web], http: [{match: [{uri: {prefix: /api}}], delegate: {name: leaf}}]}\n")
    leaf = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: leaf, namespace: shop}\n"
            "spec: {http: [{match: [{uri: {prefix: /api/v1}}], route: [{destination: {host: web}}]}]}\n")
    objs = objects(root + "---\n" + leaf)
    (binding,) = [r for e in view_for(root + "---\n" + leaf)["egress"] for r in e["routes"]]
    assert binding["delegates"] == ["VirtualService/shop/leaf"]
    from xds_server.mesh.rules import build_traffic_rules

    summary = traffic.rules_summary(build_traffic_rules(
        [o for o in objs if o.kind == "VirtualService"], [], StoreView.build(1, objs).mesh, "cluster.local"))
    assert summary["delegate_virtual_services"] == ["VirtualService/shop/leaf"]
    assert [v["virtual_service"] for v in summary["virtual_services"]] == ["VirtualService/shop/root"]


def test_a_workload_selector_destination_rule_applies_to_the_proxies_it_selects_only() -> None:
    dr = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: shop}}\n"
          "spec: {{host: web, {selector}subsets: [{{name: {subset}, labels: {{v: '1'}}}}]}}\n")
    mesh = (dr.format(name="all", selector="", subset="plain") + "---\n"
            + dr.format(name="clients", selector="workloadSelector: {matchLabels: {app: client}}, ", subset="picked"))
    def sources(pod: str) -> list[str]:
        (rule,) = [d["destination_rule"] for d in view_for(mesh, pod)["destination_rules"]]
        return rule["sources"]
    assert sources("client-1") == ["DestinationRule/shop/clients"]
    assert sources("other-1") == ["DestinationRule/shop/all"]


def test_rule_warnings_need_the_same_host_for_overlapping_namespaces() -> None:
    private_a = vs("a", "[web.shop.svc.cluster.local]", extra="exportTo: ['.'], ")
    private_b = vs("b", "[web.shop.svc.cluster.local]", namespace="data", extra="exportTo: ['.'], ")
    assert rule_warnings(objects(private_a + "---\n" + private_b)) == []
    public_b = vs("b", "[web.shop.svc.cluster.local]", namespace="data", created="2025-01-01T00:00:00Z")
    (warning,) = rule_warnings(objects(private_a + "---\n" + public_b))
    assert str(warning.ref) == "VirtualService/data/b" and warning.warning
    assert warning.message.startswith("spec.hosts[0]: web.shop.svc.cluster.local is also routed by "
                                      "VirtualService/shop/a (older)")


def test_a_host_naming_no_service_is_shown_as_such_and_a_registered_one_is_not() -> None:
    view = view_for(vs("site", "[bookinfo.example.com, db.data.svc.cluster.local]"))
    (listener,) = view["egress"]
    assert [(r["host"], r.get("service")) for r in listener["routes"]] == [
        ("bookinfo.example.com", False),  # its own virtual host (istiod: on port 80 when it binds nothing)
        ("db.data.svc.cluster.local", None),  # a service (TCP here): bound like any other
    ]


def test_destination_rules_are_listed_for_the_clusters_the_proxy_gets_only() -> None:
    # The rule routing to db.data applies to another source namespace only: istiod's
    # collectImportedServices skips it, so the proxy gets no db.data cluster and the view shows
    # no DestinationRule for one.
    sidecar = ("apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: shop}\n"
               "spec: {egress: [{hosts: ['./*']}]}\n")
    route = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\n"
             "spec: {hosts: [web], http: [{match: [{sourceNamespace: elsewhere}], route: [{destination: "
             "{host: db.data.svc.cluster.local}}]}, {route: [{destination: {host: web}}]}]}\n")
    dr = ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: shop}}\n"
          "spec: {{host: {host}, trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}}}\n")
    extra = "---\n".join([sidecar, route, dr.format(name="web", host="web"),
                          dr.format(name="db", host="db.data.svc.cluster.local")])
    objs = objects(extra)
    proxy = proxy_from_node("sidecar~10.0.0.1~client-1.shop~shop.svc.cluster.local", {"NAMESPACE": "shop"})
    view = StoreView.build(1, objs)
    shown = traffic.proxy_rules(view, proxy)["destination_rules"]
    assert [d["host"] for d in shown] == ["web.shop.svc.cluster.local"]
    clusters = generate(view, proxy, Memo()).snapshot.get(TypeUrl.CLUSTER)
    warned = [w.split(":", 1)[0] for d in shown for w in d["warnings"]]
    assert warned and all(name in clusters for name in warned)
    assert not any("db.data" in name for name in clusters)
