"""One tiny backend of the demo mesh, for docker-compose.yml: `python backend.py NAME`.

NAME is a pod of `xds-server demo` (`frontend-1.shop`) or its external host (`api.example.test`).
Address, answer and upstream call come from the demo itself (DEMO_TOPOLOGY and its Backend), so
the containers serve exactly what `xds-server demo` serves on one host.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from xds_server.commands.demo import DEMO_TOPOLOGY
from xds_server.commands.demo_backend import Backend


def backend_for(name: str) -> Backend:
    for pod in DEMO_TOPOLOGY.pods:
        if pod.name == name:
            return Backend(pod.name, pod.app_address, pod.upstream)
    for ext in DEMO_TOPOLOGY.external:
        if ext.host == name:
            return Backend(ext.name, ext.address)
    known = [p.name for p in DEMO_TOPOLOGY.pods] + [e.host for e in DEMO_TOPOLOGY.external]
    raise SystemExit(f"backend.py: unknown {name!r}; one of {', '.join(known)}")


async def serve(name: str) -> None:
    backend = backend_for(name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await backend.start()
    print(f"{backend.name}: listening on {backend.address[0]}:{backend.address[1]}", flush=True)
    await stop.wait()
    await backend.stop()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: backend.py NAME")
    asyncio.run(serve(sys.argv[1]))
