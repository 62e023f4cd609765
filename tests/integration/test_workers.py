"""`serve --workers N`: N processes on one xDS port, one admin endpoint, one exit code.

A real supervisor and its workers (`python -m xds_server serve --workers 2`) on a generated mesh;
20 ADS clients, each on its own connection, spread over the workers by the kernel
(SO_REUSEPORT). The merged metrics and debug views cover every worker's proxies; SIGTERM drains
all and the supervisor exits 0; bad flags exit 2 before any worker starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from bench import mesh
from bench.harness import REPO, free_port
from tests.support.ads_client import AdsClient, node, until
from xds_server.admin.merge import merge_metrics
from xds_server.resources import TypeUrl

PROXIES = 20


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def _serve(*flags: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "xds_server", "serve", *flags], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _samples(text: str, name: str) -> dict[str, float]:
    """label text -> value of every sample of `name` in an exposition."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            head, value = line.rsplit(" ", 1)
            out[head[len(name):]] = float(value)
    return out


async def test_workers_share_one_port_and_one_admin_view(tmp_path: Any) -> None:
    identities = mesh.generate(str(tmp_path), 10, PROXIES, namespaces=2)
    xds, admin = free_port(), free_port()
    proc = _serve("--config-dir", os.path.join(str(tmp_path), "mesh"), "--xds-address", f"127.0.0.1:{xds}",
                  "--admin-address", f"127.0.0.1:{admin}", "--workers", "2", "--drain-seconds", "1")
    clients: list[AdsClient] = []
    try:
        deadline = time.monotonic() + 60
        while _get(admin, "/readyz")[0] != 200:
            assert proc.poll() is None, proc.communicate()[0].decode()
            assert time.monotonic() < deadline, "the workers did not become ready"
            await asyncio.sleep(0.1)
        ready = json.loads(_get(admin, "/readyz")[1])
        assert [w["ready"] for w in ready["workers"]] == [True, True]

        for ident in identities:  # each client its own TCP connection, like separate Envoys
            c = AdsClient(f"127.0.0.1:{xds}", options=(("grpc.use_local_subchannel_pool", 1),))
            c.send(node=node(ident.node_id, **ident.metadata()), type_url=TypeUrl.CLUSTER.value)
            clients.append(c)
        for c in clients:
            assert (await c.recv(timeout=30)).resources  # every worker serves the whole config

        adsz: dict[str, Any] = {}

        def all_connected() -> bool:
            nonlocal adsz
            status, body = _get(admin, "/debug/adsz")
            adsz = json.loads(body) if status == 200 else {}
            return adsz.get("total") == PROXIES

        await until(all_connected, timeout=20, what="every connection in the merged /debug/adsz")
        by_worker = {c["worker"] for c in adsz["connections"]}
        assert by_worker == {0, 1}, by_worker  # the kernel spread 20 connections over both (2^-19 to fail)
        assert {c["node_id"] for c in adsz["connections"]} == {i.node_id for i in identities}

        syncz = json.loads(_get(admin, "/debug/syncz")[1])
        assert len(syncz["proxies"]) == PROXIES
        one = identities[0]
        status, body = _get(admin, f"/debug/config_dump?proxy={one.pod}.{one.namespace}")
        assert status == 200 and "ClustersConfigDump" in body
        assert _get(admin, "/debug/config_dump?proxy=nobody.nowhere")[0] == 404
        for ident in identities:  # configz?proxy= answers from the worker holding the proxy's stream
            status, body = _get(admin, f"/debug/configz?proxy={ident.pod}.{ident.namespace}")
            assert status == 200 and json.loads(body)["proxy_traffic"]["connected"] is True, body[:300]

        metrics = _get(admin, "/metrics")[1]
        connected = _samples(metrics, "pilot_xds")
        assert set(connected) == {'{kind="sotw",worker="0"}', '{kind="sotw",worker="1"}'}, connected
        assert sum(connected.values()) == PROXIES
        pushes = _samples(metrics, "pilot_xds_pushes_total")  # counters summed over the workers
        assert pushes == {'{type="cds"}': PROXIES}, pushes
    finally:
        for c in clients:
            await c.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            out = proc.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, out
    assert out.count("stopped") == 2, out  # both workers drained and stopped


def test_bad_worker_flags_exit_2_before_starting_anything(tmp_path: Any) -> None:
    for flags in (("--workers", "0"), ("--workers", "2", "--xds-address", "127.0.0.1:0")):
        proc = _serve("--config-dir", str(tmp_path), *flags)
        out = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 2, out
        assert "--workers" in out
    with socket.socket() as taken:  # the admin address in use: 2 (the workers are stopped first)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = _serve("--config-dir", str(tmp_path), "--workers", "2", "--xds-address", f"127.0.0.1:{free_port()}",
                      "--admin-address", f"127.0.0.1:{taken.getsockname()[1]}", "--drain-seconds", "0")
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 2, out
    assert "address already in use" in out


def test_metrics_merge_sums_counters_and_histograms_and_labels_gauges_by_worker() -> None:
    worker = """# HELP pilot_xds_pushes_total xDS responses sent, by type.
# TYPE pilot_xds_pushes_total counter
pilot_xds_pushes_total{type="cds"} %d.0
# HELP pilot_xds Connected xDS streams, by kind (sotw, delta).
# TYPE pilot_xds gauge
pilot_xds{kind="delta"} %d.0
# HELP pilot_xds_send_time Time to write one xDS response to the stream.
# TYPE pilot_xds_send_time histogram
pilot_xds_send_time_bucket{le="0.1"} %d.0
pilot_xds_send_time_bucket{le="+Inf"} %d.0
pilot_xds_send_time_count %d.0
pilot_xds_send_time_sum 0.5
"""
    text = merge_metrics([worker % (3, 5, 1, 2, 2), worker % (4, 6, 2, 2, 2)]).decode()
    assert _samples(text, "pilot_xds_pushes_total") == {'{type="cds"}': 7.0}
    assert _samples(text, "pilot_xds") == {'{kind="delta",worker="0"}': 5.0, '{kind="delta",worker="1"}': 6.0}
    assert _samples(text, "pilot_xds_send_time_bucket") == {'{le="0.1"}': 3.0, '{le="+Inf"}': 4.0}
    assert _samples(text, "pilot_xds_send_time_sum") == {"": 1.0}
    assert "# TYPE pilot_xds_pushes_total counter" in text


@pytest.mark.parametrize("workers", [1, 2])
def test_a_signal_repeated_during_shutdown_still_exits_0(tmp_path: Any, workers: int) -> None:
    """A process-group SIGTERM (systemd's KillMode=control-group, `kill -- -PGID`) reaches the
    supervisor and every worker, and the supervisor then sends its own: whatever the timing, a
    signal that arrives while a server is already stopping must not end it by the signal's default
    action (exit -15, which the supervisor reports as a failed worker)."""
    admin = free_port()
    proc = _serve("--config-dir", str(tmp_path), "--xds-address", f"127.0.0.1:{free_port()}",
                  "--admin-address", f"127.0.0.1:{admin}", "--drain-seconds", "0", "--workers", str(workers))
    try:
        deadline = time.monotonic() + 30
        while _get(admin, "/readyz")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, "the server never became ready"
            time.sleep(0.05)
        # SIGTERM to the whole group until it has exited: some land while the servers drain,
        # some while their loops are closing, besides the supervisor's own to its workers.
        while proc.poll() is None and time.monotonic() < deadline + 30:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(0.002)
        out = proc.communicate(timeout=30)[0].decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out
    assert out.count("stopped") == workers, out  # every server drained and stopped
