"""Prometheus metrics with istiod's names (`pilot/pkg/xds/monitoring.go`), on a registry the App owns.

`Metrics` is the one observer of every layer: the stream machines (StreamObserver), the gRPC
pump (ServerObserver), the planner (PushObserver) and the store (change and report listeners).
It is also where a NACK is logged, once, with the proxy, type, nonce and Envoy's error text.

prometheus-client exposes counters with a `_total` suffix: istiod's `pilot_xds_pushes` is
`pilot_xds_pushes_total` here (docs/operations.md lists every name).

Convergence: a push that replaces a proxy's snapshot records when the change behind it
happened (first store change of the debounce burst). The proxy's next response adopts it; when
every type the proxy was sent is ACKed, change -> ACK is observed. A NACK abandons it.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from xds_server.config import ObjectRef, Problem
from xds_server.push.planner import PushObserver
from xds_server.resources import short_name
from xds_server.xds.status import Nack, TypeStatus

log = logging.getLogger("xds_server.xds")

# `_created` series double every counter for no use on a dashboard (process-wide switch).
prometheus_client.disable_created_metrics()

# istiod's buckets for pilot_xds_config_size_bytes: 10 kB, 1 MB, 4 MB, 10 MB, 40 MB.
SIZE_BUCKETS = (1, 10_000, 1_000_000, 4_000_000, 10_000_000, 40_000_000)
# istiod uses .1 .. 30 s; we are usually much faster, so finer low buckets.
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 3, 5, 10, 20, 30)
# Client-chosen label values (unknown type URLs) are capped so a client cannot grow the registry.
MAX_UNKNOWN_TYPES = 20


@dataclass(slots=True)
class _Push:
    """The latest push that replaced one proxy's snapshot."""

    generation: int
    changed_at: float  # monotonic time of the store change behind it
    pushed_at: float  # monotonic time the snapshot was replaced


@dataclass(slots=True)
class _Tracking:
    """Per connection: the push whose responses it is sending, until all are ACKed."""

    proxy_key: str
    generation: int = 0
    changed_at: float | None = None
    pushed_at: float = 0.0
    queued: bool = False  # queue time already observed for this push


def _awaiting_ack(status: TypeStatus) -> bool:
    """Sent, and neither ACKed nor NACKed yet."""
    if not status.sent_nonce or status.acked_nonce == status.sent_nonce:
        return False
    return status.nack is None or status.nack.nonce != status.sent_nonce


