"""The stream machine interface, and the bookkeeping the SotW and delta machines share.

A machine is one xDS stream's protocol state, sans-IO: it takes requests and snapshots and returns
the encoded responses to write; the gRPC pump (services.py) only moves messages. `MachineBase`
owns what both protocol variants do the same way (the xds_protocol.rst rules that do not depend on
the variant, and istiod's `ShouldRespond` bookkeeping in pilot/pkg/xds/ads.go and delta.go):

- a request's type is checked (empty or on the wrong per-type service: the stream ends; unknown:
  counted and ignored);
- a request that echoes the nonce of the last response is that response's ACK or NACK; one that
  echoes an older nonce is stale (counted);
- an ACK or NACK is recorded per type (syncz, CSDS, metrics); every response gets a new nonce and
  is recorded as sent and pending;
- a changed cluster makes its endpoints go out again, even unchanged: Envoy re-warms the cluster
  and waits for them (envoy #13009);
- pushes go CDS -> EDS -> LDS -> RDS, and cluster removals wait while a listener or route change is
  still unacknowledged (make before break).

What differs, the subclasses supply: how a request changes the subscription, what a response holds
(full state or only what changed), and how a type knows it owes the client something.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from xds_server.resources import PUSH_ORDER, SERVED_TYPES, WILDCARD_TYPES, Built, ProxySnapshot, TypeUrl
from xds_server.xds.observer import NullObserver, StreamObserver
from xds_server.xds.shared import SharedResponses
from xds_server.xds.status import Nack, TypeStatus
from xds_server.xds.subscription import NameSets, Subscription

_SERVED = {t.value: t for t in SERVED_TYPES}  # a dict lookup, not an Enum call per request
_ROUTE_TYPES = (TypeUrl.LISTENER, TypeUrl.ROUTE)


class StreamError(Exception):
    """The stream must end with this gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True, frozen=True)
class Outgoing:
    type_url: TypeUrl
    payload: bytes
    nonce: str
    version: str
    resources: int
    removed: int = 0


class TypeState:
    """One type on one stream."""

    __slots__ = ("deferred", "pending", "status", "sub")

    def __init__(self, type_url: TypeUrl, name_sets: NameSets) -> None:
        self.sub = Subscription(type_url in WILDCARD_TYPES, name_sets)
        self.status = TypeStatus()
        self.pending = ""  # nonce of a response not yet ACKed or NACKed
        self.deferred = False  # CDS removals held back until route changes are ACKed


S = TypeVar("S", bound=TypeState)


