"""Sidecar egress scope rules: host forms, exportTo, port filter, route ownership, Sidecar choice,
outbound traffic policy, hostname collisions."""

from __future__ import annotations

import pytest

from tests.unit.translate.outbound_support import (
    hosts,
    mesh,
    pod,
    proxy,
    scope_of,
    service_entry,
    sidecar,
    svc,
    view_of,
)
from xds_server.mesh import names
from xds_server.mesh.host_imports import HostImports, host_matches
from xds_server.mesh.scope import ProxyTraits

MESH_SERVICES = (
    svc("a", "ns1", created=1) + svc("b", "ns1", created=2) + svc("c", "ns2", created=3)
    + svc("d", "default", created=4)
)


def imported(egress_hosts: str, *extra: str, ns: str = "default") -> list[str]:
    view = view_of(MESH_SERVICES, *extra, sidecar(f"egress: [{{hosts: {egress_hosts}}}]", ns=ns))
    return hosts(scope_of(view, proxy(ns=ns)))


# ------------------------------------------------------------------ host forms
@pytest.mark.parametrize(("service_host", "imported_host", "expected"), [
    ("a.example.com", "a.example.com", True),
    ("a.example.com", "b.example.com", False),
    ("a.example.com", "*", True),
    ("a.b.example.com", "*.example.com", True),
    ("example.com", "*.example.com", False),
    ("*.example.com", "*.example.com", True),
    ("*.a.example.com", "*.example.com", True),
    ("*.com", "*.example.com", False),
    ("*.example.com", "a.example.com", False),
])
def test_host_matching_is_istio_subset_of(service_host: str, imported_host: str, expected: bool) -> None:
    assert host_matches(service_host, imported_host) is expected


def test_namespace_slash_host_imports_that_host_only() -> None:
    assert imported('["ns1/a.ns1.svc.cluster.local"]') == ["a.ns1.svc.cluster.local"]


def test_namespace_slash_star_imports_the_namespace() -> None:
    assert imported('["ns1/*"]') == ["a.ns1.svc.cluster.local", "b.ns1.svc.cluster.local"]


def test_star_slash_host_matches_in_any_namespace() -> None:
    assert imported('["*/c.ns2.svc.cluster.local"]') == ["c.ns2.svc.cluster.local"]


def test_dot_means_the_sidecar_namespace() -> None:
    assert imported('["./*"]') == ["d.default.svc.cluster.local"]


def test_wildcard_host_is_a_left_label_suffix_match() -> None:
    extra = (service_entry("hosts: [api.example.com, example.com, x.y.example.com]\n"
                           "ports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS", ns="ext"))
    assert imported('["*/*.example.com"]', extra) == ["api.example.com", "x.y.example.com"]


def test_explicit_namespace_entry_shadows_star_entries_for_that_namespace() -> None:
    # istiod checks `*/` entries only for namespaces without entries of their own.
    got = imported('["ns1/a.ns1.svc.cluster.local", "*/*"]')
    assert "b.ns1.svc.cluster.local" not in got
    assert got == ["a.ns1.svc.cluster.local", "c.ns2.svc.cluster.local", "d.default.svc.cluster.local"]


def test_tilde_namespace_excludes_matches() -> None:
    assert imported('["*/*", "~ns1/b.ns1.svc.cluster.local"]') == [
        "a.ns1.svc.cluster.local", "c.ns2.svc.cluster.local", "d.default.svc.cluster.local"]


def test_bare_tilde_excludes_in_every_namespace() -> None:
    assert imported('["*/*", "~/c.ns2.svc.cluster.local"]') == [
        "a.ns1.svc.cluster.local", "b.ns1.svc.cluster.local", "d.default.svc.cluster.local"]


def test_tilde_slash_star_imports_nothing() -> None:
    assert imported('["~/*"]') == []


def test_malformed_host_entries_are_ignored() -> None:
    parsed = HostImports.parse(["no-slash", "ns/", "ns1/a"], "default")
    assert dict(parsed.imports) == {"ns1": ("a",)}


# ------------------------------------------------------------------ exportTo
def test_service_exported_to_own_namespace_is_invisible_elsewhere() -> None:
    private = svc("p", "ns1", created=9, annotations='{networking.istio.io/exportTo: "."}')
    assert "p.ns1.svc.cluster.local" not in imported('["*/*"]', private)
    assert "p.ns1.svc.cluster.local" in imported('["*/*"]', private, ns="ns1")


