from __future__ import annotations

import gc

from xds_server.xds.subscription import NameSets, Subscription

SETS = NameSets()  # one per server: every stream's subscriptions share it


def test_sotw_legacy_wildcard_until_first_name() -> None:
    s = Subscription(allows_wildcard=True, name_sets=SETS)
    assert s.sotw_update([]) == (set(), True) and s.wildcard
    assert s.sotw_update(["a"]) == ({"a"}, True) and not s.wildcard and s.names == {"a"}
    s.sotw_update([])
    assert not s.wildcard and s.names == set()  # empty after a name: unsubscribe all, no wildcard


def test_sotw_explicit_wildcard_with_names() -> None:
    s = Subscription(allows_wildcard=True, name_sets=SETS)
    added, _ = s.sotw_update(["*", "x"])
    assert added == {"*", "x"} and s.wildcard and s.names == {"x"}


def test_named_types_never_become_wildcard() -> None:
    s = Subscription(allows_wildcard=False, name_sets=SETS)
    s.sotw_update([])
    assert not s.wildcard
    s2 = Subscription(allows_wildcard=False, name_sets=SETS)
    s2.delta_update([], [], first=True)
    assert not s2.wildcard


def test_delta_wildcard_survives_names_until_unsubscribed() -> None:
    s = Subscription(allows_wildcard=True, name_sets=SETS)
    s.delta_update([], [], first=True)
    assert s.wildcard
    s.delta_update(["a"], [], first=False)
    assert s.wildcard and s.names == {"a"}
    _, removed = s.delta_update([], ["*"], first=False)
    assert removed == {"*"} and not s.wildcard and s.wants("a") and not s.wants("b")


def test_delta_phantom_unsubscribe_is_ignored() -> None:
    s = Subscription(allows_wildcard=False, name_sets=SETS)
    assert s.delta_update([], ["never"], first=True) == (set(), set())


def test_select_returns_only_existing_subscribed() -> None:
    s = Subscription(allows_wildcard=False, name_sets=SETS)
    s.sotw_update(["a", "missing"])
    assert s.select({"a": 1, "b": 2}) == {"a": 1}


def test_streams_subscribed_to_the_same_names_share_one_set() -> None:
    eds_names = [f"outbound|80||svc-{i}.ns.svc.cluster.local" for i in range(1000)]
    a, b, c = (Subscription(allows_wildcard=False, name_sets=SETS) for _ in range(3))
    a.delta_update(eds_names, [], first=True)
    b.delta_update(reversed(eds_names), [], first=True)  # same names, another order
    c.delta_update(eds_names[:500], [], first=True)  # ... or in two requests
    c.delta_update(eds_names[500:], [], first=False)
    assert a.names is b.names is c.names
    added, removed = c.delta_update([], [eds_names[0]], first=False)
    assert removed == {eds_names[0]} and not added
    assert eds_names[0] not in c.names and eds_names[0] in a.names  # the others' set is untouched
    s = Subscription(allows_wildcard=False, name_sets=SETS)
    s.sotw_update(eds_names)
    assert s.names is a.names


def test_a_shared_set_nobody_uses_is_let_go() -> None:
    sets = NameSets()
    subs = [Subscription(allows_wildcard=False, name_sets=sets) for _ in range(3)]
    for s in subs:
        s.delta_update(["only-here-1", "only-here-2"], [], first=True)
    assert len(sets) == 1
    del subs, s
    gc.collect()
    assert len(sets) == 0


def test_servers_do_not_share_name_sets() -> None:
    a, b = Subscription(allows_wildcard=False, name_sets=NameSets()), Subscription(False, NameSets())
    a.sotw_update(["x", "y"])
    b.sotw_update(["x", "y"])
    assert a.names == b.names and a.names is not b.names
