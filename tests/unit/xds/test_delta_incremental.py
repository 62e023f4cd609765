"""The delta machine's O(changes) diff answers exactly what the full O(resources) diff answers.

Two machines see the same requests and snapshots; one is forced to diff everything every time
(its `synced` mapping is dropped before each step). Their responses (bytes, nonces included)
and what they believe each client holds must stay identical, whatever the sequence.
"""

from __future__ import annotations

from typing import Any

from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.resources import eds_cluster, endpoints, http_listener, route
from xds_server.resources import Built, ProxySnapshot, ResourceMap, TypeUrl, changes, digest
from xds_server.xds.delta import DeltaMachine, DeltaState

CDS, EDS, LDS, RDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE
NAMES = ("a", "b", "c", "d", "e")


def _world(seed: int) -> ProxySnapshot:
    """One of a few configurations: clusters/endpoints/listeners/routes come and go and change."""
    present = [n for i, n in enumerate(NAMES) if (seed >> i) & 1]
    port = 80 + seed % 3
    return ProxySnapshot({
        CDS: ResourceMap(eds_cluster(n, connect_timeout_s=1 + (seed % 2 if n == "a" else 0)) for n in present),
        EDS: ResourceMap(endpoints(n, ("10.0.0.1", port if n in "ab" else 80)) for n in present),
        LDS: ResourceMap(http_listener(f"l{n}", 8000 + i, f"r{n}") for i, n in enumerate(present[:2])),
        RDS: ResourceMap(route(f"r{n}", n, domains=(f"{n}{port}",)) for n in present[:2]),
    })


WORLDS = [_world(s) for s in range(32)]

step = st.one_of(
    st.tuples(st.just("snapshot"), st.integers(0, len(WORLDS) - 1)),
    st.tuples(st.just("request"), st.sampled_from([CDS, EDS, LDS, RDS]),
              st.lists(st.sampled_from([*NAMES, "*", "ra", "rb", "la", "zz"]), max_size=3),
              st.lists(st.sampled_from([*NAMES, "*", "ra", "rb", "zz"]), max_size=2),
              st.sampled_from(["ack", "nack", "stale", "none"])),
)


def _request(machine: DeltaMachine, type_url: TypeUrl, sub: list[str], unsub: list[str], kind: str,
             first: bool) -> DeltaDiscoveryRequest:
    req = DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=sub, resource_names_unsubscribe=unsub)
    state = machine.types.get(type_url)
    nonce = state.status.sent_nonce if state is not None else ""
    if kind in ("ack", "nack") and nonce:
        req.response_nonce = nonce
        if kind == "nack":
            req.error_detail.message = "rejected"
    elif kind == "stale":
        req.response_nonce = "999999"
    if first and kind == "none":
        req.initial_resource_versions["a"] = "old"
    return req


def _state(machine: DeltaMachine) -> dict[Any, Any]:
    out = {}
    for t, s in machine.types.items():
        assert isinstance(s, DeltaState)
        out[t] = (dict(s.known), s.sub.wildcard, sorted(s.sub.names), s.pending, s.deferred)
    return out


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=40), st.integers(0, len(WORLDS) - 1))
def test_incremental_diff_equals_full_diff(steps: list[Any], start: int) -> None:
    fast, full = DeltaMachine(clock=lambda: 0.0), DeltaMachine(clock=lambda: 0.0)
    snap = WORLDS[start]
    for s in steps:
        for t in full.types.values():
            t.synced = None  # type: ignore[attr-defined]
        if s[0] == "snapshot":
            snap = WORLDS[s[1]]
            a, b = fast.on_snapshot(snap), full.on_snapshot(snap)
        else:
            _, type_url, sub, unsub, kind = s
            first = type_url not in fast.types
            a = fast.on_request(_request(fast, type_url, sub, unsub, kind, first), snap)
            b = full.on_request(_request(full, type_url, sub, unsub, kind, first), snap)
        assert [(o.type_url, o.payload) for o in a] == [(o.type_url, o.payload) for o in b]
        assert _state(fast) == _state(full)


def test_layered_map_derives_version_and_refs_from_its_base() -> None:
    base = ResourceMap([eds_cluster("a"), eds_cluster("b")])
    extra = (eds_cluster("b", connect_timeout_s=5), eds_cluster("c"))
    layered = ResourceMap.layered(base, extra)
    plain = {**base, **{b.name: b for b in extra}}
    assert dict(layered) == plain
    assert digest(layered) == digest(plain) != digest(base)
    eds = ResourceMap([endpoints("a")])
    assert sorted(layered.unresolved(eds)) == [("b", "b"), ("c", "c")]


def test_changes_are_memoised_per_pair_and_match_a_plain_diff() -> None:
    old = ResourceMap([eds_cluster("a"), eds_cluster("b")])
    new = ResourceMap([old["a"], eds_cluster("b", connect_timeout_s=9), eds_cluster("c")])
    found = changes(old, new)
    assert [b.name for b in found[0]] == ["b", "c"] and found[1] == ()
    assert changes(old, new) is found
    assert changes(dict(new), dict(old)) == ((old["b"],), ("c",))


def test_resource_map_is_read_only() -> None:
    m = ResourceMap([eds_cluster("a")])
    for mutate in (lambda: m.__setitem__("x", m["a"]), lambda: m.pop("a"), lambda: m.update({}), m.clear):
        try:
            mutate()
        except TypeError:
            continue
        raise AssertionError("mutated")
    assert isinstance(m["a"], Built)
