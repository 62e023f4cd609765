"""Each store view knows what changed since the views before it (the translator reuses work by it)."""

from __future__ import annotations

from tests.unit.translate.test_incremental_generation import pod, service
from xds_server.model import Kind, ObjectRef
from xds_server.store import Store


def test_a_view_knows_what_changed_since_earlier_views() -> None:
    store = Store()
    store.replace("a", [service("web", "a")])
    first = store.view()
    assert first.changes is None and first.changes_since(first.generation) is not None
    store.replace("p1", [pod("p1", "a", "web", "10.0.0.1")])
    store.replace("p2", [pod("p2", "b", "web", "10.0.0.2")])
    second = store.view()
    store.replace("p1", [])
    third = store.view()
    one = third.changes_since(second.generation)
    assert one is not None and one.refs == {ObjectRef(Kind.POD, "a", "p1")}
    both = third.changes_since(first.generation)
    assert both is not None and both.namespaces(Kind.POD) == {"a", "b"} and both.kinds() == {Kind.POD}
    assert third.changes_since(second.generation - 1) is None  # not a view's generation: unknown
    assert not third.changes_since(third.generation).refs
