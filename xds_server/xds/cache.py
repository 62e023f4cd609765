"""SnapshotCache: the current ProxySnapshot of every connected proxy, and who to wake.

The seam between the push side and the transport: the planner calls
`set_snapshot`; streams `attach` with a wake callback and read `entry.snapshot` when woken.
A proxy's snapshot is built on first attach by the injected `build` function, so a new
connection is answered at once with config for the current store generation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic

from xds_server.resources import ProxySnapshot
from xds_server.xds.proxy import P

Wake = Callable[[], None]


class CacheEntry(Generic[P]):
    __slots__ = ("key", "proxy", "snapshot", "wakers")

    def __init__(self, key: str, proxy: P, snapshot: ProxySnapshot) -> None:
        self.key = key
        self.proxy = proxy
        self.snapshot = snapshot
        self.wakers: list[Wake] = []


class SnapshotCache(Generic[P]):
    def __init__(self, build: Callable[[P], ProxySnapshot], forget: Callable[[str], None] | None = None) -> None:
        self._build = build
        self._forget = forget  # told when a proxy's last stream left
        self._entries: dict[str, CacheEntry[P]] = {}
        # Proxies whose node changed (a newer connection) since their snapshot was built: the
        # next push rebuilds them whatever changed.
        self.stale: set[str] = set()

    def attach(self, proxy: P, wake: Wake) -> CacheEntry[P]:
        entry = self._entries.get(proxy.key)
        if entry is None:
            entry = self._entries[proxy.key] = CacheEntry(proxy.key, proxy, self._build(proxy))
        elif entry.proxy is not proxy:
            entry.proxy = proxy  # the newest connection's node wins (metadata may have changed)
            self.stale.add(proxy.key)
        entry.wakers.append(wake)
        return entry

    def detach(self, entry: CacheEntry[P], wake: Wake) -> None:
        try:
            entry.wakers.remove(wake)
        except ValueError:
            return
        if not entry.wakers and self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
            self.stale.discard(entry.key)
            if self._forget is not None:
                self._forget(entry.key)

    def set_snapshot(self, key: str, snapshot: ProxySnapshot) -> bool:
        """Replace a proxy's snapshot and wake its streams; False if the proxy is not connected."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        if snapshot is entry.snapshot:
            return True
        entry.snapshot = snapshot
        for wake in entry.wakers:
            wake()
        return True

    def get(self, key: str) -> ProxySnapshot | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.snapshot

    def entries(self) -> Iterator[CacheEntry[P]]:
        return iter(list(self._entries.values()))

    def entry(self, key: str) -> CacheEntry[P] | None:
        return self._entries.get(key)

    def __len__(self) -> int:
        return len(self._entries)
