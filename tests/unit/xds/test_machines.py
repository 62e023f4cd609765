"""The SotW and delta stream machines, driven directly (sans-IO, no gRPC): one row per protocol rule.

Each row is named after the behaviour it pins, follows Envoy's xds_protocol.rst (and what Envoy 1.40
does, as the gRPC-level tests in tests/integration/test_ads_conformance.py see it), and is a script
of requests and pushes, each with exactly the responses it must produce: type, resource names,
removed names. A client stand-in plays Envoy's part: it echoes the nonce and version of the last
response of a type for an ACK or NACK, the one before for a stale nonce, and on a SotW NACK keeps
the version it last accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3.discovery_pb2 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)

from tests.support.resources import eds_cluster, endpoints, http_listener, route
from xds_server.resources import Built, ProxySnapshot, ResourceMap, TypeUrl
from xds_server.xds.delta import DeltaMachine
from xds_server.xds.machine import MachineBase, StreamError
from xds_server.xds.sotw import SotwMachine
from xds_server.xds.status import Nack, SyncState

CDS, EDS, LDS, RDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE

# ------------------------------------------------------------------ resources and worlds
A, B, C = eds_cluster("a"), eds_cluster("b"), eds_cluster("c")
A2 = eds_cluster("a", connect_timeout_s=9)  # cluster a's settings changed
B2 = eds_cluster("b", connect_timeout_s=9)
EA, EB, EC = endpoints("a", ("10.0.0.1", 80)), endpoints("b", ("10.0.0.2", 80)), endpoints("c", ("10.0.0.3", 80))
EA2 = endpoints("a", ("10.0.0.9", 80))  # cluster a's endpoints changed
L1, L2 = http_listener("l1", 8001, "r1"), http_listener("l2", 8002, "r2")
L1B = http_listener("l1", 8011, "r1")  # listener l1 changed
R1, R2 = route("r1", "a"), route("r2", "b")
R1B = route("r1", "b")  # route r1 now goes to cluster b
ALL = (A, B, C, A2, B2, EA, EB, EC, EA2, L1, L2, L1B, R1, R2, R1B)
NAME_OF = {(b.type_url, b.payload): b.name for b in ALL}


def world(*builts: Built) -> ProxySnapshot:
    """A proxy's snapshot as the push side builds it: one shared ResourceMap per type."""
    by_type: dict[TypeUrl, list[Built]] = {t: [] for t in (CDS, EDS, LDS, RDS)}
    for b in builts:
        by_type[b.type_url].append(b)
    return ProxySnapshot({t: ResourceMap(bs) for t, bs in by_type.items()})


EMPTY = world()
BASE = world(A, B, EA, EB, L1, R1)
A_CHANGED = world(A2, B, EA, EB, L1, R1)  # cluster a changed, its endpoints did not
A_ENDPOINTS_CHANGED = world(A, B, EA2, EB, L1, R1)
B_REMOVED = world(A, EA, L1, R1)
C_ADDED = world(A, B, C, EA, EB, EC, L1, R1)
EVERYTHING_CHANGED = world(A2, B, C, EA2, EB, EC, L1B, L2, R1B, R2)
# the route moves from cluster a to b and a goes away, in one push
ROUTE_MOVED_A_REMOVED = world(B, EB, L1, R1B)


# ------------------------------------------------------------------ the script language
@dataclass(frozen=True)
class Sent:
    """One response: its type, the names of the resources in it, and (delta) the names removed."""

    type: TypeUrl
    names: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ask:
    """A request. `reply`: "new" (no nonce: a type's first request, or a client that lost its
    nonces), "ack", "nack" or "stale" (of the type's last response, or the one before for stale).
    SotW: `names` is the full name list (None: the list of the type's last request). Delta: `names`
    are subscribed, `unsubscribe` unsubscribed, `held` is initial_resource_versions."""

    type: str
    names: tuple[str, ...] | None = None
    reply: str = "new"
    unsubscribe: tuple[str, ...] = ()
    held: Mapping[str, str] = field(default_factory=dict)
    expect: tuple[Sent, ...] = ()


