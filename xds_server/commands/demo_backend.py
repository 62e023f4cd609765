"""The demo's tiny HTTP backends: each answers with who it is and what it saw.

One line per answer, e.g.::

    hello from catalog-1.shop: GET /items, Host: catalog, from 127.0.0.6, via Envoy (x-request-id set)

"via Envoy" means the request carries `x-request-id`, which Envoy's HTTP connection manager adds
and curl does not: a request sent straight to the app says "direct (no Envoy)" instead.
A backend with an `upstream` also calls that service through its own sidecar for paths under
`upstream.path_prefix` and appends the answer (the frontend calling the catalog).
`/delay/SECONDS` answers the same after that long (at most MAX_DELAY), for timeouts.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import aiohttp
from aiohttp import web

MAX_DELAY = 10.0  # seconds
DELAY_PATH = re.compile(r"^/delay/(\d+(?:\.\d+)?)$")


@dataclass(frozen=True, slots=True)
class Upstream:
    """A call the app makes through its sidecar's egress listener."""

    path_prefix: str  # requests under this path trigger the call
    via: tuple[str, int]  # the sidecar's egress listener (bind address, port)
    host: str  # Host header: the service name as the app writes it
    service: str  # for the text only


def describe(name: str, request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    source = peer[0] if peer else "?"
    via = "via Envoy (x-request-id set)" if "x-request-id" in request.headers else "direct (no Envoy)"
    host = request.headers.get("Host", "")
    return f"hello from {name}: {request.method} {request.path_qs}, Host: {host}, from {source}, {via}"


class Backend:
    """One backend: an aiohttp server on (host, port)."""

    def __init__(self, name: str, address: tuple[str, int], upstream: Upstream | None = None) -> None:
        self.name = name
        self.address = address
        self.upstream = upstream
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        delay = DELAY_PATH.match(request.path)
        if delay:
            await asyncio.sleep(min(float(delay.group(1)), MAX_DELAY))
        text = describe(self.name, request)
        up = self.upstream
        if up is not None and request.path.startswith(up.path_prefix):
            text += "\n  -> " + await self._call(up, request.path_qs)
        return web.Response(text=text + "\n")

    async def _call(self, up: Upstream, path: str) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        url = f"http://{up.via[0]}:{up.via[1]}{path}"
        what = f"{self.name} called {up.service} through its sidecar ({up.via[0]}:{up.via[1]}, Host: {up.host})"
        try:
            async with self._session.get(url, headers={"Host": up.host}) as r:
                body = (await r.text()).strip()
                return f"{what}: HTTP {r.status}: {body}"
        except (aiohttp.ClientError, TimeoutError) as e:
            return f"{what}: failed: {e!r}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address[0], self.address[1], reuse_address=True)
        await site.start()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
