"""Delta responses encoded once for many streams (xds/shared.py): every stream gets exactly the
bytes it would have encoded itself, whatever other streams sent before it."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryResponse

from tests.support.resources import eds_cluster, endpoints
from tests.unit.xds.test_machines import A_ENDPOINTS_CHANGED, BASE, DELTA, Ask, Check, Client, Push
from xds_server.resources import Built, ProxySnapshot, TypeUrl
from xds_server.xds import wire
from xds_server.xds.shared import SharedResponses

CDS, EDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT
CP = wire.control_plane("xds-server-test")


def protobuf_encoding(type_url: TypeUrl, nonce: str, changed: list[Built], removed: list[str], version: str,
                      control_plane_id: str) -> bytes:
    """The same response built as a protobuf message and serialized by the protobuf runtime."""
    msg = DeltaDiscoveryResponse(type_url=type_url, nonce=nonce, system_version_info=version,
                                 removed_resources=removed)
    msg.control_plane.identifier = control_plane_id
    for b in changed:
        r = msg.resources.add(name=b.name, version=b.version)
        r.resource.type_url = b.type_url
        r.resource.value = b.payload
    return msg.SerializeToString(deterministic=True)


CASES: list[tuple[TypeUrl, list[Built], list[str]]] = [
    (EDS, [endpoints("a", ("10.0.0.1", 80))], []),
    (EDS, [endpoints("a", ("10.0.0.1", 80)), endpoints("b", ("10.0.0.2", 80))], []),
    (CDS, [eds_cluster("a")], ["gone", "old"]),
    (CDS, [], ["gone"]),
    (CDS, [eds_cluster(f"c{i}") for i in range(40)], []),  # more than max_changed: encoded by the stream
]


@pytest.mark.parametrize(("type_url", "changed", "removed"), CASES)
def test_each_stream_gets_the_bytes_it_would_have_encoded(type_url: TypeUrl, changed: list[Built],
                                                          removed: list[str]) -> None:
    shared = SharedResponses()
    for nonce in ("1", "27", "1000000"):  # the first call encodes, the others reuse
        got = shared.delta_response(type_url, nonce, changed, removed, "v1", CP)
        assert got == wire.delta_response(type_url, nonce, (b.delta_entry for b in changed), removed, "v1", CP)
        assert got == protobuf_encoding(type_url, nonce, changed, removed, "v1", "xds-server-test")
    if len(changed) <= shared.max_changed:
        assert (shared.misses, shared.hits, len(shared)) == (1, 2, 1)
    else:
        assert (shared.misses, shared.hits, len(shared)) == (0, 0, 0)


def test_what_differs_is_never_shared() -> None:
    shared = SharedResponses()
    a, a2 = endpoints("a", ("10.0.0.1", 80)), endpoints("a", ("10.0.0.9", 80))
    variants = [
        (EDS, [a], [], "v1", CP),
        (EDS, [a2], [], "v1", CP),  # another resource of the same name
        (EDS, [a], [], "v2", CP),  # another system version
        (EDS, [a], ["x"], "v1", CP),  # something removed too
        (EDS, [a], [], "v1", wire.control_plane("other")),  # another server identity
        (CDS, [eds_cluster("a")], [], "v1", CP),  # another type
    ]
    seen = set()
    for type_url, changed, removed, version, cp in variants:
        got = shared.delta_response(type_url, "5", changed, removed, version, cp)
        assert got == wire.delta_response(type_url, "5", (b.delta_entry for b in changed), removed, version, cp)
        seen.add(got)
    assert len(seen) == len(variants) and shared.hits == 0


def test_it_keeps_a_bounded_number_of_small_responses() -> None:
    shared = SharedResponses(max_entries=3, max_bytes=2_000)
    small = [endpoints(f"s{i}", ("10.0.0.1", 80)) for i in range(5)]
    for b in small:
        shared.delta_response(EDS, "1", [b], [], "v", CP)
    assert len(shared) == 3  # the oldest went
    shared.delta_response(EDS, "2", [small[-1]], [], "v", CP)
    assert shared.hits == 1
    shared.delta_response(EDS, "2", [small[0]], [], "v", CP)
    assert shared.hits == 1  # evicted: encoded again
    big = Built(EDS, "big", b"x" * 5_000)
    assert shared.delta_response(EDS, "3", [big], [], "v", CP) == wire.delta_response(
        EDS, "3", [big.delta_entry], [], "v", CP)
    assert all(big not in key[3] for key in shared._parts)  # larger than max_bytes: not kept
    nothing = SharedResponses(max_entries=0)
    nothing.delta_response(EDS, "1", small[:1], [], "v", CP)
    assert len(nothing) == 0


def _recording(c: Client) -> list[bytes]:
    """Every payload the client's machine returns, raw, in order."""
    raw: list[bytes] = []
    machine = c.machine
    on_request, on_snapshot = machine.on_request, machine.on_snapshot

    def request(req: Any, snapshot: ProxySnapshot) -> list[Any]:
        out = on_request(req, snapshot)
        raw.extend(o.payload for o in out)
        return out

    def snapshot(snap: ProxySnapshot) -> list[Any]:
        out = on_snapshot(snap)
        raw.extend(o.payload for o in out)
        return out

    machine.on_request = request  # type: ignore[method-assign]
    machine.on_snapshot = snapshot  # type: ignore[method-assign]
    return raw


def _lockstep(start: ProxySnapshot, steps: tuple[Ask | Push | Check, ...], shared: SharedResponses) -> None:
    """Two streams sharing `shared` (with every other row's streams) and one that keeps nothing, in step."""
    clients = [Client("delta", start) for _ in range(3)]
    clients[0].machine.shared = shared
    clients[1].machine.shared = shared
    clients[2].machine.shared = SharedResponses(max_entries=0)
    raws = [_recording(c) for c in clients]
    for i, step in enumerate(steps):
        if isinstance(step, Check):
            continue
        for c in clients:
            c.ask(step) if isinstance(step, Ask) else c.push(step)
        assert raws[0] == raws[1] == raws[2], f"step {i} ({step})"


def test_every_machine_rule_sends_the_same_bytes_with_responses_shared_across_streams() -> None:
    shared = SharedResponses()
    for row in DELTA:
        start, steps = row.values if hasattr(row, "values") else row
        _lockstep(start, steps, shared)
    assert shared.hits > 0


def test_machine_payloads_are_byte_identical_with_and_without_sharing() -> None:
    """A push of one changed endpoint to many streams: one encoding, reused by the others."""
    shared = SharedResponses()
    streams = [Client("delta", BASE) for _ in range(5)]
    alone = Client("delta", BASE)
    alone.machine.shared = SharedResponses(max_entries=0)
    for c in streams:
        c.machine.shared = shared
    for c in [*streams, alone]:
        c.ask(Ask(CDS))
        c.ask(Ask(CDS, reply="ack"))
        c.ask(Ask(EDS, names=("a", "b")))
        c.ask(Ask(EDS, reply="ack"))
    expected = [o.payload for o in alone.machine.on_snapshot(A_ENDPOINTS_CHANGED)]
    assert len(expected) == 1
    for c in streams:
        assert [o.payload for o in c.machine.on_snapshot(A_ENDPOINTS_CHANGED)] == expected
    assert shared.hits == len(streams) - 1