@dataclass(frozen=True)
class Push:
    """The proxy's snapshot changes."""

    snapshot: ProxySnapshot
    expect: tuple[Sent, ...] = ()


@dataclass(frozen=True)
class Check:
    """What the stream recorded so far (the syncz/CSDS status, the observer's counts)."""

    holds: Callable[[Client], bool]
    what: str


class Recorder:
    """A StreamObserver that counts what the machine reports."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def request(self, type_url: str) -> None:
        self.events.append(("request", type_url))

    def ack(self, type_url: str) -> None:
        self.events.append(("ack", type_url))

    def nack(self, type_url: str, nack: Nack) -> None:
        self.events.append(("nack", type_url))

    def stale_nonce(self, type_url: str) -> None:
        self.events.append(("stale", type_url))

    def unknown_type(self, type_url: str) -> None:
        self.events.append(("unknown", type_url))

    def count(self, event: str) -> int:
        return sum(1 for e, _ in self.events if e == event)


class Client:
    """Envoy's side of one stream, against a machine, with the snapshot it is currently served."""

    def __init__(self, variant: str, snapshot: ProxySnapshot, only: TypeUrl | None = None) -> None:
        self.delta = variant == "delta"
        self.observer = Recorder()
        cls = DeltaMachine if self.delta else SotwMachine
        self.machine: MachineBase[Any] = cls(only, observer=self.observer, clock=lambda: 1.0)
        self.snapshot = snapshot
        self.responses: dict[str, list[Any]] = {}  # type -> decoded responses, oldest first
        self.accepted: dict[str, str] = {}  # SotW: type -> version last ACKed
        self.names: dict[str, tuple[str, ...]] = {}  # SotW: type -> names of the last request
        self.nonces: list[str] = []

    def ask(self, step: Ask) -> list[Sent]:
        last = self.responses.get(step.type, [])
        nonce = ""
        if step.reply in ("ack", "nack"):
            nonce = last[-1].nonce
        elif step.reply == "stale":
            nonce = last[-2].nonce
        if self.delta:
            req: Any = DeltaDiscoveryRequest(type_url=step.type, response_nonce=nonce,
                                             resource_names_subscribe=step.names or (),
                                             resource_names_unsubscribe=step.unsubscribe,
                                             initial_resource_versions=step.held)
        else:
            names = step.names if step.names is not None else self.names.get(step.type, ())
            self.names[step.type] = names
            version = last[-1].version_info if step.reply == "ack" else self.accepted.get(step.type, "")
            req = DiscoveryRequest(type_url=step.type, response_nonce=nonce, version_info=version,
                                   resource_names=names)
            if step.reply == "ack":
                self.accepted[step.type] = version
        if step.reply == "nack":
            req.error_detail.message = "rejected by the test"
        return self._decode(self.machine.on_request(req, self.snapshot))

    def push(self, step: Push) -> list[Sent]:
        self.snapshot = step.snapshot
        return self._decode(self.machine.on_snapshot(step.snapshot))

    def _decode(self, outgoing: list[Any]) -> list[Sent]:
        out = []
        for o in outgoing:
            if self.delta:
                msg = DeltaDiscoveryResponse.FromString(o.payload)
                names = tuple(sorted(r.name for r in msg.resources))
                removed = tuple(msg.removed_resources)
            else:
                msg = DiscoveryResponse.FromString(o.payload)
                names = tuple(sorted(NAME_OF[(TypeUrl(r.type_url), r.value)] for r in msg.resources))
                removed = ()
            assert msg.type_url == o.type_url and msg.nonce == o.nonce
            self.responses.setdefault(msg.type_url, []).append(msg)
            self.nonces.append(msg.nonce)
            out.append(Sent(TypeUrl(msg.type_url), names, removed))
        return out

    def status(self, type_url: TypeUrl) -> SyncState:
        return self.machine.types[type_url].status.state


