"""The grpc.aio servicers: ADS (SotW and delta) and the per-type CDS/EDS/LDS/RDS services.

A thin pump around the sans-IO machines: read requests, apply wake-ups, write bytes.
Responses are pre-encoded bytes (see wire.py), so the response serializer is the identity.
Each stream keeps one pending wake-up flag: a slow Envoy only ever gets the newest state and
never delays the others. Responses are built on the stream's turn of one send budget for all
streams (budget.py, --max-bytes-in-flight), so memory does not depend on how fast clients read.

Admission, in order (docs/security.md): not serving or sources not synced ->
UNAVAILABLE; over the new-stream rate -> RESOURCE_EXHAUSTED; an undecodable first request or no
node.id -> INVALID_ARGUMENT; over mTLS, a certificate with no usable identity -> UNAUTHENTICATED,
one that may not claim the node -> PERMISSION_DENIED. Every refusal is counted (observer.refused),
as is every stream the server ends for a bad request later on (observer.stream_error).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeAlias

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from google.protobuf.message import DecodeError

from xds_server.resources import TypeUrl
from xds_server.xds import auth, wire
from xds_server.xds.admission import StreamAdmission
from xds_server.xds.budget import SendBudget
from xds_server.xds.cache import CacheEntry, SnapshotCache
from xds_server.xds.delta import DeltaMachine
from xds_server.xds.machine import MachineBase, Outgoing, StreamError
from xds_server.xds.observer import NullObserver, NullServerObserver, ServerObserver
from xds_server.xds.proxy import P, XdsProxy
from xds_server.xds.shared import SharedResponses
from xds_server.xds.sotw import SotwMachine
from xds_server.xds.subscription import NameSets
from xds_server.xds.watchdog import WriteWatchdog

log = logging.getLogger("xds_server.xds")
# grpc.aio's context is generic only in the stubs: a string, so that it is never subscripted at run time.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, bytes]"

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
PER_TYPE_SERVICES: dict[str, tuple[TypeUrl, str, str]] = {
    "envoy.service.cluster.v3.ClusterDiscoveryService": (TypeUrl.CLUSTER, "StreamClusters", "DeltaClusters"),
    "envoy.service.endpoint.v3.EndpointDiscoveryService": (TypeUrl.ENDPOINT, "StreamEndpoints", "DeltaEndpoints"),
    "envoy.service.listener.v3.ListenerDiscoveryService": (TypeUrl.LISTENER, "StreamListeners", "DeltaListeners"),
    "envoy.service.route.v3.RouteDiscoveryService": (TypeUrl.ROUTE, "StreamRoutes", "DeltaRoutes"),
}


@dataclass(frozen=True, slots=True)
class StreamSettings:
    # A write blocked longer than this ends the stream. Generous: a blocked stream delays no other (it only
    # keeps one response), while under CPU starvation short timeouts close healthy streams (a soak saw it).
    send_timeout: float = 60.0
    max_queued_requests: int = 64  # the reader stops reading (flow control) beyond this
    first_request_timeout: float = 30.0  # a stream that names no node by then is refused (DEADLINE_EXCEEDED)
    # Response bytes built and not yet written, over all streams (budget.py); 0: no bound.
    max_bytes_in_flight: int = 128 * 1024 * 1024


@dataclass(eq=False)
class Connection:
    """One xDS stream (istiod keys state by connection, not node: reconnects overlap)."""

    id: str
    proxy: XdsProxy
    peer: str
    kind: str  # "sotw" | "delta"
    method: str
    machine: MachineBase[Any]
    connected_at: float = field(default_factory=time.time)


class BadMessage(Exception):
    """A request that is not a valid protobuf of the method's type (raised by the deserializer)."""


# Refusals logged at warning: a client that is misconfigured or not who it claims to be. The
# transient ones (UNAVAILABLE, RESOURCE_EXHAUSTED) are expected during starts and storms: debug.
_LOUD_REFUSALS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED,
                            grpc.StatusCode.PERMISSION_DENIED})


