"""Graceful drain with a real Envoy: GOAWAY, a bounded drain, Envoy moves to another replica; `serve`
exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.support.admin_http import admin_get
from tests.support.ads_client import AdsClient
from tests.support.envoy import LocalEnvoy, free_port
from tests.support.resources import eds_cluster, endpoints, snapshot, stand_in
from xds_server.app import App
from xds_server.commands.bootstrap import build_bootstrap
from xds_server.settings import Settings

pytestmark = pytest.mark.envoy
NODE_ID = "sidecar~127.0.0.1~web-1.default~default.svc.cluster.local"
DRAIN = 1.0
REPO = Path(__file__).resolve().parents[2]


def replica(name: str, xds_port: int = 0) -> App:
    """An App whose every proxy gets one cluster named after the replica."""
    snap = snapshot(eds_cluster(name), endpoints(name, ("127.0.0.1", 1)))
    return App(Settings(xds_host="127.0.0.1", xds_port=xds_port, admin_port=0, drain_seconds=DRAIN), sources=[],
               generate=stand_in(lambda proxy: snap))


def two_endpoint_bootstrap(ports: list[int], sotw: bool) -> dict:
    """A STATIC xds cluster listing both replicas, as behind a Service with two endpoints."""
    boot = build_bootstrap(NODE_ID, f"127.0.0.1:{ports[0]}", 0, {"NAMESPACE": "default"}, sotw=sotw)
    [xds] = boot["static_resources"]["clusters"]
    xds["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}} for p in ports]
    return boot


async def poll(predicate: Callable[[], object], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["sotw", "delta"])
async def test_envoy_moves_to_the_other_replica_when_one_drains(mode: str) -> None:
    first = replica("from-first")
    second = replica("from-second", free_port())
    envoy: LocalEnvoy | None = None
    stopping: asyncio.Task[None] | None = None
    try:
        await first.start()
        envoy = LocalEnvoy(NODE_ID, 0, bootstrap=two_endpoint_bootstrap(
            [first.xds_port, second.settings.xds_port], mode == "sotw")).start()
        await envoy.until(lambda: envoy.dynamic_names("clusters") == ["from-first"], what="config from the first")
        await second.start()
        assert second.xds_port == second.settings.xds_port

        started = time.monotonic()
        stopping = asyncio.create_task(first.stop())
        # Draining: not ready, and new streams are refused, while the connected Envoy keeps its stream.
        await poll(lambda: _status(first.admin_port, "/readyz", 503), 5, "first /readyz 503 while draining")
        late = AdsClient(f"127.0.0.1:{first.xds_port}")
        try:
            assert await late.status() == grpc.StatusCode.UNAVAILABLE
        finally:
            await late.close()
        await asyncio.wait_for(stopping, DRAIN + 5)
        assert time.monotonic() - started < DRAIN + 3  # bounded: the drain, then the streams are ended
        assert not first.services.connections

        await envoy.until(lambda: envoy.dynamic_names("clusters") == ["from-second"], timeout=20,
                          what="config from the second replica")
        await envoy.until(lambda: envoy.stat("control_plane.connected_state") == 1, what="connected to the second")
        assert [c.proxy.key for c in second.services.connections.values()] == [NODE_ID]
        assert envoy.rejected() == 0
    finally:
        if envoy is not None:
            envoy.stop()
        if stopping is not None:
            await asyncio.wait_for(asyncio.shield(stopping), DRAIN + 5)
        await first.stop(0)
        await second.stop(0)


async def _status(port: int, path: str, wanted: int) -> bool:
    try:
        code, _ = await admin_get(port, path, timeout=1)
    except OSError:
        return False
    return code == wanted


class Serve:
    """`python -m xds_server serve` in its own session, logging to a file."""

    def __init__(self, *args: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="xds-serve-"))
        (self.workdir / "config").mkdir()
        self.log_path = self.workdir / "serve.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "xds_server", "serve", "--config-dir", str(self.workdir / "config"), *args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.log()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


async def test_serve_drains_and_exits_0_on_sigterm_with_json_logs() -> None:
    xds_port, admin_port = free_port(), free_port()
    serve = Serve("--xds-address", f"127.0.0.1:{xds_port}", "--admin-address", f"127.0.0.1:{admin_port}",
                  "--drain-seconds", str(DRAIN), "--log-format", "json")
    envoy: LocalEnvoy | None = None
    try:
        async def ready() -> bool:
            serve.check_alive()
            return await _status(admin_port, "/readyz", 200)

        await poll(ready, 30, "serve /readyz")
        envoy = LocalEnvoy(NODE_ID, xds_port, metadata={"NAMESPACE": "default"}).start()
        await envoy.until(lambda: envoy.stat("control_plane.connected_state") == 1, what="Envoy connected")
        # Envoy counts itself connected when its stream opens, before the server has read the first request.
        await poll(lambda: "xds connect " in serve.log(), 10, "the server's connect log line")
        started = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(serve.proc.wait, DRAIN + 10)
        elapsed = time.monotonic() - started
        assert code == 0, serve.log()
        assert elapsed < DRAIN + 5
    finally:
        serve.kill()
        if envoy is not None:
            envoy.stop()
    lines = [json.loads(line) for line in serve.log().splitlines() if line.startswith("{")]
    msgs = [x["msg"] for x in lines]
    assert any(m.startswith("serving xDS on 127.0.0.1:") for m in msgs)
    assert any(m.startswith("xds connect ") for m in msgs) and any(m.startswith("xds disconnect ") for m in msgs)
    assert any(m.startswith("shutting down") for m in msgs) and msgs[-1] == "stopped"
    assert all({"time", "level", "logger", "msg"} <= x.keys() for x in lines)


async def test_max_connection_age_makes_envoy_reconnect_and_resync() -> None:
    snap = snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)))
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=0, drain_seconds=0, max_connection_age=1.0),
              sources=[], generate=stand_in(lambda proxy: snap))
    envoy: LocalEnvoy | None = None
    try:
        await app.start()
        envoy = LocalEnvoy(NODE_ID, app.xds_port, metadata={"NAMESPACE": "default"}).start()
        await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a"], what="cluster a")
        [first] = list(app.services.connections)
        # GOAWAY after ~1 s (±10 % jitter), the stream is closed after the 10 s grace, Envoy reconnects.
        await poll(lambda: any(c != first for c in app.services.connections), 25, "a new stream")
        await envoy.until(lambda: envoy.stat("control_plane.connected_state") == 1, what="connected again")
        assert envoy.dynamic_names("clusters") == ["a"] and envoy.rejected() == 0
    finally:
        if envoy is not None:
            envoy.stop()
        await app.stop(0)