def run(variant: str, start: ProxySnapshot, steps: tuple[Ask | Push | Check, ...]) -> Client:
    client = Client(variant, start)
    for i, step in enumerate(steps):
        if isinstance(step, Check):
            assert step.holds(client), f"step {i}: {step.what}"
            continue
        got = client.ask(step) if isinstance(step, Ask) else client.push(step)
        assert got == list(step.expect), f"step {i} ({step}): sent {got}"
    return client


def synced(type_url: TypeUrl) -> Check:
    return Check(lambda c: c.status(type_url) is SyncState.SYNCED, f"{type_url} SYNCED")


def nacked(type_url: TypeUrl) -> Check:
    return Check(lambda c: c.status(type_url) is SyncState.ERROR and c.observer.count("nack") == 1,
                 f"{type_url} ERROR after one NACK")


def counted(event: str, n: int) -> Check:
    return Check(lambda c: c.observer.count(event) == n, f"{n} {event} event(s)")


# Envoy's start: CDS, the EDS names the clusters need, LDS, the RDS names the listeners need; each ACKed.
def started() -> tuple[Ask | Push | Check, ...]:
    return (
        Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
        Ask(EDS, ("a", "b"), expect=(Sent(EDS, ("a", "b")),)),
        Ask(CDS, reply="ack"),
        Ask(EDS, reply="ack"),
        Ask(LDS, expect=(Sent(LDS, ("l1",)),)),
        Ask(RDS, ("r1",), expect=(Sent(RDS, ("r1",)),)),
        Ask(LDS, reply="ack"),
        Ask(RDS, reply="ack"),
    )


# ------------------------------------------------------------------ rules both variants follow
BOTH: list[Any] = [
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),),
                 id="first CDS request with no names is legacy wildcard: every cluster"),
    pytest.param(EMPTY, (Ask(CDS, expect=(Sent(CDS),)), Ask(LDS, expect=(Sent(LDS),))),
                 id="empty world: first CDS and LDS are still answered, empty, so Envoy does not wait"),
    pytest.param(BASE, (*started(), synced(CDS), synced(EDS), synced(LDS), synced(RDS), counted("ack", 4)),
                 id="an ACK (current nonce, same names) gets no response and marks the type SYNCED"),
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="nack"), nacked(CDS),
                        Push(BASE)),
                 id="a NACK is recorded, never answered, and the same content is not pushed again"),
    pytest.param(BASE, (Ask("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"),
                        counted("unknown", 1),
                        Ask(CDS, expect=(Sent(CDS, ("a", "b")),))),
                 id="an unknown type is counted and ignored, and the stream goes on"),
]


