"""What the SotW and delta stream machines share: outgoing messages, errors, per-type rules.

The machines are sans-IO (STYLE pattern 1): they take requests and snapshots and return the
bytes to write. The gRPC pump (services.py) only moves messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xds_server.resources import PUSH_ORDER, SERVED_TYPES, WILDCARD_TYPES, Built, ProxySnapshot, TypeUrl
from xds_server.xds.observer import NullObserver, StreamObserver
from xds_server.xds.status import TypeStatus
from xds_server.xds.subscription import Subscription

_SERVED = {t.value: t for t in SERVED_TYPES}  # a dict lookup, not an Enum call per request


class StreamError(Exception):
    """The stream must end with this gRPC status code name (e.g. INVALID_ARGUMENT)."""

    def __init__(self, code: str, message: str) -> None:
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

    __slots__ = ("deferred", "force", "pending", "status", "sub")

    def __init__(self, type_url: TypeUrl) -> None:
        self.sub = Subscription(allows_wildcard=type_url in WILDCARD_TYPES)
        self.status = TypeStatus()
        self.pending = ""  # nonce of a response not yet ACKed or NACKed
        self.force = False  # respond even if unchanged (EDS after a CDS change)
        self.deferred = False  # CDS removals held back until route changes are ACKed


class MachineBase:
    def __init__(self, only_type: TypeUrl | None = None, observer: StreamObserver | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.only_type = only_type
        self.observer: StreamObserver = observer or NullObserver()
        self.clock = clock
        self.types: dict[TypeUrl, TypeState] = {}
        self._nonce = 0

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    def _check_type(self, type_url: str) -> TypeUrl | None:
        """The served TypeUrl, None for an unknown type (counted, stream kept), or raise."""
        if not type_url:
            if self.only_type is not None:
                return self.only_type
            raise StreamError("INVALID_ARGUMENT", "request has an empty type_url")
        if self.only_type is not None and type_url != self.only_type:
            raise StreamError("INVALID_ARGUMENT",
                              f"type_url {type_url} on the {self.only_type.rsplit('.', 1)[-1]} service")
        served = _SERVED.get(type_url)
        if served is None:
            self.observer.unknown_type(type_url)
        return served

    def on_snapshot(self, snapshot: ProxySnapshot) -> list[Outgoing]:
        """The proxy's config changed: what to send, in push order."""
        out: list[Outgoing] = []
        for type_url in PUSH_ORDER:
            st = self.types.get(type_url)
            if st is not None and not self._settled(st, snapshot.get(type_url)):
                out.extend(self._respond(type_url, st, snapshot))
        return out

    def _settled(self, st: Any, resources: Any) -> bool:
        """True when the client already has `resources` for this type and nothing else is owed.

        Most wake-ups change one type (a Pod change: EDS), and most requests are ACKs: this lets the
        others be skipped without a diff. The base class knows no such case.
        """
        return False

    def _respond(self, type_url: TypeUrl, st: Any, snapshot: ProxySnapshot, **kw: Any) -> list[Outgoing]:
        raise NotImplementedError

    def _release_deferred(self, snapshot: ProxySnapshot) -> list[Outgoing]:
        """Send the cluster removals held back, once no listener/route change is in flight."""
        cds = self.types.get(TypeUrl.CLUSTER)
        if cds is None or not cds.deferred or self._routes_in_flight():
            return []
        return self._respond(TypeUrl.CLUSTER, cds, snapshot)

    def _routes_in_flight(self) -> bool:
        return any(st.pending for t, st in self.types.items() if t in (TypeUrl.LISTENER, TypeUrl.ROUTE))

    def statuses(self) -> dict[str, TypeStatus]:
        return {t.value: st.status for t, st in sorted(self.types.items(), key=lambda kv: PUSH_ORDER.index(kv[0])
                                                        if kv[0] in PUSH_ORDER else 99)}


def eds_refs(changed: list[Built]) -> set[str]:
    """EDS names of clusters that changed: Envoy re-warms them and needs their endpoints again."""
    out: set[str] = set()
    for built in changed:
        out.update(built.refs)
    return out
