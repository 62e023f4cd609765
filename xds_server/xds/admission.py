"""Admission of new xDS streams: a token bucket (istiod PILOT_MAX_REQUESTS_PER_SECOND).

A reconnect burst (after a restart, a GOAWAY, a network blip) is a burst of full resyncs; a cap
on new streams per second keeps the server answering the streams it has. A new stream takes a
token; when none is left it *reserves* the next one and waits for it, up to `max_wait` (a short
burst is smoothed rather than refused, as istiod waits up to 1 s). A stream that would wait longer
is refused at once with RESOURCE_EXHAUSTED: Envoy treats that code as transient and retries with
jittered backoff, which spreads the storm.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class StreamAdmission:
    def __init__(self, rate: float, burst: int, max_wait: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate  # tokens per second; <= 0: unlimited
        self.burst = max(1, burst)
        self.max_wait = max(0.0, max_wait)
        self._clock = clock
        self._tokens = float(self.burst)
        self._at = clock()

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def reserve(self) -> float | None:
        """Take a token: seconds to wait for it (0: now), or None when the wait would be too long."""
        if self.unlimited:
            return 0.0
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
        if wait > self.max_wait:
            return None
        self._tokens -= 1  # may go below 0: the reservation of a waiting stream
        return wait

    async def admit(self) -> bool:
        """Wait for this stream's turn; False when it must be refused (RESOURCE_EXHAUSTED)."""
        wait = self.reserve()
        if wait is None:
            return False
        if wait > 0:
            await asyncio.sleep(wait)
        return True