# ------------------------------------------------------------------ state of the world
SOTW: list[Any] = [
    *BOTH,
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="nack"),
                        Push(A_CHANGED, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="ack"), synced(CDS)),
                 id="after a NACK, new content is pushed, and its ACK clears the error"),
    pytest.param(BASE, (*started(),
                        Push(EVERYTHING_CHANGED, expect=(Sent(CDS, ("a", "b", "c")), Sent(EDS, ("a", "b")),
                                                         Sent(LDS, ("l1", "l2")), Sent(RDS, ("r1",))))),
                 id="a push that changes every type goes out CDS, EDS, LDS, RDS, each with its full state"),
    pytest.param(BASE, (*started(), Push(A_ENDPOINTS_CHANGED, expect=(Sent(EDS, ("a", "b")),))),
                 id="a push that changes only endpoints sends only EDS"),
    pytest.param(BASE, (*started(), Push(A_CHANGED, expect=(Sent(CDS, ("a", "b")), Sent(EDS, ("a", "b"))))),
                 id="a changed cluster gets its endpoints again, unchanged, as Envoy re-warms it"),
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="ack"),
                        Push(B_REMOVED, expect=(Sent(CDS, ("a",)),))),
                 id="a removed cluster is dropped from the next full CDS state"),
    pytest.param(BASE, (Ask(EDS, ("a", "b"), expect=(Sent(EDS, ("a", "b")),)),
                        Push(A_ENDPOINTS_CHANGED, expect=(Sent(EDS, ("a", "b")),)),
                        Ask(EDS, reply="stale"), counted("stale", 1)),
                 id="a request echoing an older nonce is stale: counted, no response"),
    pytest.param(BASE, (Ask(CDS, ("*", "a"), expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, ("a",), reply="ack", expect=(Sent(CDS, ("a",)),)),
                        Ask(CDS, (), reply="ack", expect=(Sent(CDS),)),
                        Ask(CDS, reply="ack"),
                        Push(C_ADDED)),
                 id="explicit wildcard plus a name, then the name alone, then none: the wildcard does not come back"),
    pytest.param(BASE, (Ask(EDS, ("a", "b"), expect=(Sent(EDS, ("a", "b")),)),
                        Ask(EDS, ("a",), reply="ack"),
                        Ask(EDS, ("a", "b"), reply="ack", expect=(Sent(EDS, ("a", "b")),))),
                 id="named type: dropping a name needs no response; naming it again re-sends it unchanged"),
    pytest.param(BASE, (Ask(EDS, ("zz",)),),
                 id="a first request naming only resources that do not exist gets no response"),
    pytest.param(BASE, (Ask(EDS, ("a", "c"), expect=(Sent(EDS, ("a",)),)),
                        Push(C_ADDED, expect=(Sent(EDS, ("a", "c")),))),
                 id="a named resource that does not exist yet is pushed when it appears, without a new request"),
    pytest.param(BASE, (Ask(EDS, ("a",), expect=(Sent(EDS, ("a",)),)),
                        Ask(EDS, ("a",), reply="new", expect=(Sent(EDS, ("a",)),))),
                 id="a request with no nonce for a known type (a client that lost its nonces) is answered"),
    pytest.param(BASE, (Ask(EDS, ("a",), expect=(Sent(EDS, ("a",)),)),
                        Ask(EDS, ("a", "b"), reply="nack", expect=(Sent(EDS, ("a", "b")),))),
                 id="a NACK that adds names is answered for the new names"),
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="nack"),
                        Check(lambda c: c.machine.types[CDS].status.acked_version == "", "NACK keeps the old version"),
                        Ask(CDS, reply="new", expect=(Sent(CDS, ("a", "b")),))),
                 id="a NACK keeps the last ACKed version; a reconnect-style request still gets current state"),
    pytest.param(BASE, (*started(),
                        # CDS goes out with the same clusters under another version: the held cluster
                        # keeps its place in a view that is no longer the snapshot's own mapping.
                        Push(ROUTE_MOVED_A_REMOVED, expect=(Sent(CDS, ("a", "b")), Sent(RDS, ("r1",)))),
                        Ask(CDS, reply="ack"),
                        Ask(RDS, reply="ack", expect=(Sent(CDS, ("b",)),))),
                 id="make before break: a removed cluster stays until the route change away from it is ACKed"),
    pytest.param(BASE, (Ask(LDS, ("l1",), expect=(Sent(LDS, ("l1",)),)),
                        Ask(LDS, reply="ack"),
                        Push(world(A, B, EA, EB, L1, L2, R1))),
                 id="a client naming its listeners gets exactly those; other listeners changing push nothing"),
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)), Ask(CDS, reply="ack"),
                        Ask(LDS, ("*", "l1"), expect=(Sent(LDS, ("l1",)),)), Ask(LDS, reply="ack"),
                        Ask(RDS, ("r1",), expect=(Sent(RDS, ("r1",)),)), Ask(RDS, reply="ack"),
                        Push(B_REMOVED, expect=(Sent(CDS, ("a",)),))),
                 id="with no listener or route change in flight a removed cluster goes at once (wildcard plus names)"),
]

