"""Keep CPython's cyclic garbage collector off the push path.

A server holding thousands of streams keeps a few hundred thousand long-lived container objects
(per-stream state, gRPC and asyncio internals, shared resources). A full (generation 2)
collection traverses all of them: about 0.4 s of CPU at 2,000 streams, and it fires every few
pushes, in the middle of one. Measured (bench/, 2,000 proxies x 1,000 services), a third of the
CPU of a push went there.

So what survives a second of work is frozen (`gc.freeze`, at each tick), and automatic
collections are off while the collector runs: the tick's young collection is the only one, so
cyclic garbage lives at most a second, and no collection runs in the middle of a push (the
automatic ones cost ~20 ms of a Pod change's 360 ms at 2,000 streams, measured). Frozen
objects that die are still freed by reference counting (a closed stream's state is: services.py
breaks its one reference cycle); a full collection (unfreeze, collect, freeze) reclaims any
other cyclic garbage every `full_every` seconds, at a moment without pushes when there is one
(or regardless, once it is twice overdue).

A tick also waits, up to `longest_wait`, while a push is coming or being sent (`sending`:
changes waiting out the debounce, a push visiting proxies, streams woken and not yet answered,
writes still completing): the young collection then finds the fan-out's objects still alive
anyway (none of it is garbage yet), and run before or in its middle it held up every stream
behind it (30-80 ms at 2,000 streams: gRPC's per-write objects are cyclic garbage). Right after
the fan-out it costs the same and delays nobody's config.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger("xds_server.push")


class Collector:
    def __init__(self, *, tick: float = 1.0, idle: float = 2.0, full_every: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, sending: Callable[[], bool] | None = None,
                 recheck: float = 0.02, longest_wait: float = 2.0) -> None:
        self.tick = tick
        self.sending = sending
        self.recheck = recheck
        self.longest_wait = longest_wait
        self.deferred = 0  # ticks that waited for a fan-out to end
        self.idle = idle
        self.full_every = full_every
        self._clock = clock
        self._last_busy = clock()
        self._last_full = clock()
        self.full_collections = 0

    def busy(self) -> None:
        """A push ran: no full collection right now. What it left is frozen at the next tick, not
        here: the push's streams are still sending, and a young collection now (~17 ms after a Pod
        change at 2,000 streams) would hold every one of them up."""
        self._last_busy = self._clock()

    def settle(self) -> None:
        gc.collect(1)  # young garbage first, so that it is not frozen
        gc.freeze()

    def full(self) -> None:
        start = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._last_full = self._clock()
        self.full_collections += 1
        log.debug("full garbage collection: %d unreachable objects in %.3fs", found, time.perf_counter() - start)

    def step(self) -> None:
        """One tick: freeze what is new, or run the full collection when it is due."""
        now = self._clock()
        since = now - self._last_full
        if (since >= self.full_every and now - self._last_busy >= self.idle) or since >= 2 * self.full_every:
            self.full()
        else:
            self.settle()

    async def quiet_moment(self) -> None:
        """Return once nothing is being sent, or after `longest_wait`: a tick is never skipped."""
        sending = self.sending
        if sending is None or not sending():
            return
        self.deferred += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.longest_wait
        while sending() and loop.time() < deadline:
            await asyncio.sleep(self.recheck)

    async def run(self) -> None:
        gc.disable()
        try:
            while True:
                await asyncio.sleep(self.tick)
                await self.quiet_moment()
                self.step()
        finally:
            gc.enable()