class _Series:
    """One label set of a LoopHistogram: per-bucket counts and the sum."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1  # first bucket with value <= le
        self.sum += value


class LoopHistogram:
    """A histogram observed on the event loop thread only, exported like prometheus-client's.

    prometheus-client's Histogram takes a lock and walks its buckets in Python on every
    observation (~2.5 us); the hot path makes five per stream per push (response size, send
    time, push time, queue time, convergence), ~25 ms of CPU for one Pod change at 2,000 streams.
    Here an observation is a bisect and a list increment; scrapes run on the same loop.
    """

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...],
                 labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._bounds = (*(float(b) for b in buckets), math.inf)
        self._series: dict[tuple[str, ...], _Series] = {}
        if not labelnames:
            self._default = self.labels()

    def labels(self, *values: str) -> _Series:
        found = self._series.get(values)
        if found is None:
            found = self._series[values] = _Series(self._bounds)
        return found

    def observe(self, value: float) -> None:
        self._default.observe(value)

    def collect(self) -> Iterable[Any]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=list(self.labelnames))
        les = [floatToGoString(b) for b in self._bounds]
        for values, series in list(self._series.items()):
            total, buckets = 0, []
            for le, n in zip(les, series.counts, strict=True):
                total += n
                buckets.append((le, total))
            family.add_metric(list(values), buckets, series.sum)
        yield family

    def describe(self) -> Iterable[Any]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=list(self.labelnames))]


class Metrics(PushObserver):
    def __init__(self, store: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._store = store
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        r.register(_RuntimeCollector())  # tasks and threads: a leak shows in a soak (bench/soak.py)

        # ---- connections and streams
        self.xds = Gauge("pilot_xds", "Connected xDS streams, by kind (sotw, delta).", ["kind"], registry=r)
        self.refusals = Counter("xds_server_stream_refusals", "xDS streams refused, by gRPC status code.",
                                ["code"], registry=r)
        self.stream_errors = Counter("xds_server_stream_errors",
                                     "xDS streams the server ended, by gRPC status code: a bad request "
                                     "(INVALID_ARGUMENT), a write blocked too long (DEADLINE_EXCEEDED).",
                                     ["code"], registry=r)
        self.recv_max = Gauge("pilot_xds_recv_max", "Largest xDS request received, in bytes.", registry=r)
        self.unknown_types = Counter("xds_server_xds_unknown_type_requests",
                                     "Requests for a type URL this server does not serve (stream kept).",
                                     ["type_url"], registry=r)
        # ---- responses
        self._by_type: dict[str, tuple[Any, Any, Any]] = {}
        self.pushes = Counter("pilot_xds_pushes", "xDS responses sent, by type.", ["type"], registry=r)
        self.config_size = self._loop_histogram("pilot_xds_config_size_bytes", "Size of xDS responses, by type.",
                                                SIZE_BUCKETS, ("type",))
        self.send_time = self._loop_histogram("pilot_xds_send_time", "Time to write one xDS response to the stream.",
                                              LATENCY_BUCKETS)
        self.push_time = self._loop_histogram(
            "pilot_xds_push_time", "From a push replacing a proxy's snapshot to that type's response written.",
            LATENCY_BUCKETS, ("type",))
        self.queue_time = self._loop_histogram(
            "pilot_proxy_queue_time", "From a push replacing a proxy's snapshot to its stream starting to send.",
            LATENCY_BUCKETS)
        self.write_timeouts = Counter("pilot_xds_write_timeout", "Streams closed because a write blocked too long.",
                                      registry=r)
        # ---- client answers
        self.rejects = Counter("pilot_total_xds_rejects", "NACKs received from proxies, by type.", ["type"],
                               registry=r)
        self.expired_nonce = Counter("pilot_xds_expired_nonce", "Requests echoing a stale nonce, by type.",
                                     ["type"], registry=r)
        self.convergence = self._loop_histogram(
            "pilot_proxy_convergence_time", "From the config change behind a push to the proxy ACKing all of it.",
            LATENCY_BUCKETS)
        # ---- pushes
        self.debounce_time = Histogram("pilot_debounce_time", "From the first change of a burst to its push.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.push_build = Histogram("pilot_pushcontext_init_seconds",
                                    "Time to build every connected proxy's snapshot for one push.",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.internal_errors = Counter("pilot_total_xds_internal_errors",
                                       "Pushes that failed, and snapshots withheld as inconsistent.", registry=r)
        # ---- config input
        self.inbound = Counter("pilot_inbound_updates", "Config object changes, by kind and event (add, update, "
                               "delete).", ["kind", "event"], registry=r)
        self.config_rejects = Counter("xds_server_config_rejects", "Config objects rejected by validation, by kind "
                                      "(each new rejection once).", ["kind"], registry=r)
        self.config_rejected = Gauge("xds_server_config_rejected", "Config objects currently rejected, by kind.",
                                     ["kind"], registry=r)

        self._generation = 0
        self._pushed: dict[str, _Push] = {}
        self._tracking: dict[str, _Tracking] = {}  # connection id -> tracking
        self._connections_of: dict[str, set[str]] = {}  # proxy key -> its connection ids (O(1) per proxy on a push)
        self._streams_per_proxy: dict[str, int] = {}
        self._known: set[ObjectRef] = set()
        self._reported: dict[str, set[tuple[str, str, str]]] = {}  # origin -> (kind, ref, message)
        self._unknown_seen: set[str] = set()
        self._recv_max = 0

    def watch_send_budget(self, budget: Any) -> None:
        """Export the send budget's state (xds/budget.py), read at scrape time."""
        self.registry.register(_SendBudgetCollector(budget))

    def _loop_histogram(self, name: str, documentation: str, buckets: tuple[float, ...],
                        labelnames: tuple[str, ...] = ()) -> LoopHistogram:
        histogram = LoopHistogram(name, documentation, buckets, labelnames)
        self.registry.register(histogram)
        return histogram

    # ------------------------------------------------------------------ store listeners
    def store_changed(self, refs: Iterable[ObjectRef]) -> None:
        """Store.subscribe listener: called after the mutation, so `get` shows the new state."""
        get = self._store.get if self._store is not None else (lambda ref: None)
        for ref in refs:
            if get(ref) is None:
                event = "delete"
                self._known.discard(ref)
            elif ref in self._known:
                event = "update"
            else:
                event = "add"
                self._known.add(ref)
            self.inbound.labels(ref.kind, event).inc()

    def problems_reported(self, origin: str, problems: tuple[Problem, ...]) -> None:
        """Store.subscribe_reports listener. A source re-reports its whole set each time; count new ones."""
        current = {(p.ref.kind if p.ref else "unknown", str(p.ref or ""), p.message)
                   for p in problems if not p.warning}
        before = self._reported.get(origin, set())
        for kind, _, _ in current - before:
            self.config_rejects.labels(kind).inc()
        if current:
            self._reported[origin] = current
        else:
            self._reported.pop(origin, None)
        totals: dict[str, int] = dict.fromkeys(_label_values(self.config_rejected), 0)
        for entries in self._reported.values():
            for kind, _, _ in entries:
                totals[kind] = totals.get(kind, 0) + 1
        for kind, n in totals.items():
            self.config_rejected.labels(kind).set(n)

    # ------------------------------------------------------------------ PushObserver
    def push_done(self, proxies: int, changed: int, seconds: float, debounce_seconds: float) -> None:
        self.push_build.observe(seconds)
        self.debounce_time.observe(debounce_seconds)

    def rejected_snapshot(self, proxy_key: str, problems: list[str]) -> None:
        self.internal_errors.inc()

    def proxy_updated(self, proxy_key: str, debounce_seconds: float) -> None:
        now = self._clock()
        self._generation += 1
        changed_at = now - debounce_seconds
        previous = self._pushed.get(proxy_key)
        if previous is None:
            self._pushed[proxy_key] = _Push(self._generation, changed_at, now)
            return
        # Not yet converged on an earlier push: convergence still counts from the earlier change.
        for c in self._connections_of.get(proxy_key, ()):
            if self._tracking[c].changed_at is not None:
                changed_at = min(changed_at, previous.changed_at)
                break
        previous.generation = self._generation  # streams compare generations, never hold this object
        previous.changed_at = changed_at
        previous.pushed_at = now

    def guard_push(self, push: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """Wrap the planner's push so a failing push is counted (the debouncer logs it)."""
        async def guarded(*args: Any) -> None:
            try:
                await push(*args)
            except Exception:
                self.internal_errors.inc()
                raise

        return guarded

    # ------------------------------------------------------------------ ServerObserver
    def stream_observer(self, connection: Any) -> _StreamMetrics:
        return _StreamMetrics(self, connection)

    def connected(self, connection: Any) -> None:
        self.xds.labels(connection.kind).inc()
        key = connection.proxy.key
        self._streams_per_proxy[key] = self._streams_per_proxy.get(key, 0) + 1
        pushed = self._pushed.get(key)
        # A push before this stream existed is not this stream's to converge on.
        self._tracking[connection.id] = _Tracking(key, pushed.generation if pushed else 0)
        self._connections_of.setdefault(key, set()).add(connection.id)

    def disconnected(self, connection: Any) -> None:
        self.xds.labels(connection.kind).dec()
        self._tracking.pop(connection.id, None)
        key = connection.proxy.key
        ids = self._connections_of.get(key)
        if ids is not None:
            ids.discard(connection.id)
            if not ids:
                del self._connections_of[key]
        left = self._streams_per_proxy.get(key, 1) - 1
        if left <= 0:
            self._streams_per_proxy.pop(key, None)
            self._pushed.pop(key, None)
        else:
            self._streams_per_proxy[key] = left

    def _per_type(self, type_url: str) -> tuple[Any, Any, Any]:
        """The labelled children of one xDS type (labels() takes a lock and builds a key per call)."""
        found = self._by_type.get(type_url)
        if found is None:
            short = short_name(type_url)
            found = self._by_type[type_url] = (self.pushes.labels(short), self.config_size.labels(short),
                                               self.push_time.labels(short))
        return found

    def sent(self, connection: Any, type_url: str, resources: int, size: int, seconds: float) -> None:
        now = self._clock()
        pushes, config_size, push_time = self._per_type(type_url)
        pushes.inc()
        config_size.observe(size)
        self.send_time.observe(seconds)
        track = self._tracking.get(connection.id)
        if track is None:
            return
        pushed = self._pushed.get(track.proxy_key)
        if pushed is not None and pushed.generation != track.generation:
            track.generation = pushed.generation
            track.changed_at = pushed.changed_at if track.changed_at is None else min(
                track.changed_at, pushed.changed_at)
            track.pushed_at = pushed.pushed_at
            track.queued = False
        if track.changed_at is None:
            return
        if not track.queued:
            track.queued = True
            self.queue_time.observe(max(0.0, now - seconds - track.pushed_at))
        push_time.observe(now - track.pushed_at)

    def write_timeout(self, connection: Any) -> None:
        self.write_timeouts.inc()

    def refused(self, code: str, reason: str) -> None:
        self.refusals.labels(code).inc()

    def stream_error(self, code: str, reason: str) -> None:
        self.stream_errors.labels(code).inc()

    def received(self, size: int) -> None:
        if size > self._recv_max:
            self._recv_max = size
            self.recv_max.set(size)

    # ------------------------------------------------------------------ from _StreamMetrics
    def _acked(self, connection: Any) -> None:
        track = self._tracking.get(connection.id)
        if track is None or track.changed_at is None:
            return
        for st in connection.machine.types.values():
            if _awaiting_ack(st.status):
                return
        self.convergence.observe(max(0.0, self._clock() - track.changed_at))
        track.changed_at = None

    def _nacked(self, connection: Any, type_url: str, nack: Nack) -> None:
        self.rejects.labels(short_name(type_url)).inc()
        track = self._tracking.get(connection.id)
        if track is not None:
            track.changed_at = None  # this push will not converge
        proxy = connection.proxy
        log.warning("xds NACK proxy=%s type=%s nonce=%s version=%s: %s",
                    getattr(proxy, "pod_key", proxy.key), short_name(type_url), nack.nonce, nack.version,
                    nack.error,
                    extra={"proxy": getattr(proxy, "pod_key", proxy.key), "node_id": proxy.key,
                           "connection_id": connection.id, "type": short_name(type_url), "nonce": nack.nonce,
                           "version": nack.version, "error": nack.error})

    def _unknown_type(self, type_url: str) -> None:
        label = type_url[:200]
        if label not in self._unknown_seen:
            if len(self._unknown_seen) >= MAX_UNKNOWN_TYPES:
                label = "other"
            else:
                self._unknown_seen.add(label)
        self.unknown_types.labels(label).inc()


class _RuntimeCollector:
    """asyncio tasks of the serving loop and Python threads, read at scrape time (on the loop)."""

    def collect(self) -> Iterable[Any]:
        try:
            tasks = len(asyncio.all_tasks(asyncio.get_running_loop()))
        except RuntimeError:  # scraped outside the event loop (a test reading the registry directly)
            tasks = None
        if tasks is not None:
            yield GaugeMetricFamily("xds_server_asyncio_tasks", "asyncio tasks alive in the server's loop.",
                                    value=tasks)
        yield GaugeMetricFamily("xds_server_threads", "Python threads alive.", value=threading.active_count())

    def describe(self) -> Iterable[Any]:
        return []


class _SendBudgetCollector:
    """The bound on response bytes in flight (xds/budget.py): how full it is and who waits."""

    def __init__(self, budget: Any) -> None:
        self._budget = budget

    def collect(self) -> Iterable[Any]:
        b = self._budget
        yield GaugeMetricFamily("xds_server_send_bytes_in_flight",
                                "Response bytes built and not yet through HTTP/2 flow control, all streams.",
                                value=b.in_flight)
        yield GaugeMetricFamily("xds_server_send_bytes_in_flight_peak",
                                "The largest xds_server_send_bytes_in_flight since the server started.",
                                value=b.peak)
        yield GaugeMetricFamily("xds_server_send_bytes_limit",
                                "--max-bytes-in-flight (0: no bound).", value=b.limit)
        yield GaugeMetricFamily("xds_server_send_waiters", "Streams waiting for their turn to build a response.",
                                value=b.waiting)
        yield CounterMetricFamily("xds_server_send_waits", "Turns that had to wait for the send budget.",
                                  value=b.waits)
        yield CounterMetricFamily("xds_server_send_wait_seconds",
                                  "Time streams spent waiting for the send budget, in total.", value=b.wait_seconds)

    def describe(self) -> Iterable[Any]:
        return []


class _StreamMetrics:
    """The StreamObserver of one connection."""

    __slots__ = ("connection", "metrics")

    def __init__(self, metrics: Metrics, connection: Any) -> None:
        self.metrics = metrics
        self.connection = connection

    def request(self, type_url: str) -> None:
        pass

    def ack(self, type_url: str) -> None:
        self.metrics._acked(self.connection)

    def nack(self, type_url: str, nack: Nack) -> None:
        self.metrics._nacked(self.connection, type_url, nack)

    def stale_nonce(self, type_url: str) -> None:
        self.metrics.expired_nonce.labels(short_name(type_url)).inc()

    def unknown_type(self, type_url: str) -> None:
        self.metrics._unknown_type(type_url)


def _label_values(metric: Gauge) -> list[str]:
    """The label values a one-label metric has been set for (so a kind can drop back to 0)."""
    out: list[str] = []
    for family in metric.collect():
        for sample in family.samples:
            out.extend(sample.labels.values())
    return out
