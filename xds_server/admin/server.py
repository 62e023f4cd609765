"""Admin HTTP server (aiohttp): health, readiness, metrics and debug views."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class AdminServer:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None

    def routes(self) -> web.Application:
        web_app = web.Application()
        web_app.add_routes([
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
            web.get("/debug/syncz", self.syncz),
        ])
        return web_app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.routes(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = site._server.sockets if site._server else []
        return sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.app.ready()
        sources = {src.name: self.app.store.synced(src.name) for src in self.app.sources}
        return web.json_response({"ready": ready, "sources": sources}, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def syncz(self, request: web.Request) -> web.Response:
        out = []
        for conn in sorted(self.app.services.connections.values(), key=lambda c: c.id):
            out.append({
                "connection_id": conn.id,
                "proxy": getattr(conn.proxy, "pod_key", conn.proxy.key),
                "node_id": getattr(conn.proxy, "node_id", conn.proxy.key),
                "kind": conn.kind,
                "types": {t: s.as_dict() | {"resource_versions": None} for t, s in conn.machine.statuses().items()},
            })
        return web.json_response(out)
