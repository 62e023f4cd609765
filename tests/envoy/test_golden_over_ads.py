"""Issue 4: every golden config is served over ADS to a real Envoy and accepted, SotW and delta.

Each Envoy runs alone in a fresh network namespace (the configs bind real ports and unix
paths), reaching the server and exposing its admin API over unix sockets.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from envoy.config.listener.v3 import listener_pb2

from tests.conftest import World
from tests.golden.harness import Case, RealTlsFiles, cases
from tests.support.envoy import LocalEnvoy, netns_available
from xds_server.app import App
from xds_server.resources import PUSH_ORDER, short_name
from xds_server.settings import Settings

pytestmark = [pytest.mark.envoy,
              pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`")]


@pytest.fixture
async def unix_world() -> AsyncIterator[tuple[World, str]]:
    sock_dir = tempfile.mkdtemp(prefix="xds-sock-")
    os.chmod(sock_dir, 0o755)
    sock = f"unix://{sock_dir}/xds.sock"
    w = World()
    app = App(Settings(xds_host=sock, admin_port=-1, drain_seconds=0), sources=[], generate=w.generate)
    w.app = app
    await app.start()
    try:
        yield w, sock
    finally:
        await app.stop(0)
        shutil.rmtree(sock_dir, ignore_errors=True)


def bound_addresses(snap) -> tuple[str, ...]:
    """Specific IPs the config binds: the pod's own addresses, present on a real pod."""
    out = set()
    for built in snap.get(PUSH_ORDER[2]).values():
        lis = listener_pb2.Listener.FromString(built.payload)
        if lis.HasField("bind_to_port") and not lis.bind_to_port.value:
            continue
        addr = lis.address.socket_address.address
        if addr and not ipaddress.ip_address(addr).is_unspecified and not ipaddress.ip_address(addr).is_loopback:
            out.add(addr)
    return tuple(sorted(out))


@pytest.mark.parametrize("mode", ["sotw", "delta"])
@pytest.mark.parametrize("case", cases(), ids=lambda c: c.name)
async def test_golden_config_is_accepted_over_ads(unix_world: tuple[World, str], case: Case, mode: str,
                                                  tmp_path: Path) -> None:
    world, sock = unix_world
    snap = RealTlsFiles(tmp_path).snapshot(case.render())  # Envoy loads the TLS files a config names
    await world.publish(snap)
    envoy = LocalEnvoy(f"sidecar~127.0.0.1~{case.proxy}~default.svc.cluster.local", xds_address=sock,
                       sotw=mode == "sotw", isolated=True, addresses=bound_addresses(snap))
    with envoy:
        def synced() -> bool:
            conns = list(world.app.services.connections.values())
            if not conns:
                return False
            statuses = conns[0].machine.statuses()
            wanted = [t for t in PUSH_ORDER if snap.get(t)]
            return all(t in statuses and statuses[t].state == "SYNCED" for t in wanted)

        await envoy.until(synced, what=f"every type ACKed for {case.name}")
        await envoy.until(lambda: envoy.text_stat("server.state") == "0", what="Envoy live")
        await envoy.until(lambda: envoy.stat("listener_manager.total_listeners_warming") == 0
                          and envoy.stat("cluster_manager.warming_clusters") == 0, what="nothing warming")
        assert envoy.rejected() == 0, envoy.log()[-3000:]
        statuses = next(iter(world.app.services.connections.values())).machine.statuses()
        assert not [short_name(t) for t, s in statuses.items() if s.nack is not None]
        assert sorted(envoy.dynamic_names("clusters")) == sorted(snap.get(PUSH_ORDER[0]))
