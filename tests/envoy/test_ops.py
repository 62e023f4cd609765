"""Operating it, with a real Envoy: /metrics, /debug/*, CSDS and logs against what Envoy really holds.

The translator is replaced by snapshots the test publishes (tests/conftest.py World) through the
planner, so pushes, NACKs and convergence happen exactly as in production.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2

from tests.conftest import World
from tests.support.admin_http import admin_get, admin_json, metric, value
from tests.support.envoy import LocalEnvoy, free_port
from tests.support.resources import bad_cluster, eds_cluster, endpoints, http_listener, route, snapshot
from xds_server.config.parse import parse
from xds_server.resources import TypeUrl

pytestmark = pytest.mark.envoy
NODE_ID = "sidecar~127.0.0.1~web-1.default~default.svc.cluster.local"
Status = csds_pb2.ConfigStatus


@pytest.fixture(params=["sotw", "delta"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def envoy(world: World, mode: str):
    assert world.app is not None
    e = LocalEnvoy(NODE_ID, world.app.xds_port, sotw=mode == "sotw",
                   metadata={"NAMESPACE": "default", "ROLE": "web"}).start()
    try:
        yield e
    finally:
        e.stop()


def good(listen_port: int) -> object:
    return snapshot(eds_cluster("a"), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                    endpoints("b", ("127.0.0.1", 2)), http_listener("front", listen_port, "r1"), route("r1", "a"))


async def csds_fetch(world: World, **request: object) -> csds_pb2.ClientStatusResponse:
    assert world.app is not None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{world.app.xds_port}") as channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        return await stub.FetchClientStatus(csds_pb2.ClientStatusRequest(**request), timeout=5)


async def all_synced(world: World) -> bool:
    assert world.app is not None
    body = await admin_json(world.app.admin_port, "/debug/syncz")
    return bool(body["proxies"]) and all(
        t["state"] == "SYNCED" for p in body["proxies"] for t in p["types"].values() if t["subscribed"])


async def wait_synced(world: World, envoy: LocalEnvoy, what: str) -> None:
    # envoy.until polls in a thread; the admin views live on this loop, so poll them here.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not await all_synced(world):
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{envoy.log()[-3000:]}")
        await asyncio.sleep(0.05)


async def test_envoy_nack_is_error_in_syncz_counted_in_metrics_logged_and_in_csds(
        world: World, envoy: LocalEnvoy, mode: str, caplog: pytest.LogCaptureFixture) -> None:
    assert world.app is not None
    port = world.app.admin_port
    await world.publish(good(free_port()))
    await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a", "b"], what="clusters a, b")
    await wait_synced(world, envoy, "all types SYNCED")
    assert await metric(port, "pilot_xds", kind=mode) == 1
    assert await metric(port, "pilot_total_xds_rejects_total", type="cds") == 0

    base = good(free_port())
    await world.publish(snapshot(*[b for t in TypeUrl if t in base.resources for b in base.get(t).values()],
                                 bad_cluster("bad"), endpoints("bad")))
    await envoy.until(lambda: envoy.stat("cluster_manager.cds.update_rejected") == 1, what="Envoy rejects CDS")

    async def cds_view() -> dict:
        body = await admin_json(port, "/debug/syncz?proxy=web-1.default")
        return body["proxies"][0]["types"]["cds"]

    cds = await cds_view()
    for _ in range(100):
        if cds["state"] == "ERROR":
            break
        cds = await cds_view()
    assert cds["state"] == "ERROR"
    assert "duration" in cds["last_nack"]["error"].lower()  # Envoy's own words
    assert cds["last_nack"]["nonce"] == cds["sent"]["nonce"] and cds["nacks"] == 1
    assert await metric(port, "pilot_total_xds_rejects_total", type="cds") == 1
    [line] = [r for r in caplog.records if "NACK" in r.getMessage()]
    assert line.levelname == "WARNING" and line.proxy == "web-1.default" and line.type == "cds"
    assert line.error == cds["last_nack"]["error"] and line.nonce == cds["sent"]["nonce"]

    resp = await csds_fetch(world)
    [config] = resp.config
    assert config.node.id == NODE_ID
    statuses = {(g.type_url.rsplit(".", 1)[-1], g.name): g for g in config.generic_xds_configs}
    assert statuses[("Cluster", "bad")].config_status == Status.ERROR
    assert "duration" in statuses[("Cluster", "bad")].error_state.details.lower()
    assert statuses[("ClusterLoadAssignment", "a")].config_status == Status.SYNCED


async def test_config_dump_is_what_envoy_holds(world: World, envoy: LocalEnvoy, mode: str) -> None:
    assert world.app is not None
    await world.publish(good(free_port()))
    await envoy.until(lambda: envoy.dynamic_names("routes") == ["r1"], what="route r1")
    await wait_synced(world, envoy, "all types SYNCED")
    ours = await admin_json(world.app.admin_port, "/debug/config_dump?proxy=web-1.default")
    theirs = envoy.config_dump()

    def section(dump: dict, name: str) -> dict:
        [found] = [c for c in dump["configs"] if c["@type"].endswith("." + name)]
        return found

    o, t = section(ours, "ClustersConfigDump"), section(theirs, "ClustersConfigDump")
    assert {c["cluster"]["name"]: c["cluster"] for c in o["dynamic_active_clusters"]} == \
        {c["cluster"]["name"]: c["cluster"] for c in t["dynamic_active_clusters"]}
    o, t = section(ours, "ListenersConfigDump"), section(theirs, "ListenersConfigDump")
    assert [x["active_state"]["listener"] for x in o["dynamic_listeners"]] == \
        [x["active_state"]["listener"] for x in t["dynamic_listeners"]]
    o, t = section(ours, "RoutesConfigDump"), section(theirs, "RoutesConfigDump")
    assert [r["route_config"] for r in o["dynamic_route_configs"]] == [r["route_config"] for r in t[
        "dynamic_route_configs"]]
    o, t = section(ours, "EndpointsConfigDump"), section(theirs, "EndpointsConfigDump")
    assert sorted(e["endpoint_config"]["cluster_name"] for e in o["dynamic_endpoint_configs"]) == \
        sorted(e["endpoint_config"]["cluster_name"] for e in t["dynamic_endpoint_configs"])
    if mode == "delta":  # delta: Envoy shows each resource's own version, as we do
        o, t = section(ours, "ClustersConfigDump"), section(theirs, "ClustersConfigDump")
        assert sorted(c["version_info"] for c in o["dynamic_active_clusters"]) == \
            sorted(c["version_info"] for c in t["dynamic_active_clusters"])
    assert envoy.rejected() == 0


async def test_adsz_configz_csds_and_metrics_describe_the_connected_envoy(
        world: World, envoy: LocalEnvoy, mode: str) -> None:
    assert world.app is not None
    port = world.app.admin_port
    svc, _ = parse({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}, "x.yaml:0")
    assert svc is not None
    world.app.store.replace("x.yaml", [svc])
    await world.publish(good(free_port()))
    await envoy.until(lambda: envoy.dynamic_names("routes") == ["r1"], what="route r1")
    await wait_synced(world, envoy, "all types SYNCED")

    [conn] = (await admin_json(port, "/debug/adsz"))["connections"]
    assert (conn["node_id"], conn["proxy"], conn["kind"]) == (NODE_ID, "web-1.default", mode)
    assert conn["peer"].startswith("ipv4:127.0.0.1:")
    assert conn["metadata"] == {"NAMESPACE": "default", "ROLE": "web"}
    subs = conn["subscriptions"]
    assert subs["cds"]["wildcard"] and subs["lds"]["wildcard"]
    assert subs["eds"]["names"] == ["a", "b"] and subs["rds"]["names"] == ["r1"]

    configz = await admin_json(port, "/debug/configz")
    assert configz["objects"] == [{"kind": "Service", "namespace": "default", "name": "web", "origin": "x.yaml"}]

    resp = await csds_fetch(world, node_matchers=[
        node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(contains="web-1.default"))])
    [config] = resp.config
    got = sorted((g.type_url.rsplit(".", 1)[-1], g.name, csds_pb2.ConfigStatus.Name(g.config_status))
                 for g in config.generic_xds_configs)
    assert got == [("Cluster", "a", "SYNCED"), ("Cluster", "b", "SYNCED"),
                   ("ClusterLoadAssignment", "a", "SYNCED"), ("ClusterLoadAssignment", "b", "SYNCED"),
                   ("Listener", "front", "SYNCED"), ("RouteConfiguration", "r1", "SYNCED")]
    assert envoy.stat("control_plane.connected_state") == 1

    # A change pushed to the connected Envoy and ACKed is one convergence observation.
    before = await metric(port, "pilot_proxy_convergence_time_count")
    await world.publish(snapshot(*good(free_port()).get(TypeUrl.CLUSTER).values(), eds_cluster("c"),
                                 endpoints("a", ("127.0.0.1", 1)), endpoints("b"), endpoints("c")))
    await envoy.until(lambda: envoy.dynamic_names("clusters") == ["a", "b", "c"], what="cluster c")
    await wait_synced(world, envoy, "SYNCED after the change")
    _, text = await admin_get(port, "/metrics")
    assert value(text, "pilot_proxy_convergence_time_count") == before + 1
    assert value(text, "pilot_proxy_queue_time_count") >= 1 and value(text, "pilot_xds_push_time_count", type="cds")
    assert value(text, "pilot_xds", kind=mode) == 1
    for short in ("cds", "eds", "lds", "rds"):
        assert value(text, "pilot_xds_pushes_total", type=short) >= 1
    assert value(text, "pilot_inbound_updates_total", kind="Service", event="add") == 1
    assert value(text, "pilot_total_xds_rejects_total", type="cds") == 0
    assert value(text, "pilot_xds_recv_max") > 1000  # Envoy's node message
