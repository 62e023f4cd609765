"""Faults with real Envoys carrying traffic (docs/security.md, docs/operations.md).

- The server goes away and a new one comes up on the same address, not synced at first: Envoy
  keeps routing on the config it has (zero failed requests), its reconnects are refused with
  UNAVAILABLE until the sources have synced (never an empty config), then it resyncs; with delta,
  it is sent nothing it already has.
- Keepalive enforcement never kicks a well-behaved Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import pytest

from tests.integration.test_admission import GatedSource
from tests.support.backend import http_backend
from tests.support.envoy import LocalEnvoy, free_port
from tests.support.resources import eds_cluster, endpoints, http_listener, route, snapshot, stand_in
from xds_server.app import App
from xds_server.commands.bootstrap import build_bootstrap
from xds_server.resources import ProxySnapshot, TypeUrl
from xds_server.settings import Settings

pytestmark = pytest.mark.envoy
NODE_ID = "sidecar~127.0.0.1~web-1.default~default.svc.cluster.local"
CDS, LDS = TypeUrl.CLUSTER.value, TypeUrl.LISTENER.value


def app_on(port: int, snap: ProxySnapshot, sources: list[Any] | None = None, **settings: Any) -> App:
    return App(Settings(xds_host="127.0.0.1", xds_port=port, admin_port=0, drain_seconds=0, **settings),
               sources=sources or [], generate=stand_in(lambda proxy: snap))


class RequestLoop:
    """GET the listener every 10 ms; count what fails."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                try:
                    async with session.get(self.url) as r:
                        await r.read()
                        if r.status == 200:
                            self.ok += 1
                        else:
                            self.failed.append(f"HTTP {r.status}")
                except (aiohttp.ClientError, TimeoutError) as e:
                    self.failed.append(repr(e))
                await asyncio.sleep(0.01)

    def start(self) -> RequestLoop:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@pytest.mark.parametrize("mode", ["sotw", "delta"])
async def test_server_restart_under_traffic_loses_no_request_and_resyncs_without_resending(mode: str) -> None:
    xds_port, listen = free_port(), free_port()
    async with http_backend("backend-a") as backend:
        snap = snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", backend)), http_listener("front", listen, "r1"),
                        route("r1", "a"))
        first = app_on(xds_port, snap)
        second: App | None = None
        loop: RequestLoop | None = None
        boot = build_bootstrap(NODE_ID, f"127.0.0.1:{xds_port}", 0, {"NAMESPACE": "default"}, sotw=mode == "sotw")
        envoy = LocalEnvoy(NODE_ID, bootstrap=boot)
        try:
            await first.start()
            envoy.start()
            await envoy.until(lambda: envoy.dynamic_names("listeners") == ["front"], what="listener")
            loop = RequestLoop(f"http://127.0.0.1:{listen}/").start()
            await envoy.until(lambda: loop.ok > 10, what="traffic through Envoy")

            await first.stop(0)  # the server is gone: Envoy keeps routing on what it has
            await envoy.until(lambda: envoy.stat("control_plane.connected_state") == 0, what="Envoy disconnected")
            source = GatedSource()
            second = app_on(xds_port, snap, sources=[source])
            await second.start()  # up, but its sources have not synced: refuse, never serve a partial config
            refused = lambda: second.metrics.registry.get_sample_value(  # noqa: E731
                "xds_server_stream_refusals_total", {"code": "UNAVAILABLE"}) or 0
            await envoy.until(lambda: refused() >= 1, timeout=20, what="Envoy's reconnect refused (not synced)")
            assert envoy.dynamic_names("clusters") == ["a"]  # nothing was taken away
            ok_before = loop.ok
            source.release.set()
            await envoy.until(lambda: envoy.stat("control_plane.connected_state") == 1 and second.services.connections,
                              timeout=30, what="Envoy reconnected to the new server")
            [conn] = second.services.connections.values()
            # Every type asked for again; whatever was sent is ACKed (in delta, EDS/RDS had nothing new: NOT_SENT).
            # statuses() is a fresh dict per call: read it inside the condition, RDS may arrive last.
            settled = {"SYNCED"} if mode == "sotw" else {"SYNCED", "NOT_SENT"}

            def resynced() -> bool:
                statuses = conn.machine.statuses()
                return (len(statuses) == 4 and {s.state for s in statuses.values()} <= settled
                        and statuses[CDS].state == statuses[LDS].state == "SYNCED")

            await envoy.until(resynced, what="resynced")
            statuses = conn.machine.statuses()
            await envoy.until(lambda: loop.ok > ok_before + 20, what="traffic after the resync")
            await loop.stop()
            assert loop.failed == [], loop.failed[:5]
            assert envoy.dynamic_names("clusters") == ["a"] and envoy.rejected() == 0
            if mode == "delta":
                # initial_resource_versions told the server what Envoy has: nothing is sent again.
                assert {t: s.sent_count for t, s in statuses.items()} == dict.fromkeys(statuses, 0), statuses
        finally:
            if loop is not None:
                await loop.stop()
            envoy.stop()
            await first.stop(0)
            if second is not None:
                await second.stop(0)


async def test_keepalive_enforcement_never_kicks_a_well_behaved_envoy() -> None:
    # Server: pings every 1 s, accepts client pings every 0.5 s. Envoy: pings every 0.7 s (+ jitter).
    app = app_on(0, snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1))), keepalive_interval=1.0,
                 keepalive_timeout=1.0, keepalive_min_client_ping=0.5)
    await app.start()
    boot = build_bootstrap(NODE_ID, f"127.0.0.1:{app.xds_port}", 0, {"NAMESPACE": "default"})
    [xds] = boot["static_resources"]["clusters"]
    opts = xds["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    opts["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"] = {"interval": "0.7s",
                                                                                      "timeout": "1s"}
    try:
        with LocalEnvoy(NODE_ID, bootstrap=boot) as envoy:
            await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a"], what="cluster a")
            [conn_id] = list(app.services.connections)
            started = time.monotonic()
            while time.monotonic() - started < 4.0:  # ~5 pings each way
                await asyncio.sleep(0.25)
                assert list(app.services.connections) == [conn_id]
            assert envoy.stat("cluster.xds-grpc.upstream_cx_total") == 1  # one connection all along
            assert envoy.stat("control_plane.connected_state") == 1
    finally:
        await app.stop(0)
