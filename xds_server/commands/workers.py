"""`xds-server serve --workers N`: N complete servers on one xDS port, one admin endpoint.

One Python process serves from one core. With --workers N the command becomes a supervisor:
it starts N worker processes, each the whole pipeline (sources, store, push, xDS) bound to
the same xDS port with SO_REUSEPORT (gRPC's `grpc.so_reuseport`), so the kernel spreads
incoming connections over them, and each with a private admin port on loopback. The supervisor
serves the admin address: readiness (all workers ready), metrics merged for one scrape and the
debug views over every worker's proxies (admin/merge.py). SIGTERM/SIGINT is passed on to every
worker, each drains as one server does, and the supervisor exits 0 once all have (1 if a
worker failed, 2 if one refused its flags). A worker that dies takes the others down with it:
the orchestrator restarts the pod, as it would a single server (docs/deploy.md).

CSDS is answered by the worker the client's connection landed on, for its own proxies; the
debug views are the whole picture.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from xds_server.admin import merge
from xds_server.commands.signals import stop_on_signals
from xds_server.settings import Settings

log = logging.getLogger("xds_server")

_VALUED = ("--workers", "--admin-address")  # flags the supervisor owns: not passed to workers
_PR_SET_PDEATHSIG = 1


def worker_argv(argv: Sequence[str]) -> list[str]:
    """The `serve` arguments for a worker: the supervisor's, without the flags it owns."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in _VALUED:
            skip = True
            continue
        if any(arg.startswith(flag + "=") for flag in _VALUED):
            continue
        out.append(arg)
    return out


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A worker gets SIGTERM if the supervisor dies (SIGKILL included): no orphan holds the port."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervisor:
    def __init__(self, argv: Sequence[str], settings: Settings, workers: int) -> None:
        self.argv = worker_argv(argv)
        self.settings = settings
        self.count = workers
        self.admin_ports = [_free_port() for _ in range(workers)]
        self.procs: list[asyncio.subprocess.Process] = []
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        stop_on_signals(loop, stop)
        for port in self.admin_ports:
            self.procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "xds_server", "serve", *self.argv, "--admin-address", f"127.0.0.1:{port}",
                "--reuse-port", preexec_fn=_die_with_parent))
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            try:
                await self._serve_admin()
            except OSError as e:  # the admin address is taken or not ours
                log.error("--admin-address %s:%d: %s", self.settings.admin_host, self.settings.admin_port, e)
                await self._stop_workers()
                return 2
            log.info("supervising %d workers on xDS port %d (admin %s:%d)", self.count, self.settings.xds_port,
                     self.settings.admin_host, self.settings.admin_port)
            waits = [asyncio.create_task(p.wait()) for p in self.procs]
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([stopping, *waits], return_when=asyncio.FIRST_COMPLETED)
            # A worker that ended before we were told to stop failed. (A terminal's Ctrl-C reaches
            # the workers too: they drain by themselves while we stop.)
            early = [] if stop.is_set() else [p for p in self.procs if p.returncode is not None]
            if early:
                log.error("worker(s) %s exited (codes %s): stopping the others",
                          [self.procs.index(p) for p in early], [p.returncode for p in early])
            else:
                log.info("shutting down %d workers: each drains for up to %.1fs", self.count,
                         self.settings.drain_seconds)
            stopping.cancel()
            codes = await self._stop_workers()
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
            await self._session.close()
        if early:
            return 2 if any(p.returncode == 2 for p in early) else 1
        return 0 if all(c == 0 for c in codes) else 1

    async def _stop_workers(self) -> list[int]:
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        deadline = self.settings.drain_seconds + 15  # the drain, then the server's own stop
        codes = []
        for p in self.procs:
            try:
                codes.append(await asyncio.wait_for(p.wait(), deadline))
            except TimeoutError:
                log.error("worker pid %d did not stop after %.0fs: killed", p.pid, deadline)
                p.kill()
                codes.append(await p.wait())
        return codes

    # ------------------------------------------------------------------ the admin endpoint
    async def _serve_admin(self) -> None:
        s = self.settings
        if s.admin_port < 0:
            return
        app = web.Application()
        app.add_routes([
            web.get("/healthz", self.healthz), web.get("/readyz", self.readyz), web.get("/metrics", self.metrics),
            web.get("/debug/syncz", self.syncz), web.get("/debug/adsz", self.adsz),
            web.get("/debug/config_dump", self.config_dump), web.get("/debug/configz", self.configz),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, s.admin_host, s.admin_port).start()

    async def _get(self, worker: int, path: str, query: str = "") -> tuple[int, bytes]:
        assert self._session is not None
        url = f"http://127.0.0.1:{self.admin_ports[worker]}{path}" + (f"?{query}" if query else "")
        try:
            async with self._session.get(url) as r:
                return r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            return 0, json.dumps({"error": f"worker {worker}: {e or type(e).__name__}"}).encode()

    async def _all(self, path: str, query: str = "") -> list[tuple[int, bytes]]:
        return list(await asyncio.gather(*(self._get(i, path, query) for i in range(self.count))))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "workers": self.count})

    async def readyz(self, request: web.Request) -> web.Response:
        replies = await self._all("/readyz")
        ready = all(status == 200 for status, _ in replies)
        workers = [_load(body) | {"status": status} for status, body in replies]
        return web.json_response({"ready": ready, "workers": workers}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        replies = await self._all("/metrics")
        down = [i for i, (status, _) in enumerate(replies) if status != 200]
        if down:
            return web.json_response({"error": f"workers {down} did not answer /metrics"}, status=503)
        body = merge.merge_metrics([b.decode() for _, b in replies])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _merged(self, request: web.Request, path: str, combine: Any) -> web.Response:
        replies = await self._all(path, request.query_string)
        found = [_load(body) for status, body in replies if status == 200]
        if len(found) == len(replies) or (found and request.query_string):  # a proxy lives on one worker
            return web.json_response(combine(found))
        status, body = next((r for r in replies if r[0] != 200), replies[0])
        return web.Response(body=body, status=status or 503, content_type="application/json")

    async def syncz(self, request: web.Request) -> web.Response:
        return await self._merged(request, "/debug/syncz", merge.merge_syncz)

    async def adsz(self, request: web.Request) -> web.Response:
        return await self._merged(request, "/debug/adsz", merge.merge_adsz)

    async def config_dump(self, request: web.Request) -> web.Response:
        replies = await self._all("/debug/config_dump", request.query_string)
        status, body = next((r for r in replies if r[0] == 200), None) or next(
            (r for r in replies if r[0] == 400), replies[0])
        return web.Response(body=body, status=status or 503, content_type="application/json")

    async def configz(self, request: web.Request) -> web.Response:
        if not request.query_string:
            status, body = await self._get(0, "/debug/configz")  # every worker holds the same input
            return web.Response(body=body, status=status or 503, content_type="application/json")
        # ?proxy=: every worker can answer from its store; the one holding the proxy's stream
        # knows its node metadata, so its answer is preferred.
        replies = await self._all("/debug/configz", request.query_string)
        ok = [r for r in replies if r[0] == 200]
        connected = [r for r in ok if _load(r[1]).get("proxy_traffic", {}).get("connected")]
        status, body = (connected or ok or replies)[0]
        return web.Response(body=body, status=status or 503, content_type="application/json")


def _load(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def check(settings: Settings, workers: int) -> str | None:
    if workers < 1:
        return "--workers must be >= 1"
    if workers > 1 and (settings.xds_host.startswith("unix:") or settings.xds_port == 0):
        return "--workers N > 1 needs a TCP --xds-address with a fixed port (the workers share it)"
    return None


def supervise(argv: Sequence[str], settings: Settings, workers: int) -> int:
    return asyncio.run(Supervisor(argv, settings, workers).run())
