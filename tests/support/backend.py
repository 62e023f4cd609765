"""Tiny HTTP backends on loopback that answer with their name."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web


@asynccontextmanager
async def http_backend(name: str, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.Response:
        body = {"name": name, "host": request.host, "path": request.path}
        return web.Response(text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


async def get(url: str, host: str | None = None, timeout: float = 3.0) -> tuple[int, str]:
    headers = {"Host": host} if host else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
            s.get(url, headers=headers) as r:
        return r.status, await r.text()
