"""Coalesce bursts of config changes into one push (istiod's debounce, STYLE pattern 7).

A push fires when no change arrived for `quiet` seconds, or `longest` seconds after the first
change of the burst, whichever is first. Only one push runs at a time; changes that arrive
meanwhile are merged into the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from xds_server.config import ObjectRef

log = logging.getLogger("xds_server.push")

PushFn = Callable[[frozenset[ObjectRef], float], Awaitable[None]]


class Debouncer:
    def __init__(self, push: PushFn, quiet: float = 0.1, longest: float = 1.0) -> None:
        self._push = push
        self.quiet = quiet
        self.longest = longest
        self._pending: set[ObjectRef] = set()
        self._first: float | None = None
        self._last = 0.0
        self._event = asyncio.Event()
        self.pushes = 0

    @property
    def waiting(self) -> bool:
        """Changes are waiting for their push (the burst's quiet period has not passed yet)."""
        return self._first is not None

    def notify(self, refs: Iterable[ObjectRef]) -> None:
        """Called on the loop thread for every store change."""
        loop = asyncio.get_running_loop()
        self._pending.update(refs)
        self._last = loop.time()
        if self._first is None:
            self._first = self._last
        self._event.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._event.wait()
            while True:
                assert self._first is not None
                deadline = min(self._last + self.quiet, self._first + self.longest)
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._event.clear()
                try:
                    await asyncio.wait_for(self._event.wait(), left)
                except TimeoutError:
                    pass
            refs, first = frozenset(self._pending), self._first
            self._pending = set()
            self._first = None
            self._event.clear()
            self.pushes += 1
            try:
                await self._push(refs, loop.time() - first)
            except Exception:  # a bug in one push must not stop all future pushes
                log.exception("push failed")
