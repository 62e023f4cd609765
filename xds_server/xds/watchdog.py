"""The send timeout: one timer for every stream, not one per stream.

A stream whose write has been blocked by HTTP/2 flow control for `timeout` (a peer that stopped
reading) is ended. Every quarter of the timeout one scan looks at the writes in progress, so a
blocked write is noticed between 1 and 1.25 timeouts after it started. One timer per stream
re-arming itself woke the loop N times per quarter timeout (2,000 streams at 60 s: 133 wake-ups a
second, most of the server's idle CPU); the scan costs ~0.1 us a stream, four times a minute.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Watched(Protocol):
    write_started: float | None  # perf_counter() when the write in progress began, None when not writing

    def expire(self) -> None:
        """The write in progress has been blocked too long: end the stream."""


class WriteWatchdog:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._watched: set[Watched] = set()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._watched)

    def __contains__(self, item: object) -> bool:
        return item in self._watched

    @property
    def armed(self) -> bool:
        return self._timer is not None

    def add(self, stream: Watched) -> None:
        self._watched.add(stream)
        if self._timer is None:
            self._arm()

    def discard(self, stream: Watched) -> None:
        self._watched.discard(stream)
        if not self._watched and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.timeout / 4, self._scan)

    def _scan(self) -> None:
        deadline = time.perf_counter() - self.timeout
        # expire() only cancels a task: the stream leaves the set later, from its own finally.
        expired = [s for s in self._watched if s.write_started is not None and s.write_started <= deadline]
        for stream in expired:
            stream.expire()
        self._arm()
