"""The pure parts of the Kubernetes source: reflector state, backoff, and what is watched."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from xds_server.config import ConfigObject, Namespace, ObjectMeta, ObjectRef, Pod, Problem
from xds_server.sources.kube_kinds import NAMESPACE, POD, SIDECAR, WatchTarget, watch_targets
from xds_server.sources.kube_reflector import Backoff, Delete, ReflectorState, Replace, Report, Upsert

ORIGIN = "kubernetes/Pod/*"


def fake_parse(doc: Mapping[str, Any], where: str) -> tuple[ConfigObject | None, list[Problem]]:
    """Accepts a Pod unless its labels say `bad`; a Pod labelled `gone` converts to nothing."""
    meta = doc["metadata"]
    ref = ObjectRef(doc["kind"], meta.get("namespace", ""), meta["name"])
    labels = meta.get("labels") or {}
    if "bad" in labels:
        return None, [Problem(ref, "metadata.labels.bad: not allowed", where)]
    if "gone" in labels:
        return None, []
    warnings = [Problem(ref, "metadata.labels.odd: unusual", where, warning=True)] if "odd" in labels else []
    obj = Pod(ObjectMeta(meta["name"], meta.get("namespace", ""), resource_version=meta["resourceVersion"]))
    return obj, warnings


def pod(name: str, rv: int, **labels: str) -> dict[str, Any]:
    # As in a list: no kind/apiVersion on the items.
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": str(rv), "labels": labels}}


def state() -> ReflectorState:
    return ReflectorState(ORIGIN, "Pod", "v1", fake_parse)


def replaced(ops: list[Any]) -> set[str]:
    (rep,) = [op for op in ops if isinstance(op, Replace)]
    return {str(obj.ref) for obj in rep.objects}


def reported(ops: list[Any]) -> list[str]:
    reports = [op for op in ops if isinstance(op, Report)]
    return [p.message for p in reports[-1].problems] if reports else []


def test_list_replaces_the_origin_and_records_the_resource_version() -> None:
    s = state()
    ops = s.listed([pod("a", 3), pod("b", 4)], "7")
    assert replaced(ops) == {"Pod/ns/a", "Pod/ns/b"}
    assert s.resource_version == "7"
    assert reported(ops) == []


def test_list_items_get_kind_and_api_version_from_the_list() -> None:
    seen: list[Mapping[str, Any]] = []

    def spy(doc: Mapping[str, Any], where: str) -> tuple[ConfigObject | None, list[Problem]]:
        seen.append(doc)
        return fake_parse(doc, where)

    ReflectorState(ORIGIN, "Pod", "v1", spy).listed([pod("a", 3)], "3")
    assert (seen[0]["kind"], seen[0]["apiVersion"]) == ("Pod", "v1")


def test_relist_drops_what_vanished_and_reuses_unchanged_objects() -> None:
    s = state()
    first = s.listed([pod("a", 3), pod("b", 4)], "7")
    kept = next(o for o in next(op for op in first if isinstance(op, Replace)).objects if o.meta.name == "a")
    ops = s.listed([pod("a", 3)], "9")
    assert replaced(ops) == {"Pod/ns/a"}
    (rep,) = [op for op in ops if isinstance(op, Replace)]
    assert rep.objects[0] is kept  # same rv: not re-parsed, so the store sees no change


def test_malformed_item_in_a_list_is_reported_and_the_others_accepted() -> None:
    ops = state().listed([pod("a", 3), pod("bad", 4, bad="1")], "7")
    assert replaced(ops) == {"Pod/ns/a"}
    assert reported(ops) == ["metadata.labels.bad: not allowed"]


def test_malformed_update_keeps_the_last_good_version() -> None:
    s = state()
    s.listed([pod("a", 3)], "3")
    ops = s.event("MODIFIED", pod("a", 5, bad="1"))
    assert [type(op) for op in ops] == [Report]
    assert s.objects[("ns", "a")].meta.resource_version == "3"
    assert s.resource_version == "5"
    # Also across a relist that still sees the bad version.
    ops = s.listed([pod("a", 5, bad="1")], "6")
    assert replaced(ops) == {"Pod/ns/a"}
    assert reported(ops) == ["metadata.labels.bad: not allowed"]
    # Fixed: accepted, and the problem is withdrawn.
    ops = s.event("MODIFIED", pod("a", 8))
    assert isinstance(ops[0], Upsert) and ops[0].obj.meta.resource_version == "8"
    assert reported(ops) == []


def test_warnings_are_reported_without_rejecting() -> None:
    ops = state().event("ADDED", pod("a", 3, odd="1"))
    assert isinstance(ops[0], Upsert)
    assert reported(ops) == ["metadata.labels.odd: unusual"]


def test_events_upsert_and_delete() -> None:
    s = state()
    s.listed([], "1")
    assert isinstance(s.event("ADDED", pod("a", 2))[0], Upsert)
    ops = s.event("DELETED", pod("a", 3))
    assert ops == [Delete(ORIGIN, ObjectRef("Pod", "ns", "a"))]
    assert s.resource_version == "3"
    assert s.event("DELETED", pod("never-accepted", 4)) == []


def test_deleting_a_rejected_object_withdraws_its_problem() -> None:
    s = state()
    s.listed([pod("bad", 2, bad="1")], "2")
    ops = s.event("DELETED", pod("bad", 3, bad="1"))
    assert ops == [Report(ORIGIN, ())]


def test_an_object_that_converts_to_nothing_is_removed() -> None:
    s = state()
    s.listed([pod("a", 2)], "2")
    assert s.event("MODIFIED", pod("a", 3, gone="1")) == [Delete(ORIGIN, ObjectRef("Pod", "ns", "a"))]


def test_bookmark_only_advances_the_resource_version() -> None:
    s = state()
    s.listed([pod("a", 2)], "2")
    bookmark = {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "42"}}
    assert s.event("BOOKMARK", bookmark) == []
    assert s.resource_version == "42"
    assert set(s.objects) == {("ns", "a")}


def test_nameless_items_are_rejected_without_dropping_the_others() -> None:
    ops = state().listed([pod("a", 2), {"metadata": {"resourceVersion": "3"}}, "junk"], "3")
    assert replaced(ops) == {"Pod/ns/a"}
    assert reported(ops) == ["Pod without metadata.name: rejected"] * 2


def test_a_parse_crash_rejects_only_that_object() -> None:
    def crashing(doc: Mapping[str, Any], where: str) -> tuple[ConfigObject | None, list[Problem]]:
        if doc["metadata"]["name"] == "boom":
            raise RuntimeError("bug")
        return fake_parse(doc, where)

    ops = ReflectorState(ORIGIN, "Pod", "v1", crashing).listed([pod("a", 2), pod("boom", 3)], "3")
    assert replaced(ops) == {"Pod/ns/a"}
    assert reported(ops) == ["cannot be parsed: RuntimeError: bug"]


def test_cleared_empties_the_origin() -> None:
    s = state()
    s.listed([pod("a", 2)], "2")
    assert s.cleared() == [Replace(ORIGIN, ()), Report(ORIGIN, ())]
    assert s.resource_version == ""


def test_cluster_scoped_refs_come_from_parse() -> None:
    def ns_parse(doc: Mapping[str, Any], where: str) -> tuple[ConfigObject | None, list[Problem]]:
        return Namespace(ObjectMeta(doc["metadata"]["name"])), []

    s = ReflectorState("kubernetes/Namespace/*", "Namespace", "v1", ns_parse)
    s.listed([{"metadata": {"name": "prod", "resourceVersion": "2"}}], "2")
    assert s.event("DELETED", {"metadata": {"name": "prod", "resourceVersion": "3"}}) == [
        Delete("kubernetes/Namespace/*", ObjectRef("Namespace", "", "prod"))
    ]


# ---------------------------------------------------------------- backoff
def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    b = Backoff(0.1, 1.0, random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    caps = [min(1.0, 0.1 * 2**n) for n in range(8)]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next_delay() <= 0.1


# ---------------------------------------------------------------- what is watched
def test_cluster_wide_watch_has_one_target_per_kind() -> None:
    origins = [t.origin for t in watch_targets((), "istio-system")]
    assert origins == [
        "kubernetes/Pod/*",
        "kubernetes/Service/*",
        "kubernetes/Sidecar/*",
        "kubernetes/ServiceEntry/*",
        "kubernetes/VirtualService/*",
        "kubernetes/DestinationRule/*",
        "kubernetes/Namespace/*",
        "kubernetes/ConfigMap/istio-system",
    ]


def test_restricted_watch_has_targets_per_namespace_and_the_mesh_configmap() -> None:
    targets = watch_targets(("a", "b", "a"), "istio-system")
    assert len(targets) == 2 * 7 + 1  # 6 namespaced kinds and the Namespace, per namespace
    assert WatchTarget(POD, "b") in targets
    assert WatchTarget(SIDECAR, "a") in targets
    assert WatchTarget(NAMESPACE, None, "metadata.name=b") in targets
    assert "kubernetes/Namespace/b" in {t.origin for t in targets}
    mesh = targets[-1]
    assert (mesh.namespace, mesh.field_selector, mesh.origin) == (
        "istio-system",
        "metadata.name=istio",
        "kubernetes/ConfigMap/istio-system",
    )
