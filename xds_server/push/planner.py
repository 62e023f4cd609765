"""Turn a store generation into every connected proxy's snapshot.

Per push: one StoreView, one memo round; the dependency index (push/dependencies.py) says which
proxies the changes since the last push can reach, each of those gets its snapshot generated
(shared parts come from the memo, so they are built once; the proxy's last result lets the
translator carry over what the changes left valid), checked for consistency, and handed to the
cache, which wakes only the streams whose snapshot changed. Proxies the change cannot reach are
not visited at all. The loop yields between proxies so that streams keep being served during a
large push.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from xds_server.config import ObjectRef
from xds_server.memo import Memo
from xds_server.mesh.proxy import Proxy
from xds_server.push.dependencies import ProxyDependencies
from xds_server.resources import ProxySnapshot
from xds_server.store import Store, StoreView
from xds_server.translate.generator import Generated, Previous
from xds_server.xds.cache import SnapshotCache

log = logging.getLogger("xds_server.push")

# (view, proxy, translation cache, the proxy's last result) -> its snapshot and what it read.
Generate = Callable[[StoreView, Proxy, Memo, Previous | None], Generated]
YIELD_EVERY = 16


class PushObserver:
    """Metrics hooks; admin/metrics.py overrides these."""

    def push_done(self, proxies: int, changed: int, seconds: float, debounce_seconds: float) -> None:
        pass

    def rejected_snapshot(self, proxy_key: str, problems: list[str]) -> None:
        pass

    def proxy_updated(self, proxy_key: str, debounce_seconds: float) -> None:
        """A push replaced this proxy's snapshot and woke its streams (convergence starts here)."""


class Planner:
    def __init__(self, store: Store, generate: Generate, dependencies: ProxyDependencies,
                 observer: PushObserver | None = None) -> None:
        self.store = store
        self._generate = generate
        self.dependencies = dependencies
        self.memo = Memo()  # the translation cache, one round per push
        self.cache = SnapshotCache(self.build, dependencies.forget)
        # Generation of the last push that visited every proxy it had to (None: none yet, or the
        # last one failed part way): the next push asks what changed since then.
        self._settled: int | None = None
        self.visited = 0  # proxies the last push visited
        self.observer = observer or PushObserver()
        self.last_push_at = 0.0
        self.rejected: dict[str, list[str]] = {}  # proxy key -> problems of its last rejected snapshot
        self.after_push: Callable[[], None] | None = None  # e.g. Collector.busy (serve sets it)
        self.pushing = False  # a push is visiting proxies (it yields to the loop every YIELD_EVERY)

    def build(self, proxy: Proxy, view: StoreView | None = None) -> ProxySnapshot:
        """Snapshot for one proxy on `view` (default: the current generation, as on first connect)."""
        view = view if view is not None else self.store.view()
        result = self._generate(view, proxy, self.memo, self.dependencies.previous(proxy.key, view))
        self.dependencies.put(proxy.key, result)
        snapshot = result.snapshot
        dangling = snapshot.dangling()
        if dangling:
            previous = self.cache.get(proxy.key)
            self.rejected[proxy.key] = dangling
            self.observer.rejected_snapshot(proxy.key, dangling)
            log.error("inconsistent config for %s not published (keeping the last good one): %s",
                      proxy.key, "; ".join(dangling[:5]))
            if previous is not None:
                return previous
        else:
            self.rejected.pop(proxy.key, None)
        return snapshot

    async def push(self, changed: frozenset[ObjectRef], debounce_seconds: float = 0.0) -> None:
        self.pushing = True
        try:
            await self._push(changed, debounce_seconds)
        finally:
            self.pushing = False
        if self.after_push is not None:
            self.after_push()

    async def _push(self, changed: frozenset[ObjectRef], debounce_seconds: float) -> None:
        start = time.perf_counter()
        self.memo.rotate()
        entries = list(self.cache.entries())
        connected = len(entries)
        updated = 0
        # One generation for the whole push: changes arriving meanwhile are the next push's.
        view = self.store.view()
        since, self._settled = self._settled, None
        changes = view.changes_since(since) if since is not None else None
        if since is not None and changes is not None:
            keys = self.dependencies.reached(changes, view.mesh.root_namespace, view)
            if keys is not None:
                self.dependencies.settle(since)
                keys |= self.cache.stale
                entries = [e for e in (self.cache.entry(k) for k in keys) if e is not None]
        self.cache.stale.clear()
        self.visited = len(entries)
        for i, entry in enumerate(entries):
            snapshot = self.build(entry.proxy, view)
            if snapshot is not entry.snapshot and self.cache.set_snapshot(entry.key, snapshot):
                updated += 1
                self.observer.proxy_updated(entry.key, debounce_seconds)
            if i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        self._settled = view.generation
        self.last_push_at = time.time()
        elapsed = time.perf_counter() - start
        self.observer.push_done(connected, updated, elapsed, debounce_seconds)
        log.debug("push: %d of %d proxies visited, %d snapshots replaced in %.3fs (%d changed objects)",
                  len(entries), connected, updated, elapsed, len(changed))