def test_service_exported_to_named_namespaces_only() -> None:
    named = svc("p", "ns1", created=9, annotations='{networking.istio.io/exportTo: "default,ns2"}')
    assert "p.ns1.svc.cluster.local" in imported('["*/*"]', named)
    assert "p.ns1.svc.cluster.local" not in imported('["*/*"]', named, ns="ns3")


def test_service_entry_exported_to_nobody_is_never_imported() -> None:
    se = service_entry("hosts: [x.com]\nexportTo: ['~']\nports: [{number: 80, name: http, protocol: HTTP}]\n"
                       "resolution: DNS", ns="ns1")
    assert imported('["*/*"]', se) == imported('["*/*"]')


def test_mesh_default_export_to_applies_to_unannotated_services() -> None:
    cm = """---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultServiceExportTo: ["."]
"""
    assert imported('["*/*"]', cm) == ["d.default.svc.cluster.local"]


# ------------------------------------------------------------------ port filter
def test_explicit_port_imports_only_services_declaring_it_trimmed_to_that_port() -> None:
    view = view_of(
        svc("web", ports="[{name: http, port: 8080}, {name: grpc, port: 9090}]", created=1),
        svc("db", ports="[{name: tcp, port: 3306}]", created=2),
        sidecar("egress: [{port: {number: 8080, protocol: HTTP, name: h}, hosts: ['./*']}]"),
    )
    scope = scope_of(view, proxy())
    (only,) = scope.services
    assert only.hostname == "web.default.svc.cluster.local"
    assert [p.number for p in only.ports] == [8080]


def test_http_proxy_port_does_not_filter_services() -> None:
    view = view_of(
        svc("web", ports="[{name: http, port: 8080}]", created=1), svc("db", ports="[{name: tcp, port: 3306}]"),
        sidecar("egress: [{port: {number: 15080, protocol: HTTP_PROXY, name: p}, bind: 127.0.0.1, "
                "captureMode: NONE, hosts: ['./*']}]"),
    )
    assert len(scope_of(view, proxy()).services) == 2


def test_cds_merges_ports_imported_by_several_listeners() -> None:
    view = view_of(
        svc("web", ports="[{name: http, port: 8080}, {name: grpc, port: 9090}]"),
        sidecar("""egress:
- {port: {number: 8080, protocol: HTTP, name: a}, hosts: ['./*']}
- {port: {number: 9090, protocol: GRPC, name: b}, hosts: ['./*']}"""),
    )
    (web,) = scope_of(view, proxy()).services
    assert sorted(p.number for p in web.ports) == [8080, 9090]


# ------------------------------------------------------------------ route ownership
def test_route_belongs_to_first_listener_with_that_port_else_portless() -> None:
    view = view_of(
        svc("a", "ns1", created=1), svc("b", "ns2", created=2),
        sidecar("""egress:
- {port: {number: 9080, protocol: HTTP, name: a}, hosts: ['ns1/*']}
- {hosts: ['*/*']}"""),
    )
    scope = scope_of(view, proxy())
    assert scope.egress_for_route(9080) is scope.egress[0]
    assert [s.hostname for s in scope.egress[0].services] == ["a.ns1.svc.cluster.local"]
    assert scope.egress_for_route(1234) is scope.egress[1]


def test_unix_route_is_found_by_bind() -> None:
    view = view_of(svc("a"), sidecar("""egress:
- {port: {number: 0, protocol: HTTP, name: u1}, bind: "unix:///var/run/one.sock", hosts: ['./*']}
- {port: {number: 0, protocol: HTTP, name: u2}, bind: "unix:///var/run/two.sock", hosts: ['./*']}"""))
    scope = scope_of(view, proxy())
    assert scope.egress_for_route(0, "unix:///var/run/two.sock") is scope.egress[1]


# ------------------------------------------------------------------ Sidecar choice
CHOICE = (
    svc("a", "ns1", created=1) + svc("b", "ns2", created=2) + svc("c", "ns3", created=3)
    + pod("picky-1", "default", ip="10.244.0.7", labels="{app: picky}")
    + pod("plain-1", "default", ip="10.244.0.8", labels="{app: plain}")
    + sidecar("workloadSelector: {labels: {app: picky}}\negress: [{hosts: ['ns1/*']}]", name="picky", created=5)
    + sidecar("egress: [{hosts: ['ns2/*']}]", name="default", created=1)
)


def test_selector_sidecar_beats_namespace_default() -> None:
    view = view_of(CHOICE)
    assert hosts(scope_of(view, proxy("picky-1", ip="10.244.0.7"))) == ["a.ns1.svc.cluster.local"]
    assert hosts(scope_of(view, proxy("plain-1", ip="10.244.0.8"))) == ["b.ns2.svc.cluster.local"]


