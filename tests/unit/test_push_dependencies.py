"""The push stage's rules, one row per config kind and case: which proxies a changed object reaches,
and whether it touches a proxy's own side (workload, Sidecar choice, inbound config) or only
what its scope imports. Then what `generate` reports a snapshot read, from real config.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.unit.translate.test_incremental_generation import pod, service, sidecar
from xds_server.config import Kind, ObjectRef
from xds_server.push.dependencies import ProxyDependencies, own_reads, touched
from xds_server.resources import ProxySnapshot
from xds_server.store import Store
from xds_server.store.view import ChangeSet
from xds_server.translate import Dependencies, Generated, Memo, ScopeDependencies, generate, proxy_from_node

ROOT = "istio-system"
EVERYONE = "everyone"

# A proxy of namespace a, found by its Pod's name, whose Sidecar imports from a and b (`./*`, `b/*`)
# and whose scope holds services of both.
NAMED = Dependencies("a", ObjectRef(Kind.POD, "a", "p1"),
                     ScopeDependencies(frozenset({"a", "b"}), frozenset({"a", "b"})))
# The same with the default `*/*` egress: a service of any namespace may be imported.
ANY_HOST = Dependencies("a", ObjectRef(Kind.POD, "a", "p1"), ScopeDependencies(frozenset({"a", "b"}), None))
# A proxy whose node names no Pod the store holds (found by IP, or not at all).
UNNAMED = Dependencies("a", None, ScopeDependencies(frozenset({"a"}), frozenset({"a"})))


@dataclass(frozen=True)
class Row:
    case: str
    depends: Dependencies
    changed: ObjectRef
    reached: bool | str  # True / False, or EVERYONE: the index answers "every proxy"
    own_side: bool


ROWS = [
    # Pod: endpoints of its namespace's services, and some proxy's own workload.
    Row("Pod in an imported namespace", NAMED, ObjectRef(Kind.POD, "b", "x"), True, False),
    Row("the proxy's own Pod", NAMED, ObjectRef(Kind.POD, "a", "p1"), True, True),
    Row("another Pod of its namespace", NAMED, ObjectRef(Kind.POD, "a", "p2"), True, False),
    Row("Pod in a namespace it imports nothing of", NAMED, ObjectRef(Kind.POD, "c", "x"), False, False),
    Row("any Pod, for a proxy found without a Pod name", UNNAMED, ObjectRef(Kind.POD, "c", "x"), True, True),
    # Service: what scopes able to import from its namespace import; its namespace's inbound side.
    Row("Service in a namespace its egress can import", NAMED, ObjectRef(Kind.SERVICE, "b", "db"), True, False),
    Row("Service of its own namespace", NAMED, ObjectRef(Kind.SERVICE, "a", "db"), True, True),
    Row("Service where its egress cannot import", NAMED, ObjectRef(Kind.SERVICE, "c", "db"), False, False),
    Row("Service anywhere, under a `*/` egress host", ANY_HOST, ObjectRef(Kind.SERVICE, "c", "db"), True, False),
    # ServiceEntry: as a Service, whatever its exportTo says now (it may have said otherwise before).
    Row("ServiceEntry in a namespace its egress can import", NAMED, ObjectRef(Kind.SERVICE_ENTRY, "b", "ext"), True,
        False),
    Row("ServiceEntry exported anywhere, under a `*/` egress host", ANY_HOST,
        ObjectRef(Kind.SERVICE_ENTRY, "c", "ext"), True, False),
    Row("ServiceEntry where its egress cannot import", NAMED, ObjectRef(Kind.SERVICE_ENTRY, "c", "ext"), False,
        False),
    Row("ServiceEntry of its own namespace", NAMED, ObjectRef(Kind.SERVICE_ENTRY, "a", "ext"), True, True),
    # Sidecar: which one applies to the proxies of its namespace; the root namespace's to everyone.
    Row("Sidecar of its own namespace", NAMED, ObjectRef(Kind.SIDECAR, "a", "default"), True, True),
    Row("Sidecar of the root namespace", NAMED, ObjectRef(Kind.SIDECAR, ROOT, "default"), EVERYONE, True),
    Row("Sidecar of an imported namespace", NAMED, ObjectRef(Kind.SIDECAR, "b", "default"), False, False),
    # Kinds without a rule reach everyone.
    Row("MeshConfig", NAMED, ObjectRef(Kind.MESH_CONFIG, ROOT, "istio"), EVERYONE, True),
    Row("Namespace", NAMED, ObjectRef(Kind.NAMESPACE, "", "c"), EVERYONE, True),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.case for r in ROWS])
def test_rule(row: Row) -> None:
    index = ProxyDependencies()
    index.put("p", Generated(ProxySnapshot({}), row.depends))
    changes = ChangeSet(0, [row.changed])
    found = index.reached(changes, ROOT)
    if row.reached == EVERYONE:
        assert found is None
    else:
        assert found == ({"p"} if row.reached else set())
    hits = touched(changes, ROOT)
    assert (hits is None or any(d in hits for d in own_reads(row.depends))) == row.own_side


def test_proxies_of_one_scope_share_its_entries_and_leave_with_the_last() -> None:
    index = ProxyDependencies()
    for key in ("p1", "p2"):
        index.put(key, Generated(ProxySnapshot({}), NAMED))
    pod_b = ChangeSet(0, [ObjectRef(Kind.POD, "b", "x")])
    assert index.reached(pod_b, ROOT) == {"p1", "p2"}
    index.put("p2", Generated(ProxySnapshot({}), UNNAMED))  # its scope changed: b is no longer imported
    assert index.reached(pod_b, ROOT) == {"p1", "p2"}  # p2: any Pod may be its own now
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.SERVICE, "b", "db")]), ROOT) == {"p1"}
    index.forget("p1")
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.SERVICE, "b", "db")]), ROOT) == set()
    index.forget("p2")
    assert index.reached(pod_b, ROOT) == set() and len(index) == 0


def test_a_result_that_reports_nothing_is_reached_by_every_change() -> None:
    index = ProxyDependencies()
    index.put("stand-in", Generated(ProxySnapshot({})))
    index.put("p", Generated(ProxySnapshot({}), NAMED))
    assert index.reached(ChangeSet(0, [ObjectRef(Kind.POD, "c", "x")]), ROOT) == {"stand-in"}


def test_generate_reports_what_the_snapshot_read() -> None:
    store = Store()
    for i, ns in enumerate(("a", "b")):
        store.replace(f"svc/{ns}/web", [service("web", ns)])
        store.replace(f"pod/{ns}/p1", [pod("p1", ns, "web", f"10.0.{i}.1")])
    store.replace("sidecar/a", [sidecar("a", '"./*", "b/*"')])
    view = store.view()
    named = proxy_from_node("sidecar~10.0.0.1~p1.a~a.svc.cluster.local", {"NAMESPACE": "a"})
    depends = generate(view, named, Memo()).depends_on
    assert depends == Dependencies("a", ObjectRef(Kind.POD, "a", "p1"),
                                   ScopeDependencies(frozenset({"a", "b"}), frozenset({"a", "b"}), "a",
                                                     vs_imports=frozenset({"a/*", "b/*"})))
    default = proxy_from_node("sidecar~10.0.1.1~p1.b~b.svc.cluster.local", {"NAMESPACE": "b"})  # `*/*`
    depends = generate(view, default, Memo()).depends_on
    assert depends is not None and depends.outbound == ScopeDependencies(frozenset({"a", "b"}), None, "b",
                                                                         vs_imports=frozenset({"*/*"}))
    ghost = proxy_from_node("sidecar~10.0.9.9~ghost.a~a.svc.cluster.local", {"NAMESPACE": "a"})
    depends = generate(view, ghost, Memo()).depends_on
    assert depends is not None and depends.pod is None
