"""grpc.aio's own cost of one push at N streams: no xDS at all, only what every push must do.

    python -m bench.grpc_floor --streams 2000 [--bdp-probe] [--pushes 5]

A grpc.aio server (uvloop, pinned to CPU 0) holds N bidirectional streams of a grpc.aio client
(one channel each, like N Envoys; pinned to CPU 1). A push wakes every stream's handler, which
writes one 300-byte message; the client answers each with a 90-byte message (an ACK's size) that
the handler's reader task reads. Printed per push: the server's CPU by thread group (the event
loop, gRPC's event-engine threads, the rest), as bench.threads groups them. What an xDS server
adds to a Pod change at N streams is the difference from `bench.threads` (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from bench.harness import free_port
from bench.threads import by_group, sample, show


def _identity(b: bytes) -> bytes:
    return b


async def serve(port: int, bdp_probe: bool) -> None:
    wakers: list[asyncio.Event] = []

    async def stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        woken = asyncio.Event()
        wakers.append(woken)

        async def read() -> None:
            async for _ in requests:
                pass

        reader = asyncio.create_task(read())
        try:
            while True:
                await woken.wait()
                woken.clear()
                await context.write(b"x" * 300)
        finally:
            reader.cancel()
            wakers.remove(woken)  # only live streams count

    async def push(request: bytes, context: grpc.aio.ServicerContext[Any, bytes]) -> bytes:
        if request == b"push":
            for w in wakers:
                w.set()
        return str(len(wakers)).encode()

    handler = grpc.method_handlers_generic_handler("floor.Floor", {
        "Stream": grpc.stream_stream_rpc_method_handler(stream, _identity, _identity),
        "Push": grpc.unary_unary_rpc_method_handler(push, _identity, _identity),
    })
    server = grpc.aio.server(options=[("grpc.http2.bdp_probe", int(bdp_probe)),
                                      ("grpc.max_concurrent_streams", 100_000)])
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def drive(port: int, server_pid: int, streams: int, pushes: int) -> None:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(streams)]
    received = 0
    expected = streams
    all_received = asyncio.Event()

    failed: dict[str, int] = {}

    async def one(channel: grpc.aio.Channel) -> None:
        # A stream whose RPC fails while 2,000 connect at once (an accept queue overflowing on a
        # loaded machine) opens again, as an Envoy would: otherwise it never counts as connected.
        while True:
            try:
                await stream_once(channel)
            except grpc.aio.AioRpcError as e:
                failed[e.code().name] = failed.get(e.code().name, 0) + 1
                await asyncio.sleep(0.1)

    async def stream_once(channel: grpc.aio.Channel) -> None:
        nonlocal received
        acks: asyncio.Queue[bytes] = asyncio.Queue()

        async def requests() -> AsyncIterator[bytes]:
            yield b"hello"
            while True:
                yield await acks.get()

        call = channel.stream_stream("/floor.Floor/Stream", _identity, _identity)(requests(), wait_for_ready=True)
        async for _ in call:
            acks.put_nowait(b"a" * 90)
            received += 1
            if received >= expected:
                all_received.set()

    tasks = [asyncio.create_task(one(c)) for c in channels]
    push = channels[0].unary_unary("/floor.Floor/Push", _identity, _identity)
    deadline = time.monotonic() + 120
    while int(await push(b"count", wait_for_ready=True)) < streams:
        if time.monotonic() > deadline:
            raise SystemExit("streams did not all connect in 120 s")
        await asyncio.sleep(0.5)
    if failed:
        print(f"streams opened again after failing to connect: {failed}", flush=True)
    for n in range(pushes):
        await asyncio.sleep(1.0)
        all_received.clear()
        expected = received + streams
        before, start = sample(server_pid), time.perf_counter()
        await push(b"push")
        await asyncio.wait_for(all_received.wait(), 60)
        elapsed = time.perf_counter() - start
        await asyncio.sleep(0.5)  # the last ACKs are read
        print(f"push {n}: all {streams} received in {1000 * elapsed:.0f} ms; server "
              f"{show(by_group(before, sample(server_pid)))}", flush=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in channels:
        await c.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=2000)
    p.add_argument("--pushes", type=int, default=5)
    p.add_argument("--bdp-probe", action="store_true", help="leave gRPC's BDP probing on (its default)")
    p.add_argument("--role", choices=("main", "server"), default="main", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    import uvloop

    if a.role == "server":
        uvloop.run(serve(a.port, a.bdp_probe))
        return
    port = free_port()
    cmd = [sys.executable, "-m", "bench.grpc_floor", "--role", "server", "--port", str(port),
           *(["--bdp-probe"] if a.bdp_probe else [])]
    pinned = (os.cpu_count() or 1) > 1
    server = subprocess.Popen(["taskset", "-c", "0", *cmd] if pinned else cmd)
    try:
        if pinned:
            os.sched_setaffinity(0, {1})
        uvloop.run(drive(port, server.pid, a.streams, a.pushes))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