def test_root_namespace_sidecar_applies_with_dot_meaning_the_proxy_namespace() -> None:
    view = view_of(
        svc("a", "ns1", created=1), svc("c", "ns3", created=3), svc("x", "istio-system", created=4),
        sidecar("egress: [{hosts: ['./*', 'istio-system/*']}]", ns="istio-system"),
    )
    assert hosts(scope_of(view, proxy(ns="ns3"))) == ["c.ns3.svc.cluster.local", "x.istio-system.svc.cluster.local"]


def test_no_sidecar_imports_every_visible_service() -> None:
    view = view_of(svc("a", "ns1", created=1), svc("c", "ns3", created=3))
    assert hosts(scope_of(view, proxy())) == ["a.ns1.svc.cluster.local", "c.ns3.svc.cluster.local"]


# ------------------------------------------------------------------ outbound traffic policy
def test_mesh_policy_applies_without_sidecar_policy() -> None:
    assert not scope_of(view_of(mesh("REGISTRY_ONLY")), proxy()).policy.allow_any
    assert scope_of(view_of(mesh("ALLOW_ANY")), proxy()).policy.allow_any


def test_empty_sidecar_policy_means_registry_only() -> None:
    view = view_of(mesh("ALLOW_ANY"), sidecar("outboundTrafficPolicy: {}"))
    policy = scope_of(view, proxy()).policy
    assert not policy.allow_any
    assert policy.catch_all_cluster == names.BLACKHOLE_CLUSTER


def test_egress_proxy_replaces_passthrough() -> None:
    view = view_of(sidecar("""outboundTrafficPolicy:
  mode: ALLOW_ANY
  egressProxy: {host: egress.istio-system.svc.cluster.local, subset: s, port: {number: 8080}}"""))
    policy = scope_of(view, proxy()).policy
    assert policy.catch_all_cluster == "outbound|8080|s|egress.istio-system.svc.cluster.local"


# ------------------------------------------------------------------ hostname collisions
def test_same_host_in_two_namespaces_prefers_the_proxy_namespace() -> None:
    se = "hosts: [shared.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS"
    view = view_of(service_entry(se, ns="ns1", created=1), service_entry(se, ns="default", created=2))
    (chosen,) = scope_of(view, proxy()).services
    assert chosen.namespace == "default"
    (chosen,) = scope_of(view, proxy(ns="ns9")).services
    assert chosen.namespace == "ns1"  # first candidate (oldest)


def test_kubernetes_service_beats_service_entry_with_the_same_host() -> None:
    se = service_entry("hosts: [a.ns1.svc.cluster.local]\nports: [{number: 80, name: http, protocol: HTTP}]\n"
                       "resolution: DNS", ns="ns2", created=0)
    view = view_of(svc("a", "ns1", created=5), se)
    (chosen,) = scope_of(view, proxy()).services
    assert chosen.is_kubernetes


# ------------------------------------------------------------------ VirtualServices and DestinationRules
def _vs(name: str, ns: str, host: str, created: int) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {ns}, creationTimestamp: "2026-01-01T00:00:{created:02d}Z"}}
spec:
  hosts: [{host}]
  http: [{{route: [{{destination: {{host: {host}}}}}]}}]
---
"""


def test_each_egress_listener_selects_the_virtual_services_it_imports() -> None:
    view = view_of(MESH_SERVICES, _vs("to-a", "ns1", "a", 1), _vs("to-c", "ns2", "c", 2),
                   sidecar("egress: [{port: {number: 9080, protocol: HTTP, name: h}, hosts: ['ns1/*']},"
                           " {hosts: ['*/*']}]"))
    scope = scope_of(view, proxy())
    assert [vs.ref.name for vs in scope.egress[0].virtual_services] == ["to-a"]
    assert [vs.ref.name for vs in scope.egress[1].virtual_services] == ["to-a", "to-c"]


def test_scope_finds_the_destination_rule_and_follows_the_rules_object() -> None:
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: ns1}
spec: {host: a, subsets: [{name: v1, labels: {version: v1}}]}
---
"""
    plain = view_of(MESH_SERVICES)
    assert scope_of(plain, proxy()).rules is None
    view = view_of(MESH_SERVICES, dr)
    scope = scope_of(view, proxy())
    rule = scope.destination_rule("a.ns1.svc.cluster.local", "ns1", ProxyTraits())
    assert rule is not None and [s.name for s in rule.spec.subsets] == ["v1"]
    assert scope.destination_rule("b.ns1.svc.cluster.local", "ns1", ProxyTraits()) is None
