"""Admin HTTP server (aiohttp): health, readiness, metrics and the /debug views.

Handlers only parse the query and pick the status code; the views are in debug.py.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from xds_server.admin import debug
from xds_server.commands.render import RenderError, proxy_for
from xds_server.resources import PUSH_ORDER, SHORT_NAMES, TypeUrl

BY_SHORT = {v: k for k, v in SHORT_NAMES.items() if k in PUSH_ORDER}
INDEX = {
    "/healthz": "200 while the process runs",
    "/readyz": "200 once every source has synced and gRPC is serving, else 503",
    "/metrics": "Prometheus metrics",
    "/debug/syncz": "per proxy and type: NOT_SENT, SYNCED, STALE or ERROR, sent/acked versions, last NACK",
    "/debug/config_dump?proxy=POD.NS[&types=cds,eds,lds,rds]": "the proxy's config in Envoy's config_dump shape",
    "/debug/adsz": "xDS connections and their subscriptions",
    "/debug/configz[?proxy=POD.NS]": "input objects held, rejected ones, what the VirtualServices and "
                                      "DestinationRules amount to (for one proxy with ?proxy=)",
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1, sort_keys=False))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class AdminServer:
    def __init__(self, app: Any) -> None:
        self.app = app
        self._runner: web.AppRunner | None = None

    def routes(self) -> web.Application:
        web_app = web.Application()
        web_app.add_routes([
            web.get("/", self.index),
            web.get("/debug", self.index),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics),
            web.get("/debug/syncz", self.syncz),
            web.get("/debug/config_dump", self.config_dump),
            web.get("/debug/adsz", self.adsz),
            web.get("/debug/configz", self.configz),
        ])
        return web_app

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.routes(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses  # the bound (host, port, ...) of each socket
        return int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------------ health
    async def index(self, request: web.Request) -> web.Response:
        return _json(INDEX)

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.app.ready()
        sources = {src.name: self.app.store.synced(src.name) for src in self.app.sources}
        return _json({"ready": ready, "serving": bool(self.app.serving), "sources": sources},
                     200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.app.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ------------------------------------------------------------------ debug
    def _connections(self, request: web.Request) -> list[Any] | web.Response:
        conns = list(self.app.services.connections.values())
        wanted = request.query.get("proxy") or request.query.get("proxyID")
        if wanted is None:
            return conns
        found = debug.find_connections(conns, wanted)
        if not found:
            return _error(404, f"proxy {wanted!r} is not connected (see /debug/adsz for the connected ones)")
        return found

    async def syncz(self, request: web.Request) -> web.Response:
        conns = self._connections(request)
        return conns if isinstance(conns, web.Response) else _json(debug.syncz(conns))

    async def adsz(self, request: web.Request) -> web.Response:
        conns = self._connections(request)
        return conns if isinstance(conns, web.Response) else _json(debug.adsz(conns))

    async def configz(self, request: web.Request) -> web.Response:
        wanted = request.query.get("proxy") or request.query.get("proxyID")
        proxy, connected = None, False
        if wanted:
            found = debug.find_connections(self.app.services.connections.values(), wanted)
            if found:
                proxy, connected = max(found, key=lambda c: c.connected_at).proxy, True
            else:  # not connected: the proxy an injected Envoy of that Pod would be
                try:
                    proxy = proxy_for(self.app.store.view(), wanted)
                except RenderError as e:
                    return _error(400, f"proxy: {e} (or a connected proxy's node id; see /debug/adsz)")
        # The planner's memo: the scope and indexes of the last push are reused, not rebuilt.
        body = debug.configz(self.app.store, self.app.planner.memo, proxy)
        if proxy is not None:
            body["proxy_traffic"]["connected"] = connected
        return _json(body)

    async def config_dump(self, request: web.Request) -> web.Response:
        if not (request.query.get("proxy") or request.query.get("proxyID")):
            return _error(400, "give ?proxy=POD.NAMESPACE (or a node id); /debug/adsz lists the connected proxies")
        types: tuple[TypeUrl, ...] = PUSH_ORDER
        if request.query.get("types"):
            wanted = [t.strip() for t in request.query["types"].split(",") if t.strip()]
            unknown = [t for t in wanted if t not in BY_SHORT]
            if unknown:
                return _error(400, f"types: unknown {', '.join(unknown)} (use cds, eds, lds, rds)")
            types = tuple(t for t in PUSH_ORDER if SHORT_NAMES[t] in wanted)
        conns = self._connections(request)
        if isinstance(conns, web.Response):
            return conns
        conn = max(conns, key=lambda c: c.connected_at)  # the newest stream of a reconnecting proxy
        snapshot = self.app.cache.get(conn.proxy.key)
        if snapshot is None:
            return _error(404, f"proxy {debug.proxy_name(conn.proxy)!r} has no snapshot (disconnecting)")
        return _json(debug.config_dump(snapshot, conn.machine.statuses(), types))
