"""The grpc.aio servicers: ADS (SotW and delta) and the per-type CDS/EDS/LDS/RDS services.

A thin pump around the sans-IO machines: read requests, apply wake-ups, write bytes.
Responses are pre-encoded bytes (see wire.py), so the response serializer is the identity.
Each stream keeps one pending wake-up flag: a slow Envoy only ever gets the newest state and
never delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest

from xds_server.resources import TypeUrl
from xds_server.xds import wire
from xds_server.xds.cache import CacheEntry, SnapshotCache
from xds_server.xds.delta import DeltaMachine
from xds_server.xds.machine import MachineBase, Outgoing, StreamError
from xds_server.xds.observer import NullServerObserver, ServerObserver
from xds_server.xds.sotw import SotwMachine

log = logging.getLogger("xds_server.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
PER_TYPE_SERVICES: dict[str, tuple[TypeUrl, str, str]] = {
    "envoy.service.cluster.v3.ClusterDiscoveryService": (TypeUrl.CLUSTER, "StreamClusters", "DeltaClusters"),
    "envoy.service.endpoint.v3.EndpointDiscoveryService": (TypeUrl.ENDPOINT, "StreamEndpoints", "DeltaEndpoints"),
    "envoy.service.listener.v3.ListenerDiscoveryService": (TypeUrl.LISTENER, "StreamListeners", "DeltaListeners"),
    "envoy.service.route.v3.RouteDiscoveryService": (TypeUrl.ROUTE, "StreamRoutes", "DeltaRoutes"),
}


@dataclass(frozen=True, slots=True)
class StreamSettings:
    send_timeout: float = 10.0  # a write blocked longer than this ends the stream
    max_queued_requests: int = 64  # the reader stops reading (flow control) beyond this


@dataclass(eq=False)
class Connection:
    """One xDS stream (istiod keys state by connection, not node: reconnects overlap)."""

    id: str
    proxy: Any
    peer: str
    kind: str  # "sotw" | "delta"
    method: str
    machine: MachineBase
    connected_at: float = field(default_factory=time.time)


def _identity(b: bytes) -> bytes:
    return b


class XdsServices:
    def __init__(self, cache: SnapshotCache, identify: Callable[[Any], Any], *,
                 ready: Callable[[], bool] = lambda: True, observer: ServerObserver | None = None,
                 settings: StreamSettings | None = None, control_plane_id: str = "xds-server") -> None:
        self.cache = cache
        self._identify = identify
        self._ready = ready
        self.observer: ServerObserver = observer or NullServerObserver()
        self.settings = settings or StreamSettings()
        self.connections: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        self._control_plane = wire.control_plane(control_plane_id)
        self.accepting = True

    # ------------------------------------------------------------------ registration
    def handlers(self) -> list[grpc.GenericRpcHandler]:
        def method(kind: str, only: TypeUrl | None, name: str) -> grpc.RpcMethodHandler:
            parse = (DiscoveryRequest if kind == "sotw" else DeltaDiscoveryRequest).FromString

            def deserializer(data: bytes) -> Any:
                self.observer.received(len(data))  # the size is only known here (pilot_xds_recv_max)
                return parse(data)

            async def behaviour(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
                await self._stream(requests, context, kind, only, name)

            return grpc.stream_stream_rpc_method_handler(
                behaviour, request_deserializer=deserializer, response_serializer=_identity)

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
    async def _stream(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                      kind: str, only: TypeUrl | None, method: str) -> None:
        if not self.accepting or not self._ready():
            reason = "shutting down" if not self.accepting else "config sources have not synced yet"
            self.observer.refused("UNAVAILABLE", reason)
            await context.abort(grpc.StatusCode.UNAVAILABLE, reason)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        if not first.node.id:
            self.observer.refused("INVALID_ARGUMENT", "no node.id")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first request must carry node.id")
        try:
            proxy = self._identify(first.node)
        except ValueError as e:
            self.observer.refused("INVALID_ARGUMENT", str(e))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        machine: MachineBase = (SotwMachine if kind == "sotw" else DeltaMachine)(only)
        machine.control_plane = self._control_plane  # type: ignore[attr-defined]
        conn = Connection(f"{proxy.key}-{next(self._ids)}", proxy, context.peer(), kind, method, machine)
        machine.observer = self.observer.stream_observer(conn)
        pump = _Pump(self, conn, context)
        entry = self.cache.attach(proxy, pump.wake)
        self.connections[conn.id] = conn
        self.observer.connected(conn)
        log.info("xds connect %s %s proxy=%s peer=%s", conn.id, method, getattr(proxy, "node_id", proxy.key),
                 conn.peer)
        try:
            await pump.run(first, requests, entry)
        except StreamError as e:
            await context.abort(getattr(grpc.StatusCode, e.code), e.message)
        finally:
            self.cache.detach(entry, pump.wake)
            self.connections.pop(conn.id, None)
            self.observer.disconnected(conn)
            log.info("xds disconnect %s after %.1fs", conn.id, time.time() - conn.connected_at)


class _Pump:
    """Moves one stream's requests and wake-ups through its machine, one at a time."""

    def __init__(self, services: XdsServices, conn: Connection, context: grpc.aio.ServicerContext) -> None:
        self.services = services
        self.conn = conn
        self.context = context
        self.signal = asyncio.Event()
        self.space = asyncio.Event()
        self.queue: deque[Any] = deque()
        self.woken = False
        self.closed = False

    def wake(self) -> None:
        self.woken = True
        self.signal.set()

    async def _read(self, requests: AsyncIterator[Any]) -> None:
        limit = self.services.settings.max_queued_requests
        try:
            async for req in requests:
                self.queue.append(req)
                self.signal.set()
                while len(self.queue) >= limit:
                    self.space.clear()
                    await self.space.wait()
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        except Exception as e:  # a malformed request: end the stream, never the server
            log.warning("xds %s: bad request: %s", self.conn.id, e)
        finally:
            self.closed = True
            self.signal.set()

    async def run(self, first: Any, requests: AsyncIterator[Any], entry: CacheEntry) -> None:
        self.queue.append(first)
        self.signal.set()
        reader = asyncio.create_task(self._read(requests), name=f"xds-read-{self.conn.id}")
        machine = self.conn.machine
        try:
            while True:
                await self.signal.wait()
                self.signal.clear()
                while self.queue:
                    req = self.queue.popleft()
                    self.space.set()
                    await self._send(machine.on_request(req, entry.snapshot))  # type: ignore[attr-defined]
                if self.woken:
                    self.woken = False
                    await self._send(machine.on_snapshot(entry.snapshot))  # type: ignore[attr-defined]
                if self.closed and not self.queue:
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _send(self, outgoing: list[Outgoing]) -> None:
        timeout = self.services.settings.send_timeout
        for out in outgoing:
            start = time.perf_counter()
            try:
                await asyncio.wait_for(self.context.write(out.payload), timeout)
            except TimeoutError:
                self.services.observer.write_timeout(self.conn)
                log.warning("xds %s: write blocked for %.0fs, closing the stream", self.conn.id, timeout)
                raise StreamError("DEADLINE_EXCEEDED", "write timed out") from None
            self.services.observer.sent(self.conn, out.type_url, out.resources, len(out.payload),
                                        time.perf_counter() - start)
