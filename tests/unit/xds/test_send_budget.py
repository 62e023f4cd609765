"""The send budget (xds/budget.py): turns in arrival order, one at a time, bytes bounded.

Also the gRPC behaviour the budget relies on: a write completes only once its message has passed
HTTP/2 flow control, so a write to a client that does not read stays pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import grpc
import pytest

from xds_server.xds.budget import SendBudget


async def _spin() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_turns_are_immediate_below_the_bound() -> None:
    budget = SendBudget(100)
    await budget.turn()
    budget.charge(60)
    budget.done()
    assert budget.open()
    await budget.turn()
    budget.charge(60)  # a build may take it past the bound, by at most what it built
    budget.done()
    assert budget.in_flight == 120 and budget.peak == 120
    assert not budget.open()
    assert budget.waits == 0


async def test_waiters_get_their_turns_oldest_first_one_at_a_time() -> None:
    budget = SendBudget(100)
    budget.charge(100)
    order: list[int] = []

    async def stream(i: int) -> None:
        await budget.turn()
        order.append(i)
        budget.charge(30)
        budget.done()

    tasks = [asyncio.create_task(stream(i)) for i in range(5)]
    await _spin()
    assert budget.waiting == 5 and not order
    budget.release(100)  # room for builds until 100 is reached again: four of 30 (the last goes past it)
    await _spin()
    assert order == [0, 1, 2, 3]
    assert budget.in_flight == 120 and budget.waiting == 1
    budget.release(30)  # 90: the last one goes
    await _spin()
    assert order == [0, 1, 2, 3, 4]
    await asyncio.gather(*tasks)
    assert budget.waits == 5 and budget.wait_seconds >= 0


async def test_a_newcomer_never_overtakes_a_waiter() -> None:
    budget = SendBudget(10)
    budget.charge(10)
    first = asyncio.create_task(budget.turn())
    await _spin()
    budget.release(10)  # the waiter is granted; its task has not run yet
    assert not budget.open()  # so a newcomer (e.g. a reader's direct answer) must queue behind it
    await first
    budget.done()
    assert budget.open()


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    budget = SendBudget(10)
    budget.charge(10)
    a = asyncio.create_task(budget.turn())
    b = asyncio.create_task(budget.turn())
    await _spin()
    a.cancel()  # cancelled while waiting: it leaves the queue
    await _spin()
    assert budget.waiting == 1
    budget.release(10)
    c = asyncio.create_task(budget.turn())
    b.cancel()  # granted, then cancelled before it ran: the turn goes to the next one
    with contextlib.suppress(asyncio.CancelledError):
        await b
    await asyncio.wait_for(c, 1)
    budget.done()
    assert budget.open() and budget.waiting == 0


async def test_no_bound_counts_bytes_but_never_waits() -> None:
    budget = SendBudget(0)
    budget.charge(10**9)
    assert budget.open()
    await asyncio.wait_for(budget.turn(), 1)
    budget.done()
    budget.release(10**9)
    assert budget.in_flight == 0 and budget.peak == 10**9


def _identity(b: bytes) -> bytes:
    return b


async def test_write_completes_only_through_flow_control() -> None:
    """The budget's release signal: a grpc.aio write of a message larger than the client's window
    completes only once the client has read it (gRPC's C core flushes it through flow control)."""
    completed: list[int] = []
    started = asyncio.Event()

    async def handler(requests: object, context: grpc.aio.ServicerContext) -> None:
        await anext(requests)  # type: ignore[call-overload]
        started.set()
        for i in range(3):
            await context.write(b"x" * (4 << 20))
            completed.append(i)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "probe.Probe", {"Stream": grpc.stream_stream_rpc_method_handler(handler)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)])
    try:
        call = channel.stream_stream("/probe.Probe/Stream", request_serializer=_identity,
                                     response_deserializer=_identity)()
        await call.write(b"go")
        await asyncio.wait_for(started.wait(), 5)
        # A negative check needs a window: the write must not complete while nobody reads.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_until_completed(completed, 1), 1.0)
        assert completed == []
        assert len(await call.read()) == 4 << 20
        await asyncio.wait_for(_until_completed(completed, 1), 5)
        assert completed == [0]  # the next 4 MB write waits for the next read
        call.cancel()
    finally:
        await channel.close()
        await server.stop(0)


async def test_write_completes_only_once_the_bytes_left_the_process() -> None:
    """With a window as large as Envoy's (256 MiB: flow control never blocks), a write still does
    not complete while the client's process is stopped and its socket full: gRPC completes it only
    once the bytes are in the kernel, so a completed write holds nothing in this process."""
    completed: list[int] = []
    started = asyncio.Event()
    client_stopped = asyncio.Event()
    size = 8 << 20
    # What the kernel can hold for a stopped reader: its receive buffer plus our send buffer, at
    # their sysctl maxima (autotuning stays below them). Writes beyond that must wait.
    kernel_messages = -(-(_sysctl_max("tcp_rmem") + _sysctl_max("tcp_wmem")) // size)
    total = kernel_messages + 8

    async def handler(requests: object, context: grpc.aio.ServicerContext) -> None:
        await anext(requests)  # type: ignore[call-overload]
        started.set()
        await client_stopped.wait()  # nothing is read from here on: only the kernel can take bytes
        for i in range(total):
            await context.write(b"x" * size)
            completed.append(i)

    server = grpc.aio.server(options=[("grpc.max_send_message_length", -1)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "probe.Probe", {"Stream": grpc.stream_stream_rpc_method_handler(handler)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = await asyncio.create_subprocess_exec(
        sys.executable, os.path.join(os.path.dirname(__file__), "_stopped_client.py"), f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE)
    try:
        assert client.stdout is not None
        assert (await asyncio.wait_for(client.stdout.readline(), 30)).strip() == b"ready"
        await asyncio.wait_for(started.wait(), 10)
        os.kill(client.pid, signal.SIGSTOP)
        client_stopped.set()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(_until_completed(completed, total), 2.0)
        # One more than the kernel holds: the write whose tail is still in gRPC's hands.
        assert len(completed) <= kernel_messages + 1, (completed, kernel_messages)
        os.kill(client.pid, signal.SIGCONT)
        await asyncio.wait_for(_until_completed(completed, total), 30)
    finally:
        os.kill(client.pid, signal.SIGCONT)
        client.kill()
        await client.wait()
        await server.stop(0)


def _sysctl_max(name: str) -> int:
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return int(f.read().split()[2])


async def _until_completed(completed: list[int], n: int) -> None:
    while len(completed) < n:
        await asyncio.sleep(0.01)
