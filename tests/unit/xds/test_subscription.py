from __future__ import annotations

from xds_server.xds.subscription import Subscription


def test_sotw_legacy_wildcard_until_first_name() -> None:
    s = Subscription(allows_wildcard=True)
    assert s.sotw_update([]) == (set(), True) and s.wildcard
    assert s.sotw_update(["a"]) == ({"a"}, True) and not s.wildcard and s.names == {"a"}
    s.sotw_update([])
    assert not s.wildcard and s.names == set()  # empty after a name: unsubscribe all, no wildcard


def test_sotw_explicit_wildcard_with_names() -> None:
    s = Subscription(allows_wildcard=True)
    added, _ = s.sotw_update(["*", "x"])
    assert added == {"*", "x"} and s.wildcard and s.names == {"x"}


def test_named_types_never_become_wildcard() -> None:
    s = Subscription(allows_wildcard=False)
    s.sotw_update([])
    assert not s.wildcard
    s2 = Subscription(allows_wildcard=False)
    s2.delta_update([], [], first=True)
    assert not s2.wildcard


def test_delta_wildcard_survives_names_until_unsubscribed() -> None:
    s = Subscription(allows_wildcard=True)
    s.delta_update([], [], first=True)
    assert s.wildcard
    s.delta_update(["a"], [], first=False)
    assert s.wildcard and s.names == {"a"}
    _, removed = s.delta_update([], ["*"], first=False)
    assert removed == {"*"} and not s.wildcard and s.wants("a") and not s.wants("b")


def test_delta_phantom_unsubscribe_is_ignored() -> None:
    s = Subscription(allows_wildcard=False)
    assert s.delta_update([], ["never"], first=True) == (set(), set())


def test_select_returns_only_existing_subscribed() -> None:
    s = Subscription(allows_wildcard=False)
    s.sotw_update(["a", "missing"])
    assert s.select({"a": 1, "b": 2}) == {"a": 1}
