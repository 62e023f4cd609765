"""The shared send-timeout watchdog: one timer for all streams, blocked writes expired once."""

from __future__ import annotations

import asyncio
import time

from xds_server.xds.watchdog import WriteWatchdog


class FakeStream:
    def __init__(self) -> None:
        self.write_started: float | None = None
        self.expired = 0

    def expire(self) -> None:
        self.expired += 1


async def test_only_a_write_blocked_longer_than_the_timeout_is_expired() -> None:
    dog = WriteWatchdog(timeout=0.2)
    idle, fresh, blocked = FakeStream(), FakeStream(), FakeStream()
    for s in (idle, fresh, blocked):
        dog.add(s)
    blocked.write_started = time.perf_counter() - 10.0
    fresh.write_started = time.perf_counter() + 3600.0  # far from its deadline for this whole test
    deadline = time.monotonic() + 5.0
    while not blocked.expired and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert blocked.expired >= 1
    assert idle.expired == 0 and fresh.expired == 0
    for s in (idle, fresh, blocked):
        dog.discard(s)


async def test_one_timer_for_many_streams_and_none_once_they_are_gone() -> None:
    dog = WriteWatchdog(timeout=60.0)
    loop = asyncio.get_running_loop()
    streams = [FakeStream() for _ in range(500)]
    armed: list[object] = []
    real = loop.call_later

    def counting_call_later(*args, **kwargs):  # type: ignore[no-untyped-def]
        handle = real(*args, **kwargs)
        armed.append(handle)
        return handle

    loop.call_later = counting_call_later  # type: ignore[method-assign]
    try:
        for s in streams:
            dog.add(s)
    finally:
        del loop.call_later  # back to the class's method
    assert len(armed) == 1 and dog.armed and len(dog) == 500
    for s in streams:
        dog.discard(s)
    assert not dog.armed and len(dog) == 0
    assert armed[0].cancelled()  # type: ignore[attr-defined]
