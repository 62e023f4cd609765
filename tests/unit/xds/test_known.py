"""KnownVersions behaves exactly like the private dict it replaces, whatever the operations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from xds_server.xds.known import KnownVersions

NAMES = st.sampled_from([f"r{i}" for i in range(80)])
VERSIONS = st.sampled_from(["v1", "v2", "v3"])
MAPS = st.dictionaries(NAMES, VERSIONS, max_size=80)
OPS = st.lists(st.one_of(
    st.tuples(st.just("set"), NAMES, VERSIONS),
    st.tuples(st.just("pop"), NAMES, st.none()),
    st.tuples(st.just("update"), st.integers(0, 2), st.none()),
), max_size=120)


@settings(max_examples=300, deadline=None)
@given(initial=MAPS, bases=st.lists(MAPS, min_size=3, max_size=3), ops=OPS)
def test_same_as_a_dict(initial: dict[str, str], bases: list[dict[str, str]], ops: list) -> None:
    known, model = KnownVersions(initial), dict(initial)
    snapshots = [dict(b) for b in bases]
    for op, a, b in ops:
        if op == "set":
            known[a] = b
            model[a] = b
        elif op == "pop":
            assert known.pop(a, None) == model.pop(a, None)
        else:
            known.update_from(snapshots[a])  # the same shared object again and again, like a snapshot's
            model.update(snapshots[a])
        assert dict(known.items()) == model
        assert len(known) == len(model) and bool(known) == bool(model)
        for name in ("r0", "r1", "r40", "r79", a if isinstance(a, str) else "r2"):
            assert known.get(name) == model.get(name) and (name in known) == (name in model)
            assert known.getter()(name) == model.get(name)
    assert snapshots == [dict(b) for b in bases]  # the shared mappings were never modified


def test_a_first_whole_response_shares_the_snapshots_dict() -> None:
    versions = {f"r{i}": "v1" for i in range(1000)}
    known = KnownVersions()
    known.update_from(versions)
    assert known._base is versions and not known._over  # nothing private
    known["r5"] = "v2"  # one endpoint changed since: one private entry
    assert known._base is versions and known._over == {"r5": "v2"}
    assert known.get("r5") == "v2" and known.get("r6") == "v1"


def test_differences_past_half_the_base_fold_into_a_private_dict() -> None:
    versions = {f"r{i}": "v1" for i in range(100)}
    known = KnownVersions()
    known.update_from(versions)
    for i in range(90):
        known[f"r{i}"] = "v2"
    assert known._base is not versions and len(known._over) == 100
    assert dict(known.items()) == {f"r{i}": ("v2" if i < 90 else "v1") for i in range(100)}
