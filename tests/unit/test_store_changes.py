"""Each store view knows what changed since the views before it (the translator reuses work by it)."""

from __future__ import annotations

import random

import pytest

from tests.unit.translate.test_incremental_generation import pod, service
from xds_server.config import Kind, ObjectRef
from xds_server.store import Store, StoreView


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


@pytest.mark.parametrize("seed", range(8))
def test_indexes_taken_over_from_the_previous_view_equal_fresh_ones(seed: int) -> None:
    """A view takes unchanged indexes from the one before (Pods by namespace, selections, kinds):
    whatever the order of changes and of lookups, they equal a view built from scratch."""
    rng = random.Random(seed)
    store = Store()
    namespaces = ("a", "b", "c")
    selectors = [{}, {"app": "web"}, {"app": "db"}, {"app": "web", "tier": "x"}]
    for step in range(80):
        ns = rng.choice(namespaces)
        what = rng.randrange(6)
        if what <= 3:
            name = f"p{rng.randrange(5)}"
            if rng.random() < 0.3:
                store.replace(f"pod/{ns}/{name}", ())
            else:
                store.replace(f"pod/{ns}/{name}", [pod(name, ns, rng.choice(["web", "db"]),
                                                       f"10.{namespaces.index(ns)}.0.{step % 200 + 1}")])
        elif what == 4 and ns != "c":  # (the helper places Services in a and b)
            store.replace(f"svc/{ns}", [] if rng.random() < 0.3 else [service(rng.choice(["web", "db"]), ns)])
        view = store.view()
        fresh = StoreView(view.generation, {ref: view.get(ref) for ref in _refs(store)})
        for n in namespaces:
            if rng.random() < 0.7:  # look some up now (taken over next time), leave others
                assert view.pods_in(n) == fresh.pods_in(n)
                for sel in selectors:
                    assert view.pods_selected(n, sel) == fresh.pods_selected(n, sel), (seed, step, n, sel)
            assert view.services_in(n) == fresh.services_in(n)
        assert view.services == fresh.services and view.pods == fresh.pods


def _refs(store: Store) -> list[ObjectRef]:
    return [obj.ref for _, obj in store.objects()]
