"""Debounce (istiod's `pilot/pkg/xds/discovery.go` debounce, 100 ms quiet / 1 s max): bursts coalesce;
churn still pushes by the max."""

from __future__ import annotations

import asyncio

from xds_server.config import ObjectRef
from xds_server.push.debounce import Debouncer


async def test_a_burst_of_50_changes_within_50ms_is_at_most_2_pushes() -> None:
    pushes: list[frozenset[ObjectRef]] = []

    async def push(refs: frozenset[ObjectRef], _: float) -> None:
        pushes.append(refs)

    d = Debouncer(push, quiet=0.1, longest=1.0)
    task = asyncio.create_task(d.run())
    try:
        for i in range(50):
            d.notify([ObjectRef("Pod", "ns", f"p{i}")])
            await asyncio.sleep(0.001)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3
        while sum(len(p) for p in pushes) < 50 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert 1 <= len(pushes) <= 2 and sum(len(p) for p in pushes) == 50
    finally:
        task.cancel()


async def test_steady_churn_still_pushes_every_debounce_max() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def push(refs: frozenset[ObjectRef], _: float) -> None:
        times.append(loop.time())

    d = Debouncer(push, quiet=0.1, longest=0.3)
    task = asyncio.create_task(d.run())
    try:
        start = loop.time()
        while loop.time() - start < 1.0:  # a change every 20 ms: never quiet for 100 ms
            d.notify([ObjectRef("Pod", "ns", "p")])
            await asyncio.sleep(0.02)
        assert len(times) >= 2
        gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
        assert max(gaps) < 0.3 + 0.15
    finally:
        task.cancel()


async def test_waiting_from_the_first_change_until_its_push_starts() -> None:
    """The garbage collector's tick defers while `waiting` (push/collector.py): true from a burst's
    first change until its push is handed over, false again once it is."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def push(refs: frozenset[ObjectRef], _: float) -> None:
        started.set()
        await release.wait()

    d = Debouncer(push, quiet=0.05, longest=1.0)
    task = asyncio.create_task(d.run())
    try:
        assert not d.waiting
        d.notify([ObjectRef("Pod", "ns", "p")])
        assert d.waiting
        await asyncio.wait_for(started.wait(), 2)
        assert not d.waiting  # the push runs now: the planner's own flag covers it
        d.notify([ObjectRef("Pod", "ns", "q")])  # a change during the push waits for the next one
        assert d.waiting
        release.set()
    finally:
        task.cancel()
