"""A real Envoy against the real server, SotW and delta: what Envoy's xDS protocol docs promise, seen
from a real client.

The translator is replaced by snapshots the test publishes through the cache's own API
(tests/conftest.py World), so each case controls exactly what Envoy gets.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import World
from tests.support.backend import get, http_backend
from tests.support.envoy import LocalEnvoy, free_port
from tests.support.resources import bad_cluster, eds_cluster, endpoints, http_listener, route, snapshot

pytestmark = pytest.mark.envoy
NODE_ID = "sidecar~127.0.0.1~web-1.default~default.svc.cluster.local"


@pytest.fixture(params=["sotw", "delta"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def envoy(world: World, mode: str):
    e = LocalEnvoy(NODE_ID, world.app.xds_port, sotw=mode == "sotw").start()
    yield e
    e.stop()


async def test_a1_startup_three_clusters_one_listener_and_traffic(world: World, envoy: LocalEnvoy) -> None:
    port = free_port()
    async with http_backend("backend-a") as backend:
        await world.publish(snapshot(
            eds_cluster("a"), eds_cluster("b"), eds_cluster("c"),
            endpoints("a", ("127.0.0.1", backend)), endpoints("b"), endpoints("c"),
            http_listener("front", port, "r1"), route("r1", "a")))
        await envoy.until(lambda: envoy.text_stat("server.state") == "0", what="Envoy live")
        await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a", "b", "c"], what="clusters")
        # LDS follows CDS (and the listener warms until RDS answers): a separate wait, not a read.
        await envoy.until(lambda: envoy.dynamic_names("listeners") == ["front"], what="listener front active")
        status, body = await get(f"http://127.0.0.1:{port}/hello")
        assert status == 200 and json.loads(body)["name"] == "backend-a"
        conn = next(iter(world.app.services.connections.values()))
        statuses = conn.machine.statuses()
        assert envoy.text_stat("cluster_manager.cds.version_text") == statuses[
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"].sent_version
        assert envoy.rejected() == 0


async def test_a2_empty_world_is_live_without_init_timeout(world: World, envoy: LocalEnvoy) -> None:
    await envoy.until(lambda: envoy.text_stat("server.state") == "0", timeout=5, what="Envoy live")
    assert envoy.stat("cluster_manager.cds.init_fetch_timeout") == 0
    assert envoy.rejected() == 0


def cds_status(world: World):
    conn = next(iter(world.app.services.connections.values()))
    return conn.machine.statuses()["type.googleapis.com/envoy.config.cluster.v3.Cluster"]


async def test_b12_identical_republish_causes_no_push(world: World, envoy: LocalEnvoy) -> None:
    snap = lambda: snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)))  # noqa: E731
    await world.publish(snap())
    await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a"], what="cluster a")
    await envoy.until(lambda: cds_status(world).state == "SYNCED", what="CDS ACK")
    attempts = envoy.stat("cluster_manager.cds.update_attempt")
    await world.publish(snap())  # same content, new objects
    await world.publish(snapshot(eds_cluster("a", 3), endpoints("a", ("127.0.0.1", 1))))
    await envoy.until(lambda: envoy.stat("cluster_manager.cds.update_attempt") == attempts + 1,
                      what="exactly one new CDS attempt")
    assert envoy.rejected() == 0


async def test_c16_to_c18_nack_recorded_not_resent_then_recovered(world: World, envoy: LocalEnvoy) -> None:
    good = snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)))
    await world.publish(good)
    await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a"], what="cluster a")
    # Put a cluster Envoy rejects into the cache through the cache's own API.
    bad = snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)), bad_cluster("bad"), endpoints("bad"))
    world.app.cache.set_snapshot(NODE_ID, bad)
    conn = next(iter(world.app.services.connections.values()))
    cds = conn.machine.statuses()["type.googleapis.com/envoy.config.cluster.v3.Cluster"]
    await envoy.until(lambda: cds.nack is not None, what="the NACK")
    assert "duration" in cds.nack.error.lower() and cds.state == "ERROR"
    sent_before = cds.responses
    # No resend loop: the same content published again sends nothing.
    world.app.cache.set_snapshot(NODE_ID, snapshot(*bad.get(
        "type.googleapis.com/envoy.config.cluster.v3.Cluster").values(), *bad.get(
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment").values()))
    await world.publish(bad)
    await envoy.until(lambda: envoy.stat("cluster_manager.cds.update_rejected") == 1, what="one rejection")
    assert cds.responses == sent_before
    assert envoy.stat("cluster_manager.cds.update_rejected") == 1
    # Recovery: a fixed version is pushed once, ACKed, the error clears.
    await world.publish(snapshot(eds_cluster("a"), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                                 endpoints("b")))
    await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a", "b"], what="fixed config")
    await envoy.until(lambda: cds.state == "SYNCED", what="SYNCED after recovery")
    assert cds.responses == sent_before + 1
    assert envoy.stat("cluster_manager.cds.update_rejected") == 1


async def test_c19_a_cds_nack_does_not_block_lds(world: World, envoy: LocalEnvoy) -> None:
    p1, p2 = free_port(), free_port()
    base = [eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)), route("r1", "a")]
    await world.publish(snapshot(*base, http_listener("l1", p1, "r1")))
    await envoy.until(lambda: envoy.dynamic_names("listeners") == ["l1"], what="listener l1")
    await world.publish(snapshot(*base, bad_cluster("bad"), endpoints("bad"), http_listener("l1", p1, "r1")))
    conn = next(iter(world.app.services.connections.values()))
    statuses = conn.machine.statuses()
    await envoy.until(lambda: statuses["type.googleapis.com/envoy.config.cluster.v3.Cluster"].state == "ERROR",
                      what="CDS NACK")
    await world.publish(snapshot(*base, bad_cluster("bad"), endpoints("bad"), http_listener("l1", p1, "r1"),
                                 http_listener("l2", p2, "r1")))
    await envoy.until(lambda: envoy.dynamic_names("listeners") == ["l1", "l2"], what="listener l2 despite CDS error")
    await envoy.until(lambda: statuses["type.googleapis.com/envoy.config.listener.v3.Listener"].state == "SYNCED",
                      what="LDS ACKed while CDS is in ERROR")


async def test_f43_changed_cluster_finishes_warming(world: World, envoy: LocalEnvoy) -> None:
    await world.publish(snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1))))
    await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a"], what="cluster a")
    await envoy.until(lambda: cds_status(world).state == "SYNCED", what="CDS ACK")
    first = cds_status(world).acked_version
    await world.publish(snapshot(eds_cluster("a", 4), endpoints("a", ("127.0.0.1", 1))))
    await envoy.until(lambda: cds_status(world).state == "SYNCED" and cds_status(world).acked_version != first,
                      what="second CDS ACK")
    await envoy.until(lambda: envoy.stat("cluster_manager.warming_clusters") == 0, timeout=2, what="warm")
    assert envoy.rejected() == 0


async def test_f44_listener_with_new_route_name_warms(world: World, envoy: LocalEnvoy) -> None:
    p1 = free_port()
    await world.publish(snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)),
                                 http_listener("l1", p1, "r1"), route("r1", "a"), route("r2", "a")))
    await envoy.until(lambda: envoy.dynamic_names("listeners") == ["l1"], what="l1")
    await world.publish(snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)),
                                 http_listener("l1", p1, "r2"), route("r1", "a"), route("r2", "a")))
    await envoy.until(lambda: "r2" in envoy.dynamic_names("routes"), what="route r2")
    await envoy.until(lambda: envoy.stat("listener_manager.total_listeners_warming") == 0, what="no warming")
    assert envoy.rejected() == 0
