"""The garbage collector policy (push/collector.py): young garbage freed each tick, survivors frozen,
full collections only when due and preferably between pushes, automatic collections off meanwhile."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from xds_server.push.collector import Collector


class Node:
    """A container that can sit in a reference cycle and be watched through a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection may decide these tests' outcome
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()
        if was_enabled:
            gc.enable()


def test_settle_frees_young_cyclic_garbage_and_freezes_what_lives() -> None:
    garbage = cycle()
    live = Node()
    live.other = live
    frozen_before = gc.get_freeze_count()
    Collector().settle()
    assert garbage() is None
    assert gc.get_freeze_count() > frozen_before
    assert not any(o is live for o in gc.get_objects(generation=0))


def test_only_a_full_collection_reclaims_a_cycle_that_died_after_it_was_frozen() -> None:
    collector = Collector()
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    collector.settle()  # alive at the tick: frozen
    del a, b
    collector.settle()
    assert ref() is not None  # frozen garbage: a young collection does not look at it
    collector.full()
    assert ref() is None
    assert collector.full_collections == 1


def test_the_full_collection_waits_for_a_quiet_moment_but_not_forever() -> None:
    clock = Clock()
    collector = Collector(tick=1.0, idle=2.0, full_every=300.0, clock=clock)
    clock.now += 299.0
    collector.step()
    assert collector.full_collections == 0  # not due yet
    clock.now += 2.0
    collector.busy()  # a push just ran
    collector.step()
    assert collector.full_collections == 0  # due, but it would land in the push's fan-out
    clock.now += 2.0
    collector.step()
    assert collector.full_collections == 1  # due and quiet for `idle` seconds
    for _ in range(5):  # from now on a push every second: never quiet
        clock.now += 100.0
        collector.busy()
        collector.step()
    assert collector.full_collections == 1  # 500 s since the last one: overdue, not yet twice
    clock.now += 100.0
    collector.busy()
    collector.step()
    assert collector.full_collections == 2  # twice overdue: runs regardless


async def test_automatic_collections_are_off_while_it_runs_and_back_after() -> None:
    gc.enable()
    collector = Collector(tick=0.01)
    task = asyncio.create_task(collector.run())
    garbage = cycle()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while garbage() is not None and loop.time() < deadline:  # the tick's young collection
        await asyncio.sleep(0.01)
    assert garbage() is None
    assert not gc.isenabled()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gc.isenabled()


async def test_a_tick_waits_for_the_fan_out_to_end_but_never_longer_than_longest_wait() -> None:
    sending = [True]
    collector = Collector(tick=0.01, recheck=0.005, longest_wait=60.0, sending=lambda: sending[0])
    task = asyncio.create_task(collector.run())
    garbage = cycle()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while collector.deferred == 0 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert collector.deferred == 1
    for _ in range(5):  # the tick is waiting: nothing collected while streams are being sent
        await asyncio.sleep(0.02)
        assert garbage() is not None
    sending[0] = False
    while garbage() is not None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert garbage() is None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    # Always sending: the tick still runs, `longest_wait` late.
    collector = Collector(tick=0.01, recheck=0.005, longest_wait=0.05, sending=lambda: True)
    task = asyncio.create_task(collector.run())
    garbage = cycle()
    deadline = loop.time() + 5.0
    while garbage() is not None and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert garbage() is None
    assert collector.deferred >= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