class XdsServices(Generic[P]):
    def __init__(self, cache: SnapshotCache[P], identify: Callable[[Any], P], *,
                 ready: Callable[[], bool] = lambda: True, observer: ServerObserver | None = None,
                 settings: StreamSettings | None = None, control_plane_id: str = "xds-server",
                 admission: StreamAdmission | None = None, authorize: auth.Authorize[P] | None = None,
                 name_sets: NameSets | None = None) -> None:
        self.cache = cache
        self._identify = identify
        self._ready = ready
        self.admission = admission
        self._authorize = authorize  # set when client certificates are required (--client-ca)
        self.observer: ServerObserver = observer or NullServerObserver()
        self.settings = settings or StreamSettings()
        self.connections: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        self._control_plane = wire.control_plane(control_plane_id)
        self.watchdog = WriteWatchdog(self.settings.send_timeout)
        self.budget = SendBudget(self.settings.max_bytes_in_flight)
        self.accepting = True
        # Streams woken by a push and not yet answered, and writes not yet completed: while a
        # push is being sent (`sending`), the garbage collector's tick waits for it to end
        # (push/collector.py).
        self.pending_wakes = 0
        self.writes_in_flight = 0
        self._name_sets = name_sets if name_sets is not None else NameSets()  # shared by every stream
        self.shared = SharedResponses()  # a change's delta response, encoded once for every stream (shared.py)

    # ------------------------------------------------------------------ registration
    def sending(self) -> bool:
        """A push is being sent: streams woken and not yet answered, or writes not yet completed
        (one held by a peer that stopped reading counts too: the collector waits at most its
        `longest_wait` for it)."""
        return self.pending_wakes > 0 or self.writes_in_flight > 0

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        def method(kind: str, only: TypeUrl | None, name: str) -> grpc.RpcMethodHandler[Any, bytes]:
            parse = (DiscoveryRequest if kind == "sotw" else DeltaDiscoveryRequest).FromString

            def deserializer(data: bytes) -> Any:
                self.observer.received(len(data))  # the size is only known here (pilot_xds_recv_max)
                try:
                    return parse(data)
                except DecodeError as e:
                    raise BadMessage(f"undecodable {kind} request ({len(data)} bytes): {e}") from None

            async def behaviour(requests: AsyncIterator[Any], context: Context) -> None:
                await self._stream(requests, context, kind, only, name)

            return grpc.stream_stream_rpc_method_handler(
                # No response serializer: responses are bytes already, and gRPC then passes them as they are.
                behaviour, request_deserializer=deserializer, response_serializer=None)

        out = [grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": method("sotw", None, "StreamAggregatedResources"),
            "DeltaAggregatedResources": method("delta", None, "DeltaAggregatedResources"),
        })]
        for service, (type_url, sotw_name, delta_name) in PER_TYPE_SERVICES.items():
            out.append(grpc.method_handlers_generic_handler(service, {
                sotw_name: method("sotw", type_url, sotw_name),
                delta_name: method("delta", type_url, delta_name),
            }))
        return out

    # ------------------------------------------------------------------ the pump
    async def _stream(self, requests: AsyncIterator[Any], context: Context,
                      kind: str, only: TypeUrl | None, method: str) -> None:
        await self._check_serving(context)
        if self.admission is not None and not await self.admission.admit():
            await self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "too many new xDS streams, retry later")
        await self._check_serving(context)  # it may have started draining while this stream waited
        try:
            first = await asyncio.wait_for(anext(requests), self.settings.first_request_timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:  # Envoy sends its first request at once: this one holds a stream for nothing
            await self._refuse(context, grpc.StatusCode.DEADLINE_EXCEEDED, "no request on the stream")
        except BadMessage as e:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if not first.node.id:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id")
        try:
            proxy = self._identify(first.node)
        except ValueError as e:
            await self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if self._authorize is not None:
            await self._check_identity(context, proxy)
        machine: MachineBase[Any] = (SotwMachine if kind == "sotw" else DeltaMachine)(
            only, control_plane=self._control_plane, name_sets=self._name_sets, shared=self.shared)
        conn = Connection(f"{proxy.key}-{next(self._ids)}", proxy, context.peer(), kind, method, machine)
        machine.observer = self.observer.stream_observer(conn)
        pump = _Pump(self, conn, context, first)
        # The pump drops the first request once answered: held here, it (and the node metadata
        # in it) would live as long as the stream.
        del first
        entry = self.cache.attach(proxy, pump.wake)
        self.connections[conn.id] = conn
        self.observer.connected(conn)
        log.info("xds connect %s %s proxy=%s peer=%s", conn.id, method, proxy.node_id, conn.peer)
        error: StreamError | None = None
        try:
            await pump.run(requests, entry)
        except StreamError as e:
            error = e
        finally:
            self.cache.detach(entry, pump.wake)
            self.connections.pop(conn.id, None)
            self.observer.disconnected(conn)
            # The one reference cycle of a stream (connection -> machine -> observer -> connection):
            # broken, its state is freed now by reference counting, not by a full collection.
            machine.observer = NullObserver()
            log.info("xds disconnect %s after %.1fs", conn.id, time.time() - conn.connected_at)
        if error is not None:
            self.observer.stream_error(error.code.name, error.message)
            if error.code is not grpc.StatusCode.DEADLINE_EXCEEDED:  # a blocked write is logged where it happens
                log.warning("xds %s: closing the stream with %s: %s", conn.id, error.code.name, error.message,
                            extra={"connection_id": conn.id, "code": error.code.name})
            await self._end(context, error)

    async def _end(self, context: Context, error: StreamError) -> None:
        """End the stream with error's status; never hang on a peer that stopped reading.

        The status goes out behind any response still blocked by HTTP/2 flow control, so for a
        reader that stopped reading it cannot be sent, and grpc.aio has no server-side cancel. Our
        side is already finished (detached, counted); the handler ends quietly (CancelledError is
        what grpc.aio expects of an ended RPC) and gRPC completes the call when the peer reads or
        goes away. Memory held meanwhile: the one blocked response.
        """
        try:
            await asyncio.wait_for(context.abort(error.code, error.message), self.settings.send_timeout)
        except TimeoutError:
            raise asyncio.CancelledError from None

    async def _check_serving(self, context: Context) -> None:
        if not self.accepting:
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, "shutting down")
        if not self._ready():
            await self._refuse(context, grpc.StatusCode.UNAVAILABLE, "config sources have not synced yet")

    async def _check_identity(self, context: Context, proxy: P) -> None:
        peer = auth.peer_identities(context)
        identities = peer[0] if peer is not None else []
        if not identities:
            shown = ", ".join(peer[1][:4]) if peer is not None and peer[1] else "none"
            await self._refuse(context, grpc.StatusCode.UNAUTHENTICATED,
                               f"the client certificate has no SPIFFE or <sa>.<ns>.svc DNS identity (SANs: {shown})",
                               proxy)
        assert self._authorize is not None
        reason = self._authorize(identities, proxy)
        if reason is not None:
            await self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                               f"node {proxy.node_id!r}: {reason}", proxy)

    async def _refuse(self, context: Context, code: grpc.StatusCode, reason: str,
                      proxy: XdsProxy | None = None) -> NoReturn:
        """Count, log and end the stream with this status (context.abort raises)."""
        self.observer.refused(code.name, reason)
        level = logging.WARNING if code in _LOUD_REFUSALS else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "xds refused %s peer=%s: %s", code.name, context.peer(), reason,
                    extra={"code": code.name, "peer": context.peer(),
                           **({"node_id": proxy.key} if proxy is not None else {})})
        await context.abort(code, reason)


