"""Load generator: many Envoy-like ADS clients in one process, driven over stdin/stdout.

Each stream has its own gRPC channel (its own TCP connection, like a real sidecar), its own
node id and metadata, and follows Envoy's ADS sequence: CDS (wildcard) -> ACK -> EDS for the
EDS clusters it learned -> LDS once clusters are warm -> ACK -> RDS for the route names its
listeners reference -> ACK. Every response is ACKed; names it learns later (a new cluster, a new
route) are subscribed to, names that vanish are unsubscribed (delta) or dropped from the next
request (SotW). It speaks plain ADS (v3, SotW or delta) to any address, so it can measure any
control plane.

Per stream it records when each response arrived and when it was ACKed, and counts responses,
resources and bytes per type. *Watches* let a driver measure convergence: "resource NAME of
type T contains/lacks these bytes" or "is absent"; the stream records the time of the ACK of the
first response that satisfies every watch of the group.

Control protocol (one JSON object per line; replies likewise):
    {"cmd": "start"}                                   connect every stream at once
    {"cmd": "wait_ready", "timeout": s}                -> {"complete": [t | null per stream], ...}
    {"cmd": "arm", "group": g, "watches": [{type, name, kind, data}]}   several groups may be armed
    {"cmd": "wait_watch", "group": g, "streams": [i...], "timeout": s}
                                                       -> {"times": [...], "responses": [...] since arm}
    {"cmd": "disarm", "group": g}
    {"cmd": "counters", "reset": bool}                 -> totals per type
    {"cmd": "quiet", "seconds": s, "timeout": s}       wait until no response arrived for s
    {"cmd": "stop"}
Times are time.monotonic() (system-wide on Linux, comparable across processes).

    python -m bench.loadgen --target 127.0.0.1:15010 --proxies proxies.json [--first 0 --count 100] [--sotw]
        [--slow [--window BYTES] [--delay-ms MS]]

Fast mode (the default) stands in for Envoy's xDS client at its fastest: a 64 MiB HTTP/2 window
(Envoy advertises 256 MiB) and only the fields it needs decoded, memoised across streams. Slow
mode (--slow) is what a control plane meets from clients that take their time, like the
independent generator of issue 19: every resource of every response decoded in full (as Envoy
does; a Listener's HTTP connection managers too), gRPC's small default window (64 KiB, no BDP
probing to grow it), and optionally a pause per message before its ACK. A server that writes
faster than such clients read must hold what they have not taken.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from collections.abc import Iterable
from typing import Any

TYPE_PREFIX = "type.googleapis.com/"
CDS = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
EDS = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
RDS = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
TYPES = (CDS, EDS, LDS, RDS)
SHORT = {CDS: "cds", EDS: "eds", LDS: "lds", RDS: "rds"}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"


def _identity(b: bytes) -> bytes:
    return b


def first_field_name(payload: bytes) -> str:
    """Field 1 (a string) of a serialized message: the name of a Cluster, Listener, RouteConfiguration
    and the cluster_name of a ClusterLoadAssignment. Serializers write known fields in order."""
    if not payload or payload[0] != 0x0A:
        return ""
    n, shift, i = 0, 0, 1
    while True:
        b = payload[i]
        n |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            break
        shift += 7
    return payload[i:i + n].decode()


class FullDecoder:
    """Decodes every resource of a response into its message, as Envoy does (nothing memoised)."""

    def __init__(self) -> None:
        from envoy.config.cluster.v3 import cluster_pb2
        from envoy.config.endpoint.v3 import endpoint_pb2
        from envoy.config.listener.v3 import listener_pb2
        from envoy.config.route.v3 import route_pb2
        from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

        self._classes = {CDS: cluster_pb2.Cluster, EDS: endpoint_pb2.ClusterLoadAssignment,
                         LDS: listener_pb2.Listener, RDS: route_pb2.RouteConfiguration}
        self._hcm = http_connection_manager_pb2.HttpConnectionManager

    def decode(self, type_url: str, resp: Any, delta: bool) -> int:
        """Decode every resource; the number of messages decoded."""
        cls = self._classes.get(type_url)
        if cls is None:
            return 0
        n = 0
        for r in resp.resources:
            msg = cls.FromString(r.resource.value if delta else r.value)
            n += 1
            if type_url == LDS:
                chains = list(msg.filter_chains)
                if msg.HasField("default_filter_chain"):
                    chains.append(msg.default_filter_chain)
                for chain in chains:
                    for f in chain.filters:
                        if f.typed_config.type_url == HCM:
                            self._hcm.FromString(f.typed_config.value)
                            n += 1
        return n


class Decoders:
    """Per-payload memo of what a client needs from a resource; equal bytes parse once."""

    def __init__(self) -> None:
        from envoy.config.cluster.v3 import cluster_pb2
        from envoy.config.listener.v3 import listener_pb2
        from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2

        self._cluster = cluster_pb2.Cluster
        self._listener = listener_pb2.Listener
        self._hcm = http_connection_manager_pb2.HttpConnectionManager
        self._eds: dict[bytes, str] = {}
        self._rds: dict[bytes, tuple[str, ...]] = {}

    def eds_name(self, payload: bytes, key: Any = None) -> str:
        """The EDS service name of an EDS cluster, '' for other clusters.

        Memoised by `key` (a delta resource's (name, version): no copy of the payload needed)
        or else by the payload bytes.
        """
        key = payload if key is None else key
        found = self._eds.get(key)
        if found is None:
            c = self._cluster.FromString(payload if isinstance(payload, bytes) else payload())
            found = (c.eds_cluster_config.service_name or c.name) if c.type == self._cluster.EDS else ""
            if len(self._eds) > 200_000:
                self._eds.clear()
            self._eds[key] = found
        return found

    def rds_names(self, payload: Any, key: Any = None) -> tuple[str, ...]:
        """RDS route_config_names a listener's HTTP connection managers reference (memoised like eds_name)."""
        key = payload if key is None else key
        found = self._rds.get(key)
        if found is None:
            listener = self._listener.FromString(payload if isinstance(payload, bytes) else payload())
            names: list[str] = []
            chains = list(listener.filter_chains)
            if listener.HasField("default_filter_chain"):
                chains.append(listener.default_filter_chain)
            for chain in chains:
                for f in chain.filters:
                    if f.typed_config.type_url == HCM:
                        hcm = self._hcm.FromString(f.typed_config.value)
                        if hcm.HasField("rds") and hcm.rds.route_config_name not in names:
                            names.append(hcm.rds.route_config_name)
            found = tuple(names)
            if len(self._rds) > 200_000:
                self._rds.clear()
            self._rds[key] = found
        return found


def _value_of(resource: Any) -> Any:
    """A delta Resource's payload, fetched only if needed (it is a copy)."""
    return lambda: resource.resource.value


_interned: dict[frozenset[str], frozenset[str]] = {}


def intern_names(names: Iterable[str]) -> frozenset[str]:
    """Streams with the same config share one name set (keeps 2,000 streams x 1,000 names small)."""
    fs = frozenset(names)
    found = _interned.get(fs)
    if found is None:
        if len(_interned) > 10_000:
            _interned.clear()
        found = _interned[fs] = fs
    return found


class Watch:
    __slots__ = ("data", "kind", "name", "type_url")

    def __init__(self, spec: dict[str, Any]) -> None:
        self.type_url = spec["type"]
        self.name = spec["name"]
        self.kind = spec["kind"]  # contains | lacks | present | absent
        self.data = spec.get("data", "").encode()

    def check(self, payloads: dict[str, bytes] | None, removed: Iterable[str], full_state: bool) -> bool:
        """payloads: name -> bytes of this response (only names of interest)."""
        if self.kind == "absent":
            if self.name in removed:
                return True
            return full_state and payloads is not None and self.name not in payloads
        if payloads is None or self.name not in payloads:
            return False
        if self.kind == "present":
            return True
        found = self.data in payloads[self.name]
        return found if self.kind == "contains" else not found


class Stream:
    """One Envoy-like ADS stream (SotW or delta)."""

    def __init__(self, gen: LoadGen, index: int, identity: dict[str, Any]) -> None:
        self.gen = gen
        self.index = index
        self.identity = identity
        self.delta = gen.delta
        self.call: Any = None
        self.eds_names: frozenset[str] = frozenset()
        self.rds_names: frozenset[str] = frozenset()
        self.nonce: dict[str, str] = {}
        self.version: dict[str, str] = {}
        self.acked: set[str] = set()
        self.eds_pending: frozenset[str] | None = None  # names asked for, not yet all received
        self.rds_pending: frozenset[str] | None = None
        self.lds_requested = False
        self.complete_at: float | None = None
        self.watch_at: dict[str, float] = {}  # group -> ACK time of the response that satisfied it
        self.watch_done: dict[str, list[bool]] = {}
        self.responses = 0
        self.listener_routes: dict[str, tuple[str, ...]] = {}  # delta: listener -> RDS names
        self.log: list[tuple[float, str, str, int, int, int, float]] = []  # t, type, version, n, removed, bytes, ack t
        self.errors = 0

    # ------------------------------------------------------------------ requests
    def _request(self, type_url: str, *, first: bool = False, names: Iterable[str] | None = None,
                 subscribe: Iterable[str] = (), unsubscribe: Iterable[str] = (), ack: bool = False) -> bytes:
        pb = self.gen.pb
        if self.delta:
            req = pb.DeltaDiscoveryRequest(type_url=type_url)
            if ack:
                req.response_nonce = self.nonce.get(type_url, "")
            req.resource_names_subscribe.extend(subscribe)
            req.resource_names_unsubscribe.extend(unsubscribe)
        else:
            req = pb.DiscoveryRequest(type_url=type_url, version_info=self.version.get(type_url, ""),
                                      response_nonce=self.nonce.get(type_url, ""))
            if names is not None:
                req.resource_names.extend(sorted(names))
        if first:
            req.node.CopyFrom(self.gen.node(self.identity))
        return req.SerializeToString()

    async def _write(self, data: bytes) -> None:
        await self.call.write(data)

    # ------------------------------------------------------------------ the stream
    async def run(self) -> None:
        import grpc

        backoff = 0.5
        while not self.gen.stopping:
            channel = grpc.aio.insecure_channel(self.gen.target, options=self.gen.channel_options)
            method = ADS + ("DeltaAggregatedResources" if self.delta else "StreamAggregatedResources")
            try:
                self.call = channel.stream_stream(method, request_serializer=_identity,
                                                  response_deserializer=_identity)()
                self._reset()
                await self._write(self._request(CDS, first=True))
                while True:
                    raw = await self.call.read()
                    if raw is grpc.aio.EOF:
                        break
                    await self._on_response(raw)
                    # Freed now, as Envoy frees a response once applied: bound while the next read
                    # waits, every stream's last cold-start response (up to ~400 kB) stayed alive
                    # and 2,000 of them were unmapped in the middle of the first measured change.
                    del raw
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a reset stream: reconnect like Envoy (with backoff)
                if self.gen.stopping:
                    return
                self.errors += 1
                self.gen.error(self, e)
            finally:
                await channel.close()
            # Envoy's JitteredExponentialBackOffStrategy for xDS streams: base 500 ms, max 30 s.
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(backoff * 2, 30.0)

    def _reset(self) -> None:
        self.eds_names = self.rds_names = frozenset()
        self.nonce.clear()
        self.version.clear()
        self.acked.clear()
        self.eds_pending = self.rds_pending = None
        self.lds_requested = False
        self.listener_routes = {}

    async def _on_response(self, raw: bytes) -> None:
        t = time.monotonic()
        pb = self.gen.pb
        resp = (pb.DeltaDiscoveryResponse if self.delta else pb.DiscoveryResponse).FromString(raw)
        type_url = resp.type_url
        if self.gen.full_decoder is not None:  # slow mode: apply everything before the ACK, like Envoy
            self.gen.full_decoder.decode(type_url, resp, self.delta)
            if self.gen.delay > 0:
                await asyncio.sleep(self.gen.delay)
        self.nonce[type_url] = resp.nonce
        removed: list[str] = list(resp.removed_resources) if self.delta else []
        if not self.delta:
            self.version[type_url] = resp.version_info
        groups = self.gen.groups_by_type.get(type_url)
        wanted: dict[str, bytes] | None = None
        if groups:
            names = self.gen.names_by_type[type_url]
            wanted = {}
            single = len(resp.resources) == 1
            for r in resp.resources:
                if self.delta:
                    if r.name in names:
                        # One resource: the response bytes hold it (no copy of a 400 kB route).
                        wanted[r.name] = raw if single else r.resource.value
                else:
                    v = r.value
                    n = first_field_name(v)
                    if n in names:
                        wanted[n] = v
        followups: list[bytes] = []
        if type_url == CDS:
            followups = self._on_clusters(resp, removed)
        elif type_url == LDS:
            followups = self._on_listeners(resp, removed)
        elif type_url == EDS:
            self.eds_pending = self._received(self.eds_pending, resp, removed)
        elif type_url == RDS:
            self.rds_pending = self._received(self.rds_pending, resp, removed)
        await self._write(self._request(type_url, ack=True,
                                        names=self._names(type_url)))
        for req in followups:
            await self._write(req)
        # Envoy asks for listeners once its clusters are warm (their endpoints arrived).
        warm = (type_url == CDS and not self.eds_names) or (type_url == EDS and self.eds_pending is None)
        if warm and not self.lds_requested:
            await self._request_lds()
        ack_at = time.monotonic()
        self.acked.add(type_url)
        n = len(resp.resources)
        self.gen.count(type_url, n, len(removed), len(raw))
        self.responses += 1
        if self.gen.keep_log:
            self.log.append((t, SHORT.get(type_url, type_url), resp.system_version_info if self.delta
                             else resp.version_info, n, len(removed), len(raw), ack_at))
        if self.complete_at is None and self._complete():
            self.complete_at = ack_at
            self.gen.completed(self)
        if groups:
            full_state = not self.delta and type_url in (CDS, LDS)
            for group in groups:
                if group in self.watch_at:
                    continue
                watches = self.gen.groups.get(group)
                if watches is None:
                    continue  # disarmed while this response was being ACKed (the writes above yield)
                done = self.watch_done.get(group)
                if done is None:
                    done = self.watch_done[group] = [False] * len(watches)
                for i, w in enumerate(watches):
                    if not done[i] and w.type_url == type_url and w.check(wanted, removed, full_state):
                        done[i] = True
                if all(done):
                    self.watch_at[group] = ack_at
                    self.watch_done.pop(group, None)
                    self.gen.watched(self, group)

    def _names(self, type_url: str) -> Iterable[str] | None:
        if self.delta:
            return None
        if type_url == EDS:
            return self.eds_names
        if type_url == RDS:
            return self.rds_names
        return None

    def _received(self, pending: frozenset[str] | None, resp: Any, removed: list[str]) -> frozenset[str] | None:
        if pending is None:
            return None
        if self.delta:
            left = pending - {r.name for r in resp.resources} - set(removed)
        else:  # SotW EDS/RDS responses hold every subscribed name that exists
            left = frozenset() if len(resp.resources) >= len(pending) else pending
        return left or None

    async def _request_lds(self) -> None:
        self.lds_requested = True
        await self._write(self._request(LDS, names=() if not self.delta else None))

    def _on_clusters(self, resp: Any, removed: list[str]) -> list[bytes]:
        dec = self.gen.decoders
        if self.delta:
            added = set()
            gone = {n for n in removed if n in self.eds_names}
            for r in resp.resources:
                eds = dec.eds_name(_value_of(r), (r.name, r.version))
                if eds:
                    added.add(eds)
                elif r.name in self.eds_names:
                    gone.add(r.name)  # no longer an EDS cluster
            new = added - self.eds_names
            if not new and not gone:
                return []
            self.eds_names = intern_names((self.eds_names - gone) | added)
            self.eds_pending = frozenset(new) if new else self.eds_pending
            return [self._request(EDS, subscribe=sorted(new), unsubscribe=sorted(gone))]
        names = intern_names(n for n in (dec.eds_name(a.value) for a in resp.resources) if n)
        if names == self.eds_names:
            return []
        new = names - self.eds_names
        self.eds_names = names
        if new:
            self.eds_pending = names
        return [self._request(EDS, names=names)]

    def _on_listeners(self, resp: Any, removed: list[str]) -> list[bytes]:
        dec = self.gen.decoders
        if self.delta:
            for r in resp.resources:
                self.listener_routes[r.name] = dec.rds_names(_value_of(r), (r.name, r.version))
            for n in removed:
                self.listener_routes.pop(n, None)
            names = intern_names(n for routes in self.listener_routes.values() for n in routes)
        else:
            names = intern_names(n for a in resp.resources for n in dec.rds_names(a.value))
        if names == self.rds_names:
            return []
        new, gone = names - self.rds_names, self.rds_names - names
        self.rds_names = names
        if new:
            self.rds_pending = new if self.delta else names
        if self.delta:
            return [self._request(RDS, subscribe=sorted(new), unsubscribe=sorted(gone))]
        return [self._request(RDS, names=names)]

    def _complete(self) -> bool:
        return (CDS in self.acked and LDS in self.acked and self.eds_pending is None and self.rds_pending is None
                and (not self.eds_names or EDS in self.acked) and (not self.rds_names or RDS in self.acked))


class LoadGen:
    def __init__(self, target: str, identities: list[dict[str, Any]], delta: bool, keep_log: bool = False,
                 slow: bool = False, window: int = 64 * 1024, delay: float = 0.0) -> None:
        from envoy.config.core.v3 import base_pb2
        from envoy.service.discovery.v3 import discovery_pb2

        self.pb = discovery_pb2
        self._node_cls = base_pb2.Node
        self.target = target
        self.delta = delta
        self.keep_log = keep_log
        self.channel_options = [
            ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per stream, like separate Envoys
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            # Envoy's xDS client advertises a 256 MiB stream window: the server never waits for
            # window updates from a busy client. gRPC's default (64 KiB + BDP probing) would make
            # every 400 kB response wait on this process's event loop several times.
            ("grpc.http2.lookahead_bytes", window if slow else 64 * 1024 * 1024),
            ("grpc.http2.bdp_probe", 0),
        ]
        self.full_decoder = FullDecoder() if slow else None
        self.delay = delay
        self.decoders = Decoders()
        self.streams = [Stream(self, i, ident) for i, ident in enumerate(identities)]
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False
        self.counters: dict[str, list[int]] = {t: [0, 0, 0, 0] for t in TYPES}  # responses, resources, removed, bytes
        self.last_response = time.monotonic()
        self.groups: dict[str, list[Watch]] = {}
        self.groups_by_type: dict[str, list[str]] = {}
        self.names_by_type: dict[str, set[str]] = {}
        self._base: dict[str, list[int]] = {}  # group -> response count of each stream when armed
        self._ready = asyncio.Event()
        self._collecting = False
        self._incomplete = len(self.streams)
        self._waiting: dict[str, tuple[set[int], asyncio.Event]] = {}
        self.error_samples: list[str] = []

    def node(self, identity: dict[str, Any]) -> Any:
        from google.protobuf import struct_pb2

        md = struct_pb2.Struct()
        md.update(_metadata(identity))
        return self._node_cls(id=identity["node_id"], cluster=f"{identity['app'] or 'client'}.{identity['namespace']}",
                              metadata=md)

    # ------------------------------------------------------------------ callbacks from streams
    def count(self, type_url: str, resources: int, removed: int, nbytes: int) -> None:
        c = self.counters.setdefault(type_url, [0, 0, 0, 0])
        c[0] += 1
        c[1] += resources
        c[2] += removed
        c[3] += nbytes
        self.last_response = time.monotonic()

    def completed(self, stream: Stream) -> None:
        self._incomplete -= 1
        if self._incomplete <= 0:
            self._ready.set()

    def watched(self, stream: Stream, group: str) -> None:
        waiting = self._waiting.get(group)
        if waiting is not None:
            waiting[0].discard(stream.index)
            if not waiting[0]:
                waiting[1].set()

    def error(self, stream: Stream, e: Exception) -> None:
        if len(self.error_samples) < 5:
            detail = e.details() if hasattr(e, "details") else ""
            code = e.code().name if hasattr(e, "code") else ""
            self.error_samples.append(f"{type(e).__name__} {code} {detail}"[:300])

    # ------------------------------------------------------------------ commands
    async def start(self) -> None:
        self.tasks = [asyncio.create_task(s.run()) for s in self.streams]

    def _collect(self) -> None:
        gc.collect(1)
        gc.freeze()
        asyncio.get_running_loop().call_later(1.0, self._collect)

    async def wait_ready(self, timeout: float) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            pass
        # What the cold start left (every stream's state, learned names) lives as long as the
        # streams: frozen, so that no full collection of this process's garbage collector walks it
        # in the middle of a measured change (Envoy, which this stands in for, has none; one such
        # pause, ~100 ms after a 2,000-stream cold start, delayed every timestamp behind it).
        gc.collect()
        gc.freeze()
        if not self._collecting:  # and no automatic collection in a measured change: young ones once a second
            self._collecting = True
            gc.disable()
            asyncio.get_running_loop().call_later(1.0, self._collect)
        return {"complete": [s.complete_at for s in self.streams], "errors": sum(s.errors for s in self.streams),
                "error_samples": self.error_samples}

    def arm(self, group: str, watches: list[dict[str, Any]]) -> None:
        """Start watching: every stream records when it has ACKed a state satisfying all `watches`."""
        self.groups[group] = [Watch(w) for w in watches]
        self._base[group] = [s.responses for s in self.streams]
        self._index()

    def disarm(self, group: str) -> None:
        self.groups.pop(group, None)
        self._base.pop(group, None)
        for s in self.streams:
            s.watch_at.pop(group, None)
            s.watch_done.pop(group, None)
        self._index()

    def _index(self) -> None:
        self.groups_by_type = {}
        self.names_by_type = {}
        for group, watches in self.groups.items():
            for w in watches:
                if group not in self.groups_by_type.get(w.type_url, ()):
                    self.groups_by_type.setdefault(w.type_url, []).append(group)
                self.names_by_type.setdefault(w.type_url, set()).add(w.name)

    async def wait_watch(self, group: str, streams: list[int], timeout: float) -> dict[str, Any]:
        expected = {i for i in streams if group not in self.streams[i].watch_at}
        if expected:
            event = asyncio.Event()
            self._waiting[group] = (expected, event)
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                pass
            finally:
                self._waiting.pop(group, None)
        base = self._base.get(group) or [0] * len(self.streams)
        return {"times": [s.watch_at.get(group) for s in self.streams],
                "responses": [s.responses - b for s, b in zip(self.streams, base, strict=True)]}

    async def quiet(self, seconds: float, timeout: float) -> bool:
        """Wait until no response has arrived for `seconds`, counting from now at the earliest."""
        now = time.monotonic()
        deadline = now + timeout
        while time.monotonic() < deadline:
            idle = time.monotonic() - max(self.last_response, now)
            if idle >= seconds:
                return True
            await asyncio.sleep(seconds - idle)
        return False

    def take_counters(self, reset: bool) -> dict[str, Any]:
        out = {SHORT.get(t, t): dict(zip(("responses", "resources", "removed", "bytes"), c, strict=True))
               for t, c in self.counters.items()}
        if reset:
            self.counters = {t: [0, 0, 0, 0] for t in TYPES}
        return out

    async def stop(self) -> None:
        self.stopping = True
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _metadata(identity: dict[str, Any]) -> dict[str, Any]:
    return {
        "NAMESPACE": identity["namespace"],
        "INSTANCE_IPS": identity["ip"],
        "LABELS": {"app": identity["app"] or "client", "version": "v1"},
        "INTERCEPTION_MODE": "REDIRECT",
        "CLUSTER_ID": "Kubernetes",
        "SERVICE_ACCOUNT": f"spiffe://cluster.local/ns/{identity['namespace']}/sa/default",
        "ISTIO_VERSION": "1.26.0",
        "WORKLOAD_NAME": identity["app"] or "client",
        "MESH_ID": "cluster.local",
    }


def _write_file(path: str, data: str) -> None:
    with open(path, "w") as f:
        f.write(data)


async def serve_commands(gen: LoadGen) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        line = await reader.readline()
        if not line:
            break
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "start":
            await gen.start()
            reply({"ok": True, "at": time.monotonic()})
        elif cmd == "wait_ready":
            reply(await gen.wait_ready(msg.get("timeout", 60)))
        elif cmd == "arm":
            gen.arm(msg["group"], msg["watches"])
            reply({"ok": True})
        elif cmd == "disarm":
            gen.disarm(msg["group"])
            reply({"ok": True})
        elif cmd == "wait_watch":
            reply(await gen.wait_watch(msg["group"], msg["streams"], msg.get("timeout", 10)))
        elif cmd == "counters":
            reply(gen.take_counters(msg.get("reset", False)))
        elif cmd == "quiet":
            reply({"quiet": await gen.quiet(msg.get("seconds", 1.0), msg.get("timeout", 30)),
                   "at": time.monotonic()})
        elif cmd == "log":
            data = json.dumps({s.identity["node_id"]: s.log for s in gen.streams})
            await asyncio.to_thread(_write_file, msg["path"], data)
            reply({"ok": True})
        elif cmd == "stop":
            await gen.stop()
            reply({"ok": True})
            break
        else:
            reply({"error": f"unknown command {cmd}"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="HOST:PORT or unix:///path of the ADS server")
    p.add_argument("--proxies", required=True, help="proxies.json from bench.mesh")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=0, help="0: all from --first")
    p.add_argument("--sotw", action="store_true", help="state of the world instead of delta")
    p.add_argument("--cpu", type=int, default=-1, help="pin this process to one CPU")
    p.add_argument("--log", action="store_true", help="keep a per-stream log of every response")
    p.add_argument("--slow", action="store_true",
                   help="slow clients: decode every resource fully, small HTTP/2 window (--window)")
    p.add_argument("--window", type=int, default=64 * 1024, metavar="BYTES",
                   help="with --slow: the HTTP/2 window each stream advertises (default 64 KiB, gRPC's)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="with --slow: pause per message before its ACK")
    a = p.parse_args()
    if a.cpu >= 0:
        os.sched_setaffinity(0, {a.cpu})  # before grpc starts its threads: they inherit it
    with open(a.proxies) as f:
        identities = json.load(f)
    identities = identities[a.first:a.first + a.count] if a.count else identities[a.first:]
    try:
        import uvloop

        if not os.environ.get("LOADGEN_NO_UVLOOP"):
            uvloop.install()
    except ImportError:
        pass

    async def run() -> None:
        gen = LoadGen(a.target, identities, delta=not a.sotw, keep_log=a.log, slow=a.slow, window=a.window,
                      delay=a.delay_ms / 1000)
        await serve_commands(gen)
        await gen.stop()

    asyncio.run(run())


if __name__ == "__main__":
    main()