# ------------------------------------------------------------------ incremental
DELTA: list[Any] = [
    *BOTH,
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="nack"),
                        Push(A_CHANGED, expect=(Sent(CDS, ("a",)),)),
                        Ask(CDS, reply="ack"), synced(CDS)),
                 id="after a NACK, new content is pushed, and its ACK clears the error"),
    pytest.param(BASE, (*started(),
                        Push(EVERYTHING_CHANGED, expect=(Sent(CDS, ("a", "c")), Sent(EDS, ("a",)),
                                                         Sent(LDS, ("l1", "l2")), Sent(RDS, ("r1",))))),
                 id="a push that changes every type goes out CDS, EDS, LDS, RDS, each with only what changed"),
    pytest.param(BASE, (*started(), Push(A_ENDPOINTS_CHANGED, expect=(Sent(EDS, ("a",)),))),
                 id="a push that changes only endpoints sends only those endpoints"),
    pytest.param(BASE, (*started(), Push(A_CHANGED, expect=(Sent(CDS, ("a",)), Sent(EDS, ("a",))))),
                 id="a changed cluster gets its endpoints again, unchanged, as Envoy re-warms it"),
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="ack"),
                        Push(B_REMOVED, expect=(Sent(CDS, removed=("b",)),))),
                 id="a removed cluster is named in removed_resources"),
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="ack"),
                        Push(A_CHANGED, expect=(Sent(CDS, ("a",)),))),
                 id="one changed cluster sends that cluster only"),
    pytest.param(BASE, (Ask(EDS, ("a",), expect=(Sent(EDS, ("a",)),)),
                        Push(A_ENDPOINTS_CHANGED, expect=(Sent(EDS, ("a",)),)),
                        Ask(EDS, ("b",), reply="stale", expect=(Sent(EDS, ("b",)),)),
                        counted("stale", 1)),
                 id="a stale nonce is counted, and the subscription it carries still applies"),
    pytest.param(BASE, (Ask(CDS, held={"a": A.version, "b": "old", "gone": "v1"},
                            expect=(Sent(CDS, ("b",), removed=("gone",)),)),),
                 id="initial_resource_versions: only what differs is sent, what no longer exists is removed"),
    pytest.param(BASE, (Ask(CDS, held={"a": A.version, "b": B.version}, expect=(Sent(CDS),)),
                        Ask(EDS, ("a", "b"), held={"a": EA.version, "b": EB.version})),
                 id="initial_resource_versions all current: no resource bodies are sent again"),
    pytest.param(BASE, (Ask(EDS, ("a", "b"), expect=(Sent(EDS, ("a", "b")),)),
                        Ask(EDS, reply="ack", unsubscribe=("a",)),
                        Push(A_ENDPOINTS_CHANGED)),
                 id="unsubscribing a named resource needs no response, and its changes are no longer pushed"),
    pytest.param(BASE, (Ask(CDS, ("*", "a"), expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="ack", unsubscribe=("a",), expect=(Sent(CDS, ("a",)),))),
                 id="wildcard plus a name: unsubscribing the name answers with it while the wildcard holds it"),
    pytest.param(BASE, (Ask(CDS, ("*", "zz"), expect=(Sent(CDS, ("a", "b"), removed=("zz",)),)),
                        Ask(CDS, reply="ack", unsubscribe=("zz",), expect=(Sent(CDS, removed=("zz",)),))),
                 id="wildcard plus a name: unsubscribing a name the wildcard does not hold answers it removed"),
    pytest.param(BASE, (Ask(CDS, ("*", "a"), expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, unsubscribe=("*",), reply="ack", expect=(Sent(CDS, removed=("b",)),)),
                        Ask(CDS, reply="ack"),
                        Push(world(A2, B2, EA, EB, L1, R1), expect=(Sent(CDS, ("a",)),))),
                 id="unsubscribing the wildcard keeps only the named: what only it brought is removed"),
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, ("a",), reply="ack", expect=(Sent(CDS, ("a",)),)),
                        Ask(CDS, reply="ack"),
                        Push(C_ADDED, expect=(Sent(CDS, ("c",)),))),
                 id="legacy wildcard survives a later named subscription"),
    pytest.param(BASE, (Ask(EDS, ("a",), expect=(Sent(EDS, ("a",)),)),
                        Ask(EDS, reply="ack", unsubscribe=("never",))),
                 id="unsubscribing a name never subscribed is no error and gets no response"),
    pytest.param(BASE, (Ask(EDS, ("a",), expect=(Sent(EDS, ("a",)),)),
                        Ask(EDS, ("a",), reply="ack", expect=(Sent(EDS, ("a",)),))),
                 id="subscribing again to a name already sent sends it again"),
    pytest.param(BASE, (Ask(EDS, ("c",), expect=(Sent(EDS, removed=("c",)),)),
                        Ask(EDS, reply="ack"),
                        Push(C_ADDED, expect=(Sent(EDS, ("c",)),))),
                 id="a subscribed name that does not exist is announced removed, then pushed when it appears"),
    pytest.param(BASE, (Ask(CDS, expect=(Sent(CDS, ("a", "b")),)),
                        Ask(CDS, reply="nack"),
                        Ask(CDS, ("c",), reply="new", expect=(Sent(CDS, removed=("c",)),))),
                 id="after a NACK, a new subscription is still answered (only with what is new)"),
    pytest.param(BASE, (*started(),
                        Push(ROUTE_MOVED_A_REMOVED, expect=(Sent(RDS, ("r1",)),)),
                        Ask(RDS, reply="ack", expect=(Sent(CDS, removed=("a",)),))),
                 id="make before break: a removed cluster stays until the route change away from it is ACKed"),
    pytest.param(BASE, (Ask(LDS, ("l1",), expect=(Sent(LDS, ("l1",)),)),
                        Ask(LDS, reply="ack"),
                        Push(world(A, B, EA, EB, L1, L2, R1))),
                 id="a client naming its listeners gets exactly those; other listeners changing push nothing"),
]