class _Pump:
    """Moves one stream's requests and wake-ups through its machine.

    While the pump task is not writing, the reader task hands a request to the machine as it
    arrives (most are ACKs that need no answer: no second task wakes for them) and puts any answer
    in the outbox for the pump to write. While the pump is writing, requests queue and the pump
    answers them one by one after its write: a response is built only when it can be written, so a
    stream never holds more than the one in flight (at a cold start, 2,000 streams answering every
    request at once held ~1 GB of response bytes). The machine is called from both tasks, never
    concurrently (one event loop thread, no await inside a call), and its answers keep their order.
    """

    def __init__(self, services: XdsServices[Any], conn: Connection, context: Context,
                 first_request: Any) -> None:
        self.services = services
        self.conn = conn
        self.context = context
        self.signal = asyncio.Event()
        self.space = asyncio.Event()
        self.outbox: deque[Outgoing] = deque()
        self.queue: deque[Any] = deque()
        self.writing = False
        self.woken = False
        self.ended = False  # run() is over: wake-ups are no longer counted
        self.closed = False
        self.error: StreamError | None = None  # set by the reader: end the stream with it
        # The send timeout: the server's watchdog looks at the write in progress (watchdog.py),
        # rather than a timer armed and cancelled around every write.
        self.write_started: float | None = None
        self.timed_out = False
        self._task: asyncio.Task[Any] | None = None
        self.first_request: Any = first_request  # until run() has answered it
        self.charged = 0  # this stream's bytes in the send budget: built and not yet written

    def wake(self) -> None:
        if not self.woken and not self.ended:
            self.woken = True
            self.services.pending_wakes += 1
        self.signal.set()

    def _unwake(self) -> None:
        if self.woken:
            self.woken = False
            self.services.pending_wakes -= 1

    async def _read(self, requests: AsyncIterator[Any], entry: CacheEntry[Any]) -> None:
        limit = self.services.settings.max_queued_requests
        machine = self.conn.machine
        budget = self.services.budget
        try:
            async for req in requests:
                if not (self.writing or self.queue or self.outbox) and budget.open():
                    out = machine.on_request(req, entry.snapshot)
                    if out:
                        self._charge(out)
                        self.outbox.extend(out)
                        self.signal.set()
                    continue
                self.queue.append(req)
                self.signal.set()
                while len(self.queue) >= limit:  # the writer is behind: stop reading (flow control)
                    self.space.clear()
                    await self.space.wait()
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        except StreamError as e:  # the machine refused a request (e.g. a type on the wrong service)
            self.error = e
        except BadMessage as e:  # a malformed request: end this stream (INVALID_ARGUMENT), never the server
            self.error = StreamError(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception as e:  # anything else the transport raises: end the stream, never the server
            level = logging.WARNING if self.services.accepting else logging.DEBUG  # "Server already stopped"
            log.log(level, "xds %s: reading requests failed: %s", self.conn.id, e)
        finally:
            self.closed = True
            self.signal.set()

    async def run(self, requests: AsyncIterator[Any], entry: CacheEntry[Any]) -> None:
        self._task = asyncio.current_task()
        watchdog = self.services.watchdog
        watchdog.add(self)
        reader: asyncio.Task[None] | None = None
        try:
            # The first request is answered before the reader starts: it cannot be an ACK.
            await self._send(await self._built(lambda: self._answer_first(entry.snapshot)))
            reader = asyncio.create_task(self._read(requests, entry), name=f"xds-read-{self.conn.id}")
            while True:
                await self.signal.wait()
                self.signal.clear()
                while self.outbox or self.queue:
                    if self.outbox:  # answers to requests the reader handed over come first
                        await self._send((self.outbox.popleft(),))
                        continue
                    req = self.queue.popleft()
                    self.space.set()
                    await self._send(await self._built(functools.partial(self._answer, req, entry)))
                if self.woken:
                    await self._send(await self._built(lambda: self._answer_wake(entry.snapshot)))
                if self.closed and not self.outbox and not self.queue:
                    if self.error is not None:
                        raise self.error
                    return
        finally:
            self.ended = True
            self._unwake()
            watchdog.discard(self)
            if self.charged:  # built and never written (the stream ended): no longer held
                self.services.budget.release(self.charged)
                self.charged = 0
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader

    async def _built(self, build: Callable[[], list[Outgoing]]) -> list[Outgoing]:
        """What `build` returns, built on this stream's turn of the send budget and charged to it.

        Requests queue meanwhile (the reader sees `writing`), so the machine sees them in order.
        """
        budget = self.services.budget
        self.writing = True
        try:
            await budget.turn()
            try:
                out = build()
                self._charge(out)
            finally:
                budget.done()
        finally:
            self.writing = False
        return out

    def _charge(self, out: list[Outgoing]) -> None:
        nbytes = sum(len(o.payload) for o in out)
        self.charged += nbytes
        self.services.budget.charge(nbytes)

    def _answer_wake(self, snapshot: Any) -> list[Outgoing]:
        """The newest snapshot's answer; a wake-up that came while waiting for the turn is included."""
        self._unwake()
        return self.conn.machine.on_snapshot(snapshot)

    def _answer(self, req: Any, entry: CacheEntry[Any]) -> list[Outgoing]:
        """A queued request's answer, against the snapshot of the moment it is built."""
        return self.conn.machine.on_request(req, entry.snapshot)

    def _answer_first(self, snapshot: Any) -> list[Outgoing]:
        """The first request's answer; the request itself (and, once sent, the answer) then freed."""
        first, self.first_request = self.first_request, None
        return self.conn.machine.on_request(first, snapshot)

    def expire(self) -> None:
        """The watchdog saw this stream's write blocked for send_timeout: cancel the stream's task."""
        if not self.timed_out and self._task is not None:
            self.timed_out = True
            self._task.cancel()

    async def _send(self, outgoing: Iterable[Outgoing]) -> None:
        write = self.context.write
        sent = self.services.observer.sent
        budget = self.services.budget
        services = self.services
        for out in outgoing:
            start = self.write_started = time.perf_counter()
            self.writing = True
            services.writes_in_flight += 1
            try:
                await write(out.payload)
            except asyncio.CancelledError:
                if not self.timed_out:
                    raise
                assert self._task is not None
                self._task.uncancel()
                timeout = self.services.settings.send_timeout
                self.services.observer.write_timeout(self.conn)
                log.warning("xds %s: write blocked for %.0fs, closing the stream", self.conn.id, timeout)
                raise StreamError(grpc.StatusCode.DEADLINE_EXCEEDED, "write timed out") from None
            finally:
                self.write_started = None
                self.writing = False
                services.writes_in_flight -= 1
                # Released once gRPC has passed the whole message through HTTP/2 flow control (the
                # write completes no sooner; budget.py), or when the write is abandoned: the stream
                # then ends (a message blocked by a peer that stopped reading may stay with gRPC
                # until that peer goes, as _end says).
                size = len(out.payload)
                self.charged -= size
                budget.release(size)
            sent(self.conn, out.type_url, out.resources, len(out.payload), time.perf_counter() - start)
