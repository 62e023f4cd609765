"""xDS conformance over real gRPC with a raw client: the rules of Envoy's xDS protocol docs
(`api-docs/xds_protocol`: versions and nonces, ACK/NACK, wildcard and named subscriptions, delta).

Each test's name starts with its case id and states the rule it checks. The translator is replaced by snapshots the test
publishes (tests/conftest.py World), so responses can be asserted exactly.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.conftest import World
from tests.support.ads_client import AdsClient, names, node, until
from tests.support.resources import eds_cluster, endpoints, http_listener, route, snapshot
from xds_server.resources import TypeUrl

CDS, EDS, LDS, RDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE
NODE = node("sidecar~10.0.0.1~app-1.default~default.svc.cluster.local", NAMESPACE="default")


def world_abc() -> object:
    return snapshot(eds_cluster("a"), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                    endpoints("b", ("127.0.0.1", 2)), http_listener("l1", 10001, "r1"), route("r1", "a"))


@pytest.fixture
async def sotw(target: str):
    c = AdsClient(target)
    yield c
    await c.close()


@pytest.fixture
async def delta(target: str):
    c = AdsClient(target, delta=True)
    yield c
    await c.close()


def ack(c: AdsClient, resp, names_: list[str] | None = None) -> None:
    if c.delta:
        c.send(type_url=resp.type_url, response_nonce=resp.nonce)
    else:
        c.send(type_url=resp.type_url, version_info=resp.version_info, response_nonce=resp.nonce,
               resource_names=names_ or [])


# ---------------------------------------------------------------- A. stream basics

async def test_a2_empty_world_still_answers_first_cds_and_lds(sotw: AdsClient) -> None:
    sotw.send(node=NODE, type_url=CDS)
    resp = await sotw.recv()
    assert resp.type_url == CDS and list(resp.resources) == [] and resp.nonce
    sotw.send(type_url=LDS)
    resp = await sotw.recv()
    assert resp.type_url == LDS and list(resp.resources) == []


async def test_a3_node_only_on_first_request_later_requests_belong_to_the_same_proxy(
        world: World, sotw: AdsClient) -> None:
    await world.publish(world_abc())
    sotw.send(node=NODE, type_url=CDS)
    cds = await sotw.recv()
    sotw.send(type_url=EDS, resource_names=["a"])  # no node
    eds = await sotw.recv()
    assert names(eds) == ["a"]
    ack(sotw, cds)
    await sotw.expect_none()
    conns = list(world.app.services.connections.values())
    assert [c.proxy.pod_name for c in conns] == ["app-1"]


@pytest.mark.parametrize("delta_mode", [False, True])
async def test_a4_first_request_without_node_id_is_invalid_argument(target: str, delta_mode: bool) -> None:
    bad = AdsClient(target, delta=delta_mode)
    good = AdsClient(target, delta=delta_mode)
    try:
        bad.send(type_url=CDS)
        assert await bad.status() == grpc.StatusCode.INVALID_ARGUMENT
        good.send(node=NODE, type_url=CDS)
        assert (await good.recv()).type_url == CDS
    finally:
        await bad.close()
        await good.close()


async def test_a5_empty_type_url_is_invalid_argument(sotw: AdsClient) -> None:
    sotw.send(node=NODE, type_url="")
    assert await sotw.status() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("delta_mode", [False, True])
async def test_a6_unknown_type_keeps_the_stream_open(world: World, target: str, delta_mode: bool) -> None:
    await world.publish(world_abc())
    c = AdsClient(target, delta=delta_mode)
    try:
        c.send(node=NODE, type_url="type.googleapis.com/envoy.service.runtime.v3.Runtime")
        await c.expect_none()
        c.send(type_url=CDS)
        resp = await c.recv()
        assert names(resp) == ["a", "b"]
    finally:
        await c.close()


async def test_a7_200_streams_on_one_channel_are_all_served(world: World, target: str) -> None:
    await world.publish(world_abc())
    channel = grpc.aio.insecure_channel(target)
    clients = []
    try:
        clients = [AdsClient(target) for _ in range(200)]
        for i, c in enumerate(clients):
            c.send(node=node(f"sidecar~10.0.1.{i % 250}~p{i}.default~default.svc.cluster.local"), type_url=CDS)
        resps = await asyncio.gather(*(c.recv(timeout=20) for c in clients))
        assert all(names(r) == ["a", "b"] for r in resps)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
        await channel.close()


async def test_a8_overlapping_streams_of_one_node_are_independent(world: World, target: str) -> None:
    await world.publish(world_abc())
    first, second = AdsClient(target), AdsClient(target)
    try:
        first.send(node=NODE, type_url=CDS)
        second.send(node=NODE, type_url=CDS)
        await first.recv()
        r2 = await second.recv()
        ack(second, r2)
        await first.close()
        await world.publish(snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1))))
        r2b = await second.recv()
        assert names(r2b) == ["a"]
        assert len(world.app.services.connections) == 1
    finally:
        await second.close()


# ---------------------------------------------------------------- B. versions, nonces, ACK

async def test_b10_every_nonce_on_a_stream_is_new(world: World, sotw: AdsClient) -> None:
    await world.publish(world_abc())
    sotw.send(node=NODE, type_url=CDS)
    seen = [(await sotw.recv()).nonce]
    sotw.send(type_url=EDS, resource_names=["a", "b"])
    seen.append((await sotw.recv()).nonce)
    sotw.send(type_url=LDS)
    seen.append((await sotw.recv()).nonce)
    sotw.send(type_url=RDS, resource_names=["r1"])
    seen.append((await sotw.recv()).nonce)
    await world.publish(snapshot(eds_cluster("a", 2), endpoints("a", ("127.0.0.1", 3)),
                                 http_listener("l1", 10001, "r1"), route("r1", "a")))
    for _ in range(2):  # CDS and EDS changed
        seen.append((await sotw.recv()).nonce)
    assert len(set(seen)) == len(seen)


async def test_b11_an_ack_gets_no_response(world: World, sotw: AdsClient) -> None:
    await world.publish(world_abc())
    sotw.send(node=NODE, type_url=CDS)
    ack(sotw, await sotw.recv())
    await sotw.expect_none()


async def test_b14_sotw_stale_nonce_is_ignored(world: World, sotw: AdsClient) -> None:
    await world.publish(world_abc())
    sotw.send(node=NODE, type_url=CDS)
    n1 = await sotw.recv()
    await world.publish(snapshot(eds_cluster("a", 3), endpoints("a", ("127.0.0.1", 1))))
    n2 = await sotw.recv()
    assert n2.nonce != n1.nonce
    sotw.send(type_url=CDS, version_info=n1.version_info, response_nonce=n1.nonce)
    await sotw.expect_none()
    assert world.app.services.connections  # still open


async def test_b15_delta_stale_nonce_still_applies_the_subscription(world: World, delta: AdsClient) -> None:
    await world.publish(world_abc())
    delta.send(node=NODE, type_url=EDS, resource_names_subscribe=["a"])
    r1 = await delta.recv()
    await world.publish(snapshot(eds_cluster("a"), eds_cluster("b"), endpoints("a", ("127.0.0.1", 9)),
                                 endpoints("b", ("127.0.0.1", 2))))
    r2 = await delta.recv()
    assert names(r2) == ["a"] and r2.nonce != r1.nonce
    delta.send(type_url=EDS, response_nonce=r1.nonce, resource_names_subscribe=["b"])
    r3 = await delta.recv()
    assert names(r3) == ["b"]


# ---------------------------------------------------------------- C. NACK

@pytest.mark.parametrize("delta_mode", [False, True])
async def test_c20_nack_is_recorded_not_answered_and_keeps_the_old_acked_version(
        world: World, target: str, delta_mode: bool) -> None:
    await world.publish(world_abc())
    c = AdsClient(target, delta=delta_mode)
    try:
        c.send(node=NODE, type_url=CDS)
        good = await c.recv()
        ack(c, good)
        conn = next(iter(world.app.services.connections.values()))
        status = conn.machine.statuses()[CDS]
        await until(lambda: status.acked_nonce == good.nonce, what="the ACK")
        await world.publish(snapshot(eds_cluster("a", 7), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                                     endpoints("b", ("127.0.0.1", 2))))
        bad = await c.recv()
        if delta_mode:
            c.send(type_url=CDS, response_nonce=bad.nonce, error_detail="Invalid duration")
        else:
            c.send(type_url=CDS, version_info=good.version_info, response_nonce=bad.nonce,
                   error_detail="Invalid duration")
        await c.expect_none()
        assert status.state == "ERROR" and status.nack.error == "Invalid duration"
        assert status.acked_nonce == good.nonce
        # The same (bad) content republished: nothing is resent.
        await world.publish(snapshot(eds_cluster("a", 7), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                                     endpoints("b", ("127.0.0.1", 2))))
        await c.expect_none()
        # A fixed version is pushed, ACKed, and clears the error.
        await world.publish(world_abc())
        fixed = await c.recv()
        assert fixed.type_url == CDS
        ack(c, fixed)
        await c.expect_none()
        assert status.state == "SYNCED" and status.nack is None
    finally:
        await c.close()


async def test_c22_inconsistent_snapshot_is_not_published(world: World, sotw: AdsClient) -> None:
    await world.publish(world_abc())
    sotw.send(node=NODE, type_url=CDS)
    first = await sotw.recv()
    ack(sotw, first)
    # A cluster whose endpoints do not exist: dangling reference.
    await world.publish(snapshot(eds_cluster("a"), eds_cluster("zzz"), endpoints("a", ("127.0.0.1", 1))))
    await sotw.expect_none()
    assert any("zzz" in p for p in world.app.planner.rejected[NODE.id])


# ---------------------------------------------------------------- D. subscriptions

async def test_d23_d24_sotw_wildcard_then_named_then_none(world: World, sotw: AdsClient) -> None:
    await world.publish(world_abc())
    sotw.send(node=NODE, type_url=CDS, resource_names=["*", "a"])
    r = await sotw.recv()
    assert names(r) == ["a", "b"]
    sotw.send(type_url=CDS, version_info=r.version_info, response_nonce=r.nonce, resource_names=["a"])
    r = await sotw.recv()
    assert names(r) == ["a"]
    await world.publish(snapshot(eds_cluster("a"), eds_cluster("b", 5), endpoints("a", ("127.0.0.1", 1)),
                                 endpoints("b", ("127.0.0.1", 2))))
    await sotw.expect_none()  # b changed, but only a is subscribed
    sotw.send(type_url=CDS, version_info=r.version_info, response_nonce=r.nonce, resource_names=[])
    r = await sotw.recv()
    assert names(r) == []


async def test_d25_sotw_eds_resubscribe_resends_unchanged(world: World, sotw: AdsClient) -> None:
    await world.publish(world_abc())
    sotw.send(node=NODE, type_url=EDS, resource_names=["a", "b"])
    r = await sotw.recv()
    assert names(r) == ["a", "b"]
    sotw.send(type_url=EDS, version_info=r.version_info, response_nonce=r.nonce, resource_names=["a"])
    await sotw.expect_none()
    sotw.send(type_url=EDS, version_info=r.version_info, response_nonce=r.nonce, resource_names=["a", "b"])
    r = await sotw.recv()
    assert names(r) == ["a", "b"]


async def test_d26_sotw_missing_name_is_pushed_when_created(world: World, sotw: AdsClient) -> None:
    await world.publish(world_abc())
    sotw.send(node=NODE, type_url=EDS, resource_names=["c"])
    await sotw.expect_none()
    await world.publish(snapshot(eds_cluster("c"), endpoints("c", ("127.0.0.1", 3))))
    r = await sotw.recv()
    assert names(r) == ["c"]


async def test_d27_delta_legacy_wildcard_survives_a_named_subscription(world: World, delta: AdsClient) -> None:
    await world.publish(world_abc())
    delta.send(node=NODE, type_url=CDS)
    r = await delta.recv()
    assert names(r) == ["a", "b"]
    delta.send(type_url=CDS, response_nonce=r.nonce, resource_names_subscribe=["a"])
    r = await delta.recv()
    assert names(r) == ["a"]  # subscribing again re-sends
    await world.publish(snapshot(*world_abc().resources[CDS].values(), eds_cluster("c"),
                                 *world_abc().resources[EDS].values(), endpoints("c", ("127.0.0.1", 3))))
    r = await delta.recv()
    assert names(r) == ["c"]


async def test_d28_delta_unsubscribe_wildcard_keeps_only_named(world: World, delta: AdsClient) -> None:
    await world.publish(world_abc())
    delta.send(node=NODE, type_url=CDS, resource_names_subscribe=["*", "a"])
    r = await delta.recv()
    assert names(r) == ["a", "b"]
    delta.send(type_url=CDS, response_nonce=r.nonce, resource_names_unsubscribe=["*"])
    r = await delta.recv()
    assert list(r.removed_resources) == ["b"]
    await world.publish(snapshot(eds_cluster("a"), eds_cluster("b", 9), endpoints("a", ("127.0.0.1", 1)),
                                 endpoints("b", ("127.0.0.1", 2))))
    await delta.expect_none()


async def test_d29_delta_unsubscribing_a_name_inside_the_wildcard_answers_with_it(
        world: World, delta: AdsClient) -> None:
    await world.publish(world_abc())
    delta.send(node=NODE, type_url=CDS, resource_names_subscribe=["*", "a", "zz"])
    r = await delta.recv()
    assert names(r) == ["a", "b"] and list(r.removed_resources) == ["zz"]
    delta.send(type_url=CDS, response_nonce=r.nonce, resource_names_unsubscribe=["a"])
    r = await delta.recv()
    assert names(r) == ["a"]


async def test_d30_delta_phantom_unsubscribe_is_ignored(world: World, delta: AdsClient) -> None:
    await world.publish(world_abc())
    delta.send(node=NODE, type_url=EDS, resource_names_subscribe=["a"])
    r = await delta.recv()
    delta.send(type_url=EDS, response_nonce=r.nonce, resource_names_unsubscribe=["never"])
    await delta.expect_none()


async def test_d32_delta_missing_name_is_announced_then_pushed_when_created(world: World, delta: AdsClient) -> None:
    await world.publish(world_abc())
    delta.send(node=NODE, type_url=EDS, resource_names_subscribe=["y"])
    r = await delta.recv()
    assert list(r.removed_resources) == ["y"] and not r.resources
    await world.publish(snapshot(eds_cluster("y"), endpoints("y", ("127.0.0.1", 4))))
    r = await delta.recv()
    assert names(r) == ["y"]


async def test_d33_named_lds_gets_exactly_that_listener(world: World, sotw: AdsClient) -> None:
    base = [eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)), route("r1", "a")]
    await world.publish(snapshot(*base, http_listener("svc.example:443", 10001, "r1"),
                                 http_listener("other", 10002, "r1")))
    sotw.send(node=NODE, type_url=LDS, resource_names=["svc.example:443"])
    r = await sotw.recv()
    assert names(r) == ["svc.example:443"]
    ack(sotw, r, ["svc.example:443"])
    await world.publish(snapshot(*base, http_listener("svc.example:443", 10001, "r1"),
                                 http_listener("other", 10003, "r1")))
    await sotw.expect_none()


# ---------------------------------------------------------------- E. delta data

async def test_e34_one_changed_cluster_of_100_sends_one_resource(world: World, delta: AdsClient) -> None:
    builts = [b for i in range(100) for b in (eds_cluster(f"c{i}"), endpoints(f"c{i}", ("127.0.0.1", 1)))]
    await world.publish(snapshot(*builts))
    delta.send(node=NODE, type_url=CDS)
    r = await delta.recv()
    assert len(r.resources) == 100
    delta.send(type_url=CDS, response_nonce=r.nonce)
    builts[10] = eds_cluster("c5", 3)
    await world.publish(snapshot(*builts))
    r = await delta.recv()
    assert names(r) == ["c5"] and not r.removed_resources


async def test_e37_delta_reconnect_honours_initial_resource_versions(world: World, target: str) -> None:
    a, b, c = eds_cluster("a"), eds_cluster("b"), eds_cluster("c")
    await world.publish(snapshot(a, b, endpoints("a", ("127.0.0.1", 1)), endpoints("b", ("127.0.0.1", 2))))
    first = AdsClient(target, delta=True)
    first.send(node=NODE, type_url=CDS)
    r = await first.recv()
    held = {res.name: res.version for res in r.resources}
    await first.close()
    # while "disconnected": a changes, b is deleted, c is added
    a2 = eds_cluster("a", 4)
    await world.publish(snapshot(a2, c, endpoints("a", ("127.0.0.1", 1)), endpoints("c", ("127.0.0.1", 3))))
    again = AdsClient(target, delta=True)
    try:
        again.send(node=NODE, type_url=CDS, initial_resource_versions=held)
        r = await again.recv()
        assert names(r) == ["a", "c"] and list(r.removed_resources) == ["b"]
    finally:
        await again.close()


async def test_e37_delta_reconnect_with_nothing_changed_sends_no_bodies(world: World, target: str) -> None:
    await world.publish(world_abc())
    first = AdsClient(target, delta=True)
    first.send(node=NODE, type_url=CDS)
    held = {res.name: res.version for res in (await first.recv()).resources}
    await first.close()
    again = AdsClient(target, delta=True)
    try:
        again.send(node=NODE, type_url=CDS, initial_resource_versions=held)
        r = await again.recv()
        assert not r.resources and not r.removed_resources
    finally:
        await again.close()


# ---------------------------------------------------------------- F. ordering and warming

@pytest.mark.parametrize("delta_mode", [False, True])
async def test_f40_push_order_is_cds_eds_lds_rds(world: World, target: str, delta_mode: bool) -> None:
    await world.publish(world_abc())
    c = AdsClient(target, delta=delta_mode)
    try:
        sub = "resource_names_subscribe" if delta_mode else "resource_names"
        for t, n in ((CDS, []), (EDS, ["a", "b"]), (LDS, []), (RDS, ["r1"])):
            c.send(**({"node": NODE} if t == CDS else {}), type_url=t, **{sub: n})
            r = await c.recv()
            ack(c, r, n)
        await c.expect_none()
        await world.publish(snapshot(eds_cluster("a", 2), eds_cluster("b"), endpoints("a", ("127.0.0.1", 5)),
                                     endpoints("b", ("127.0.0.1", 2)), http_listener("l1", 10009, "r1"),
                                     route("r1", "b")))
        order = [(await c.recv()).type_url for _ in range(4)]
        assert order == [CDS, EDS, LDS, RDS]
    finally:
        await c.close()


@pytest.mark.parametrize("delta_mode", [False, True])
async def test_f43_changed_cluster_gets_its_endpoints_again(world: World, target: str, delta_mode: bool) -> None:
    await world.publish(world_abc())
    c = AdsClient(target, delta=delta_mode)
    try:
        sub = "resource_names_subscribe" if delta_mode else "resource_names"
        c.send(node=NODE, type_url=CDS)
        ack(c, await c.recv())
        c.send(type_url=EDS, **{sub: ["a", "b"]})
        ack(c, await c.recv(), ["a", "b"])
        # cluster a's settings change, its endpoints do not
        await world.publish(snapshot(eds_cluster("a", 9), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                                     endpoints("b", ("127.0.0.1", 2)), http_listener("l1", 10001, "r1"),
                                     route("r1", "a")))
        cds = await c.recv()
        eds = await c.recv()
        assert cds.type_url == CDS and eds.type_url == EDS
        assert "a" in names(eds)
    finally:
        await c.close()


@pytest.mark.parametrize("delta_mode", [False, True])
async def test_f42_cluster_removal_waits_for_the_route_change_ack(world: World, target: str, delta_mode: bool) -> None:
    x, y = eds_cluster("x"), eds_cluster("y")
    ex, ey = endpoints("x", ("127.0.0.1", 1)), endpoints("y", ("127.0.0.1", 2))
    await world.publish(snapshot(x, ex, http_listener("l1", 10001, "r1"), route("r1", "x")))
    c = AdsClient(target, delta=delta_mode)
    try:
        sub = "resource_names_subscribe" if delta_mode else "resource_names"
        c.send(node=NODE, type_url=CDS)
        ack(c, await c.recv())
        c.send(type_url=EDS, **{sub: ["x"]})
        ack(c, await c.recv(), ["x"])
        c.send(type_url=LDS)
        ack(c, await c.recv())
        c.send(type_url=RDS, **{sub: ["r1"]})
        ack(c, await c.recv(), ["r1"])
        # the route moves from x to y and x goes away, in one push
        await world.publish(snapshot(y, ey, http_listener("l1", 10001, "r1"), route("r1", "y")))
        cds = await c.recv()
        assert cds.type_url == CDS
        if delta_mode:
            assert names(cds) == ["y"] and not cds.removed_resources  # x kept for now
        else:
            assert names(cds) == ["x", "y"]
        rds = await c.recv()
        assert rds.type_url == RDS
        ack(c, cds)
        await c.expect_none()  # CDS ACKed, but the route change is not: x stays
        ack(c, rds, ["r1"])
        final = await c.recv()  # only now is x removed
        assert final.type_url == CDS
        if delta_mode:
            assert list(final.removed_resources) == ["x"]
        else:
            assert names(final) == ["y"]
    finally:
        await c.close()


# ---------------------------------------------------------------- per-type services

async def test_per_type_cluster_service_serves_only_clusters(world: World, target: str) -> None:
    await world.publish(world_abc())
    c = AdsClient(target, method="/envoy.service.cluster.v3.ClusterDiscoveryService/StreamClusters")
    try:
        c.send(node=NODE)  # empty type_url means the service's type
        r = await c.recv()
        assert r.type_url == CDS and names(r) == ["a", "b"]
    finally:
        await c.close()
    d = AdsClient(target, delta=True, method="/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints")
    try:
        d.send(node=NODE, resource_names_subscribe=["a"])
        r = await d.recv()
        assert r.type_url == EDS and names(r) == ["a"]
        d.send(type_url=CDS)
        assert await d.status() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await d.close()


async def test_a_stream_whose_first_request_is_refused_leaves_no_timer(world: World, target: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The send-timeout watchdog watches a stream before its first answer: a refused first request leaves it too."""
    from xds_server.xds import services

    pumps: list[services._Pump] = []
    real_init = services._Pump.__init__

    def recording_init(self: services._Pump, *args: object) -> None:
        real_init(self, *args)  # type: ignore[arg-type]
        pumps.append(self)

    monkeypatch.setattr(services._Pump, "__init__", recording_init)
    d = AdsClient(target, delta=True, method="/envoy.service.endpoint.v3.EndpointDiscoveryService/DeltaEndpoints")
    try:
        d.send(node=NODE, type_url=CDS)  # a cluster request on the endpoint service
        assert await d.status() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await d.close()
    assert world.app is not None
    await until(lambda: not world.app.services.connections, what="the stream is gone")
    watchdog = world.app.services.watchdog
    assert len(pumps) == 1 and pumps[0] not in watchdog
    assert len(watchdog) == 0 and not watchdog.armed  # no stream left: no timer either
