"""Which VirtualServices a sidecar sees (istiod's virtualservice.go, push_context.go initVirtualServices)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from xds_server.config import IstioVirtualService, ObjectRef
from xds_server.config.mesh import MeshConfig
from xds_server.config.parse import parse
from xds_server.mesh.host_imports import HostImports
from xds_server.mesh.virtual_services import (
    has_conflict,
    index_virtual_services,
    resolve_gateway,
    resolve_host,
    select_virtual_services,
    virtual_service_for_host,
)

TRAFFIC = Path(__file__).parents[2] / "fixtures" / "manifests" / "traffic"
MESH = MeshConfig()


def vs(name: str, ns: str, spec: dict[str, Any], age: int = 0) -> IstioVirtualService:
    doc = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
           "metadata": {"name": name, "namespace": ns, "creationTimestamp": f"2026-01-01T00:{age:02d}:00Z"},
           "spec": spec}
    obj, problems = parse(doc)
    assert isinstance(obj, IstioVirtualService), problems
    return obj


def simple(name: str, ns: str, *hosts: str, age: int = 0, **spec: Any) -> IstioVirtualService:
    return vs(name, ns, {"hosts": list(hosts), "http": [{"route": [{"destination": {"host": hosts[0]}}]}], **spec},
              age)


def names(selected: Any) -> list[str]:
    return [str(v.ref) for v in selected]


def imports(*hosts: str, ns: str = "client") -> HostImports:
    return HostImports.parse(hosts, ns)


# ---------------------------------------------------------------- names
def test_short_names_resolve_against_the_virtual_service_namespace() -> None:
    assert resolve_host("reviews", "team1", "cluster.local") == "reviews.team1.svc.cluster.local"
    assert resolve_host("reviews.prod", "team1", "cluster.local") == "reviews.prod"  # has a dot: taken as qualified
    assert resolve_host("*", "team1", "cluster.local") == "*"
    assert resolve_host("10.0.0.1", "team1", "cluster.local") == "10.0.0.1"
    index = index_virtual_services([vs("r", "team1", {"hosts": ["reviews"], "http": [
        {"route": [{"destination": {"host": "ratings"}}], "mirror": {"host": "shadow"}},
        {"route": [{"destination": {"host": "ratings"}}], "mirrors": [{"destination": {"host": "m2"}}]}],
        "tcp": [{"route": [{"destination": {"host": "db"}}]}]})], MESH, "example.local")
    (resolved,) = index.public
    assert list(resolved.spec.hosts) == ["reviews.team1.svc.example.local"]
    http = resolved.spec.http[0]
    assert http.route[0].destination.host == "ratings.team1.svc.example.local"
    assert http.mirror.host == "shadow.team1.svc.example.local"
    assert resolved.spec.http[1].mirrors[0].destination.host == "m2.team1.svc.example.local"
    assert resolved.spec.tcp[0].route[0].destination.host == "db.team1.svc.example.local"
    assert resolved.source.spec.hosts[0] == "reviews"  # the stored object is left as written


def test_gateway_names_resolve_like_istiod() -> None:
    assert resolve_gateway("mesh", "ns") == "mesh"
    assert resolve_gateway("ingress", "ns") == "ns/ingress"
    assert resolve_gateway("istio-system/ingress", "ns") == "istio-system/ingress"
    assert resolve_gateway("ingress.istio-system", "ns") == "istio-system/ingress"  # legacy FQDN form


# ---------------------------------------------------------------- gateways and exportTo
def test_only_virtual_services_bound_to_mesh_reach_sidecars() -> None:
    index = index_virtual_services([
        simple("default-mesh", "a", "a.example.com", age=1),
        simple("gateway-only", "a", "b.example.com", age=2, gateways=["istio-system/ingress"]),
        simple("both", "a", "c.example.com", age=3, gateways=["ingress", "mesh"]),
    ], MESH)
    assert names(index.candidates("a")) == ["VirtualService/a/default-mesh", "VirtualService/a/both"]


def test_export_to_private_exported_and_public_with_istiods_candidate_order() -> None:
    index = index_virtual_services([
        simple("public", "a", "p.example.com", age=1),
        simple("private", "a", "q.example.com", age=2, exportTo=["."]),
        simple("to-b", "a", "r.example.com", age=3, exportTo=["b"]),
        simple("to-a-and-b", "a", "s.example.com", age=4, exportTo=[".", "b"]),
        simple("nobody", "a", "t.example.com", age=5, exportTo=["b"]),
    ], MESH)
    assert names(index.candidates("a")) == [
        "VirtualService/a/private", "VirtualService/a/to-a-and-b", "VirtualService/a/public"]
    assert names(index.candidates("b")) == [
        "VirtualService/a/to-b", "VirtualService/a/to-a-and-b", "VirtualService/a/nobody", "VirtualService/a/public"]
    assert names(index.candidates("c")) == ["VirtualService/a/public"]


def test_the_mesh_default_export_to_applies_when_export_to_is_empty() -> None:
    objects = [simple("default", "a", "p.example.com"), simple("explicit", "a", "q.example.com", exportTo=["*"])]
    private = index_virtual_services(objects, MeshConfig(default_virtual_service_export_to=(".",)))
    assert names(private.candidates("b")) == ["VirtualService/a/explicit"]
    assert names(private.candidates("a")) == ["VirtualService/a/default", "VirtualService/a/explicit"]


def test_candidates_are_oldest_first_then_by_name() -> None:
    index = index_virtual_services([
        simple("young", "a", "a.example.com", age=9), simple("b-old", "a", "b.example.com", age=1),
        simple("a-old", "a", "c.example.com", age=1)], MESH)
    assert names(index.public) == ["VirtualService/a/a-old", "VirtualService/a/b-old", "VirtualService/a/young"]


# ---------------------------------------------------------------- Sidecar egress imports
def test_egress_imports_are_keyed_by_the_virtual_service_namespace() -> None:
    index = index_virtual_services([
        simple("in-team1", "team1", "reviews.prod.svc.cluster.local", age=1),
        simple("in-prod", "prod", "reviews.prod.svc.cluster.local", age=2),
    ], MESH)
    assert names(select_virtual_services(index, "client", imports("prod/*"))) == ["VirtualService/prod/in-prod"]
    assert names(select_virtual_services(index, "client", imports("team1/*"))) == ["VirtualService/team1/in-team1"]
    assert names(select_virtual_services(index, "client", imports("*/reviews.prod.svc.cluster.local"))) == [
        "VirtualService/team1/in-team1", "VirtualService/prod/in-prod"]
    assert select_virtual_services(index, "client", imports("other/*")) == ()


def test_wildcards_match_in_both_directions_and_exclusions_do_not_count() -> None:
    index = index_virtual_services([
        simple("wild", "a", "*.example.com", age=1), simple("exact", "a", "api.example.com", age=2)], MESH)
    assert names(select_virtual_services(index, "a", imports("a/api.example.com"))) == [
        "VirtualService/a/wild", "VirtualService/a/exact"]
    assert names(select_virtual_services(index, "a", imports("*/*.example.com"))) == [
        "VirtualService/a/wild", "VirtualService/a/exact"]
    assert names(select_virtual_services(index, "a", imports("a/*", "~a/api.example.com"))) == ["VirtualService/a/wild"]
    assert names(select_virtual_services(index, "a", imports("./*", ns="a"))) == [
        "VirtualService/a/wild", "VirtualService/a/exact"]


def test_the_seed_egress_task_virtual_service_is_seen_by_a_default_sidecar() -> None:
    (doc,) = yaml.safe_load_all((TRAFFIC.parent / "egress-task" / "virtualservice-httpbin.yaml").read_text())
    obj, _ = parse(doc)
    assert isinstance(obj, IstioVirtualService)
    index = index_virtual_services([obj], MESH)
    (selected,) = select_virtual_services(index, "default", imports("*/*", ns="default"))
    binding = virtual_service_for_host([selected], "httpbin.org")
    assert binding is not None and binding.virtual_service.spec.http[0].timeout.seconds == 3


# ---------------------------------------------------------------- one host, several VirtualServices
def test_no_merging_for_sidecars_the_first_candidate_wins_and_the_rest_are_shadowed() -> None:
    index = index_virtual_services([
        simple("older", "a", "reviews.a.svc.cluster.local", age=1),
        simple("newer", "a", "reviews", age=2),
        simple("private", "a", "reviews", age=3, exportTo=["."]),
    ], MESH)
    selected = select_virtual_services(index, "a", imports("./*", ns="a"))
    binding = virtual_service_for_host(selected, "reviews.a.svc.cluster.local")
    assert binding is not None
    assert str(binding.virtual_service.ref) == "VirtualService/a/private"  # private > public, then oldest
    assert [str(r) for r in binding.shadowed] == ["VirtualService/a/older", "VirtualService/a/newer"]


def test_the_most_specific_host_wins_whatever_the_order() -> None:
    index = index_virtual_services([
        simple("star", "a", "*.example.com", age=1), simple("exact", "a", "api.example.com", age=2),
        simple("longer", "a", "*.api2.example.com", age=3)], MESH)
    selected = select_virtual_services(index, "a", imports("*/*"))
    api = virtual_service_for_host(selected, "api.example.com")
    assert api is not None and (api.virtual_service.ref.name, api.vs_host) == ("exact", "api.example.com")
    deep = virtual_service_for_host(selected, "x.api2.example.com")
    assert deep is not None and deep.virtual_service.ref.name == "longer"
    other = virtual_service_for_host(selected, "www.example.com")
    assert other is not None and other.virtual_service.ref.name == "star"
    assert virtual_service_for_host(selected, "example.org") is None


# ---------------------------------------------------------------- delegates
def _fixture_index() -> Any:
    docs = list(yaml.safe_load_all((TRAFFIC / "virtualservice-every-field.yaml").read_text()))
    objects = []
    for doc in docs:
        obj, _ = parse(doc)
        assert isinstance(obj, IstioVirtualService)
        objects.append(obj)
    return index_virtual_services(objects, MESH)


def test_a_delegate_replaces_the_root_rule_and_inherits_its_match() -> None:
    index = _fixture_index()
    (root,) = index.candidates("bookinfo")
    assert root.delegates == (ObjectRef("VirtualService", "team", "team-routes"),)
    assert not any(h.HasField("delegate") for h in root.spec.http)
    merged = [h for h in root.spec.http if h.name == "team-a"]
    assert len(merged) == 1 and merged[0].match[0].uri.prefix == "/team/a"
    assert merged[0].route[0].destination.host == "team-a.team.svc.cluster.local"
    assert ("team", "team-routes") in index.delegates and index.candidates("team") == ()  # never used alone
    assert index.roots_of(ObjectRef("VirtualService", "team", "team-routes")) == (root.ref,)


def test_delegate_rules_conflicting_with_the_root_match_are_dropped_and_missing_delegates_drop_the_rule() -> None:
    root = vs("root", "a", {"hosts": ["r.example.com"], "http": [
        {"name": "api", "match": [{"uri": {"prefix": "/api"}}], "delegate": {"name": "leaf"}, "timeout": "2s"},
        {"match": [{"uri": {"prefix": "/gone"}}], "delegate": {"name": "missing"}},
        {"route": [{"destination": {"host": "fallback"}}]}]})
    leaf = vs("leaf", "a", {"http": [
        {"name": "v1", "match": [{"uri": {"prefix": "/api/v1"}, "headers": {"x": {"exact": "1"}}}],
         "route": [{"destination": {"host": "v1"}}]},
        {"match": [{"uri": {"prefix": "/other"}}], "route": [{"destination": {"host": "nope"}}]},
        {"match": [{"uri": {"regex": "/api/.*"}}], "route": [{"destination": {"host": "nope"}}]},
        {"route": [{"destination": {"host": "rest"}}], "timeout": "5s"}]})
    (merged,) = index_virtual_services([root, leaf], MESH).public
    rules = merged.spec.http
    assert [r.name for r in rules] == ["api-v1", "api", ""]
    assert rules[0].match[0].uri.prefix == "/api/v1" and rules[0].match[0].headers["x"].exact == "1"
    assert rules[0].timeout.seconds == 2  # unset in the delegate: the root's
    assert rules[1].match[0].uri.prefix == "/api" and rules[1].timeout.seconds == 5  # set in the delegate: kept
    assert rules[2].route[0].destination.host == "fallback.a.svc.cluster.local"


def test_a_delegate_not_exported_to_the_root_namespace_is_not_used() -> None:
    root = vs("root", "a", {"hosts": ["r.example.com"], "http": [{"delegate": {"name": "leaf", "namespace": "b"}}]})
    leaf = vs("leaf", "b", {"exportTo": ["."], "http": [{"route": [{"destination": {"host": "x"}}]}]})
    (merged,) = index_virtual_services([root, leaf], MESH).public
    assert list(merged.spec.http) == [] and merged.delegates == ()


def test_has_conflict_follows_istiod() -> None:
    from xds_server._proto import istio_config_pb2 as pb

    def m(**fields: Any) -> pb.HTTPMatchRequest:
        from google.protobuf import json_format
        return json_format.ParseDict(fields, pb.HTTPMatchRequest())

    assert not has_conflict(m(uri={"prefix": "/a"}), m(uri={"prefix": "/a/b"}))
    assert has_conflict(m(uri={"prefix": "/a/b"}), m(uri={"prefix": "/a"}))
    assert has_conflict(m(uri={"exact": "/a"}), m(uri={"exact": "/b"}))
    assert not has_conflict(m(uri={"exact": "/a"}), m(uri={"exact": "/a"}))
    assert has_conflict(m(uri={"regex": "/a.*"}), m(uri={"prefix": "/a"}))
    assert has_conflict(m(ignoreUriCase=True), m())
    assert has_conflict(m(port=80), m(port=81)) and not has_conflict(m(port=80), m())
    assert has_conflict(m(sourceLabels={"app": "a"}), m(sourceLabels={"app": "b"}))
    assert has_conflict(m(gateways=["mesh"]), m(gateways=["mesh", "gw"]))
    assert not has_conflict(m(headers={"x": {"prefix": "a"}}), m(headers={"x": {"exact": "ab"}}))