@pytest.mark.parametrize(("start", "steps"), SOTW)
def test_sotw_machine(start: ProxySnapshot, steps: tuple[Ask | Push | Check, ...]) -> None:
    run("sotw", start, steps)


@pytest.mark.parametrize(("start", "steps"), DELTA)
def test_delta_machine(start: ProxySnapshot, steps: tuple[Ask | Push | Check, ...]) -> None:
    run("delta", start, steps)


# ------------------------------------------------------------------ stream-level rules (both variants)
@pytest.mark.parametrize("variant", ["sotw", "delta"])
@pytest.mark.parametrize(("only", "type_url"), [
    pytest.param(None, "", id="an empty type_url on ADS"),
    pytest.param(CDS, EDS.value, id="a type on another type's service"),
])
def test_requests_that_end_the_stream_with_invalid_argument(variant: str, only: TypeUrl | None, type_url: str) -> None:
    client = Client(variant, BASE, only)
    with pytest.raises(StreamError) as e:
        client.ask(Ask(type_url))
    assert e.value.code is grpc.StatusCode.INVALID_ARGUMENT and e.value.message


@pytest.mark.parametrize("variant", ["sotw", "delta"])
def test_empty_type_url_on_a_per_type_service_means_that_type(variant: str) -> None:
    client = Client(variant, BASE, CDS)
    assert client.ask(Ask("")) == [Sent(CDS, ("a", "b"))]


@pytest.mark.parametrize("variant", ["sotw", "delta"])
def test_every_response_on_a_stream_has_a_new_nonce(variant: str) -> None:
    client = run(variant, BASE, started())
    assert len(client.push(Push(EVERYTHING_CHANGED))) == 4
    assert len(client.nonces) == 8 and len(set(client.nonces)) == 8, client.nonces
