"""One bound on the response bytes the server holds for all its xDS streams at once.

Without it a stream's memory depends on its client's pace: at a cold start every stream builds
its responses (a few MB each at 1,000 services) and hands them to gRPC, which keeps each until
HTTP/2 flow control lets it out. 2,000 clients that read slowly held 1.75 GB (issue 19). istiod
bounds the same thing by the number of pushes in progress (PILOT_PUSH_THROTTLE, a semaphore
taken around each connection's push in pilot/pkg/xds/discovery.go); here the bound is on the
bytes themselves, which is what memory is made of, and does not depend on response sizes.

The rules:
- Bytes are charged when a response is built (it exists from then on) and released when its
  write completes. gRPC's C core (which grpc.aio runs on) completes a message's write only
  once all of it has passed HTTP/2 flow control and been written to the socket: a 4 MB write
  to a client that does not read stays pending until the client reads, and with a window as
  large as Envoy's (256 MiB) a write to a client process that stopped reading its socket stays
  pending once the kernel's socket buffers are full (tests/unit/xds/test_send_budget.py checks
  both on the installed gRPC). So a completed write holds nothing in this process. grpc-go,
  istiod's transport, documents the same for SendMsg ("blocks until there is sufficient flow
  control to schedule m with the transport"), and istiod's throttle slot is held until its
  sends return. The client's ACK of the nonce would also be a correct signal but a stricter
  one: it adds the client's decode time to every hold, and a client that reads but never ACKs
  would keep its bytes charged.
- A stream builds only on its turn: at once while bytes are below the bound and nobody waits,
  else in arrival order (oldest first, one turn at a time, so nobody is starved and the bound is
  exceeded by at most the one push being built). Nothing is built while waiting: a waiting
  stream later builds its newest state.
- A response bigger than the bound still goes, on its turn, when bytes fall below the bound.
- A stream that ends releases whatever it still had charged (a write blocked by a peer that
  stopped reading ends with the send timeout, xds/watchdog.py).
"""

from __future__ import annotations

import asyncio
from collections import deque


class SendBudget:
    """Response bytes built and not yet written, over all streams; FIFO turns to build more.

    limit <= 0 means no bound (every turn is immediate), but bytes are still counted.
    Used from the event loop thread only.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0  # bytes charged and not yet released
        self.peak = 0  # the largest in_flight seen (a test and the metric read it)
        self.waits = 0  # turns that had to wait
        self.wait_seconds = 0.0  # their total wait
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._granted = False  # a waiter has been given its turn and not yet finished building

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def open(self) -> bool:
        """A stream may build now without waiting (no one is ahead of it and there is room)."""
        return not self._waiters and not self._granted and self._has_room()

    def _has_room(self) -> bool:
        return self.limit <= 0 or self.in_flight < self.limit

    async def turn(self) -> None:
        """Wait until this stream may build; then build, charge() and call done() with no await between."""
        if self.open():
            self._granted = True
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self.waits += 1
        started = loop.time()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted, then cancelled: pass the turn on
                self.done()
            else:
                self._waiters.remove(waiter)
            raise
        finally:
            self.wait_seconds += loop.time() - started

    def charge(self, nbytes: int) -> None:
        self.in_flight += nbytes
        if self.in_flight > self.peak:
            self.peak = self.in_flight

    def done(self) -> None:
        """The turn's building is over (charged, or nothing to send): the next waiter may go."""
        self._granted = False
        self._grant()

    def release(self, nbytes: int) -> None:
        self.in_flight -= nbytes
        if not self._granted:
            self._grant()

    def _grant(self) -> None:
        while self._waiters and self._has_room():
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while waiting
                continue
            waiter.set_result(None)
            self._granted = True
            return