class MachineBase(ABC, Generic[S]):
    """One stream: `on_request` and `on_snapshot` in, `Outgoing` responses (in order) out.

    Calls never overlap (one event loop thread) and never block: no I/O, no await.
    """

    def __init__(self, only_type: TypeUrl | None = None, observer: StreamObserver | None = None,
                 clock: Callable[[], float] = time.time, *, control_plane: bytes = b"",
                 name_sets: NameSets | None = None, shared: SharedResponses | None = None) -> None:
        self.only_type = only_type  # set on a per-type service (CDS, EDS, ...): no other type is served
        self.observer: StreamObserver = observer or NullObserver()
        self.clock = clock
        self.control_plane = control_plane  # the encoded ControlPlane every response carries (wire.py)
        # Subscription name sets are shared with the server's other streams (subscription.py).
        self.name_sets = name_sets if name_sets is not None else NameSets()
        # So are the encoded responses of a change that many streams send (shared.py).
        self.shared = shared if shared is not None else SharedResponses()
        self.types: dict[TypeUrl, S] = {}
        self._nonce = 0

    # ------------------------------------------------------------------ the interface
    @abstractmethod
    def on_request(self, req: Any, snapshot: ProxySnapshot) -> list[Outgoing]:
        """A request arrived (the variant's DiscoveryRequest or DeltaDiscoveryRequest): what to send.

        Raises StreamError when the stream must end.
        """

    def on_snapshot(self, snapshot: ProxySnapshot) -> list[Outgoing]:
        """The proxy's config changed: what to send, in push order."""
        out: list[Outgoing] = []
        for type_url in PUSH_ORDER:
            st = self.types.get(type_url)
            if st is not None and not self._settled(st, snapshot.get(type_url)):
                out.extend(self._respond(type_url, st, snapshot))
        return out

    def statuses(self) -> dict[str, TypeStatus]:
        """Per type requested, in push order: what was sent, ACKed, NACKed (syncz, CSDS)."""
        return {t.value: st.status for t, st in sorted(self.types.items(), key=lambda kv: PUSH_ORDER.index(kv[0])
                                                        if kv[0] in PUSH_ORDER else 99)}

    # ------------------------------------------------------------------ what each variant supplies
    @abstractmethod
    def _new_state(self, type_url: TypeUrl, req: Any) -> S:
        """The state of a type the stream requests for the first time."""

    @abstractmethod
    def _respond(self, type_url: TypeUrl, st: S, snapshot: ProxySnapshot, *, initial: bool = False) -> list[Outgoing]:
        """The response this type owes the client now, if any (`initial`: the type's first request)."""

    @abstractmethod
    def _would_send(self, type_url: TypeUrl, st: S, snapshot: ProxySnapshot) -> bool:
        """Whether a response for this type now would carry something the client does not have."""

    @abstractmethod
    def _resend_endpoints(self, eds: S, clusters: Sequence[Built]) -> None:
        """These clusters changed: make `eds` send their endpoints again, even unchanged."""

    def _settled(self, st: S, resources: Mapping[str, Built]) -> bool:
        """True when the client already has `resources` for this type and nothing else is owed.

        Most wake-ups change one type (a Pod change: EDS), and most requests are ACKs: this lets the
        others be skipped without a diff. The base class knows no such case.
        """
        return False

    # ------------------------------------------------------------------ requests
    def _accept(self, req: Any) -> tuple[TypeUrl, S, bool] | None:
        """(type, its state, whether this is the type's first request), or None for a type not served."""
        type_url = self._check_type(req.type_url)
        if type_url is None:
            return None
        self.observer.request(type_url)
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = self._new_state(type_url, req)
            return type_url, st, True
        return type_url, st, False

    def _check_type(self, type_url: str) -> TypeUrl | None:
        """The served TypeUrl, None for an unknown type (counted, stream kept), or raise."""
        if not type_url:
            if self.only_type is not None:
                return self.only_type
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "request has an empty type_url")
        if self.only_type is not None and type_url != self.only_type:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"type_url {type_url} on the {self.only_type.rsplit('.', 1)[-1]} service")
        served = _SERVED.get(type_url)
        if served is None:
            self.observer.unknown_type(type_url)
        return served

    def _is_reply(self, type_url: TypeUrl, st: S, nonce: str) -> bool:
        """Whether a request echoing `nonce` answers the type's last response; an older nonce is counted stale."""
        if nonce and nonce == st.status.sent_nonce:
            return True
        if nonce:
            self.observer.stale_nonce(type_url)
        return False

    def _record_reply(self, type_url: TypeUrl, st: S, req: Any, acked_version: str) -> bool:
        """Record the ACK or NACK (error_detail set) of the last response; True for a NACK.

        A NACK keeps the last ACKed version: the client still runs it (xds_protocol.rst, "ACK/NACK").
        """
        st.pending = ""
        status = st.status
        now = self.clock()
        if req.HasField("error_detail"):
            nack = Nack(req.response_nonce, status.sent_version, req.error_detail.message, now)
            status.nack = nack
            status.nacks += 1
            self.observer.nack(type_url, nack)
            return True
        status.acked_version = acked_version
        status.acked_nonce = req.response_nonce
        status.acked_at = now
        status.acks += 1
        status.nack = None
        self.observer.ack(type_url)
        return False

    # ------------------------------------------------------------------ responses
    def _next_nonce(self) -> str:
        """Unique on the stream, across types."""
        self._nonce += 1
        return str(self._nonce)

    def _record_sent(self, type_url: TypeUrl, st: S, nonce: str, payload: bytes, version: str, count: int,
                     resource_versions: Mapping[str, str], removed: int = 0) -> list[Outgoing]:
        """Record a response as sent and pending its ACK; the one-element list to send."""
        st.pending = nonce
        status = st.status
        status.sent_version = version
        status.sent_nonce = nonce
        status.sent_at = self.clock()
        status.sent_count = count
        status.responses += 1
        status.resource_versions = resource_versions
        return [Outgoing(type_url, payload, nonce, version, count, removed)]

    def _clusters_changed(self, changed: Sequence[Built]) -> None:
        """A CDS response carries these new or changed clusters: their endpoints must follow."""
        eds = self.types.get(TypeUrl.ENDPOINT)
        if eds is not None and changed:
            self._resend_endpoints(eds, changed)

    # ------------------------------------------------------------------ make before break
    def _routes_will_change(self, snapshot: ProxySnapshot) -> bool:
        """A listener or route change is in flight or about to go out: cluster removals must wait."""
        for type_url in _ROUTE_TYPES:
            st = self.types.get(type_url)
            if st is None:
                continue
            if st.pending or self._would_send(type_url, st, snapshot):
                return True
        return False

    def _release_deferred(self, snapshot: ProxySnapshot) -> list[Outgoing]:
        """Send the cluster removals held back, once no listener/route change is in flight."""
        cds = self.types.get(TypeUrl.CLUSTER)
        if cds is None or not cds.deferred or self._routes_in_flight():
            return []
        return self._respond(TypeUrl.CLUSTER, cds, snapshot)

    def _routes_in_flight(self) -> bool:
        return any(st.pending for t, st in self.types.items() if t in _ROUTE_TYPES)


def eds_refs(changed: Sequence[Built]) -> set[str]:
    """EDS names of clusters that changed: Envoy re-warms them and needs their endpoints again."""
    out: set[str] = set()
    for built in changed:
        out.update(built.refs)
    return out
