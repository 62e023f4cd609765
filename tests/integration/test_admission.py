"""Admission and resource limits (docs/security.md).

- new streams beyond the rate wait briefly, then are refused with RESOURCE_EXHAUSTED (counted);
- until every source has synced, streams are refused with UNAVAILABLE, never served a partial config;
- the receive limit fits Envoy's 60 kB node plus a big delta subscription; larger is refused;
- keepalive: a client pinging too often gets GOAWAY, a well-behaved one keeps its stream;
- a stream that stops reading only ever holds one response: it is closed after the send timeout
  and never delays pushes to the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2

from tests.support.admin_http import admin_get
from tests.support.ads_client import AdsClient, node, until
from tests.support.resources import eds_cluster, endpoints, snapshot, stand_in
from xds_server.app import App
from xds_server.resources import Built, ProxySnapshot, TypeUrl
from xds_server.settings import Settings
from xds_server.xds.admission import StreamAdmission
from xds_server.xds.services import StreamSettings

CDS = TypeUrl.CLUSTER.value
EDS = TypeUrl.ENDPOINT.value


def counter(app: App, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


async def started(snap: ProxySnapshot | None = None, sources: list[Any] | None = None, **settings: Any) -> App:
    snap = snap or snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1)))
    app = App(Settings(**{"xds_host": "127.0.0.1", "xds_port": 0, "admin_port": 0, "drain_seconds": 0, **settings}),
              sources=sources or [], generate=stand_in(lambda proxy: snap))
    await app.start()
    return app


@pytest.fixture
async def apps() -> AsyncIterator[list[App]]:
    made: list[App] = []
    yield made
    for app in made:
        await app.stop(0)


# ------------------------------------------------------------------ the token bucket
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_burst_then_rate_with_bounded_waits() -> None:
    clock = FakeClock()
    bucket = StreamAdmission(rate=10, burst=3, max_wait=0.25, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert bucket.reserve() == pytest.approx(0.1)  # reserved: the next token, in 0.1 s
    assert bucket.reserve() == pytest.approx(0.2)
    assert bucket.reserve() is None  # 0.3 s > max_wait: refused, nothing taken
    assert bucket.reserve() is None
    clock.now += 0.2  # both reservations are due now
    assert bucket.reserve() == pytest.approx(0.1)
    clock.now += 10  # refills up to the burst, no more
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]


def test_zero_rate_is_unlimited() -> None:
    bucket = StreamAdmission(rate=0, burst=1)
    assert all(bucket.reserve() == 0.0 for _ in range(10_000))


# ------------------------------------------------------------------ over the wire
# A grpc Python client still writing when the server ends the stream (a refusal comes before the
# first request is read) can read INTERNAL "Internal error from Core" instead of the status.
LOST = "status lost by the client"


async def open_streams(app: App, n: int, delta: bool = False) -> list[Any]:
    """Open n streams at once; each ends up with its first response or its status code."""
    clients = [AdsClient(f"127.0.0.1:{app.xds_port}", delta=delta) for _ in range(n)]

    async def one(i: int, c: AdsClient) -> Any:
        c.send(node=node(f"sidecar~10.0.0.{i}~p{i}.default~default.svc.cluster.local"), type_url=CDS)
        try:
            return await c.recv()
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.INTERNAL and e.details() == "Internal error from Core":
                return LOST
            return e.code()

    try:
        return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(clients))))
    finally:
        await asyncio.gather(*(c.close() for c in clients))


async def test_new_streams_beyond_the_rate_are_refused_with_resource_exhausted(apps: list[App]) -> None:
    app = await started(max_new_streams_per_second=2, new_stream_burst=3, max_admission_wait=0.2)
    apps.append(app)
    results = await open_streams(app, 10)
    refused = [r for r in results if r in (grpc.StatusCode.RESOURCE_EXHAUSTED, LOST)]
    served = [r for r in results if not isinstance(r, grpc.StatusCode | str)]
    assert len(served) == 3 and len(refused) == 7, results
    assert counter(app, "xds_server_stream_refusals_total", code="RESOURCE_EXHAUSTED") == 7
    await asyncio.sleep(0.6)  # a token is back: the next stream (Envoy's retry) is served
    [again] = await open_streams(app, 1)
    assert not isinstance(again, grpc.StatusCode | str)


async def test_a_short_burst_waits_for_its_turn_instead_of_being_refused(apps: list[App]) -> None:
    app = await started(max_new_streams_per_second=40, new_stream_burst=2, max_admission_wait=1.0)
    apps.append(app)
    start = time.monotonic()
    results = await open_streams(app, 12)
    assert all(not isinstance(r, grpc.StatusCode | str) for r in results), results
    assert time.monotonic() - start >= 0.2  # 10 streams waited for tokens at 40/s
    assert counter(app, "xds_server_stream_refusals_total", code="RESOURCE_EXHAUSTED") == 0


class GatedSource:
    """A source that has not synced until the test says so."""

    name = "gated"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def run(self, sink: Any, stop: asyncio.Event) -> None:
        await self.release.wait()
        sink.mark_synced(self.name)
        await stop.wait()


async def test_streams_are_refused_with_unavailable_until_the_sources_have_synced(apps: list[App]) -> None:
    source = GatedSource()
    app = await started(sources=[source])
    apps.append(app)
    for delta in (False, True):
        assert await open_streams(app, 1, delta) in ([grpc.StatusCode.UNAVAILABLE], [LOST])
    assert counter(app, "xds_server_stream_refusals_total", code="UNAVAILABLE") == 2
    code, _ = await admin_get(app.admin_port, "/readyz")
    assert code == 503
    source.release.set()
    await until(app.ready, what="ready")
    [resp] = await open_streams(app, 1)
    assert [r.type_url for r in resp.resources] == [CDS]  # the full config at once, never a partial one


async def test_a_stream_that_never_sends_its_first_request_is_refused(apps: list[App]) -> None:
    app = await started()
    app.services.settings = StreamSettings(first_request_timeout=0.3)
    apps.append(app)
    silent = AdsClient(f"127.0.0.1:{app.xds_port}")  # opens the stream, sends nothing
    try:
        assert await silent.status(timeout=5) == grpc.StatusCode.DEADLINE_EXCEEDED
        assert counter(app, "xds_server_stream_refusals_total", code="DEADLINE_EXCEEDED") == 1
    finally:
        await silent.close()


async def test_receive_limit_fits_a_60kb_node_and_a_big_delta_subscription(apps: list[App]) -> None:
    app = await started()
    apps.append(app)
    client = AdsClient(f"127.0.0.1:{app.xds_port}", delta=True, options=(
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)))
    try:
        big_node = node("sidecar~10.0.0.1~big-1.default~default.svc.cluster.local",
                        **{f"KEY_{i}": "v" * 100 for i in range(600)})  # ~65 kB, like a real Envoy node
        assert big_node.ByteSize() > 60_000
        client.send(node=big_node, type_url=CDS)
        await client.recv()
        names = [f"outbound|8080||service-{i:06d}.namespace-{i % 50:02d}.svc.cluster.local" for i in range(100_000)]
        client.send(type_url=EDS, resource_names_subscribe=names)  # ~6 MB: over gRPC's 4 MiB default
        resp = await client.recv(timeout=15)
        assert resp.type_url == EDS and len(resp.removed_resources) == len(names)  # they do not exist: said once
        assert counter(app, "pilot_xds_recv_max") > 4 * 1024 * 1024
    finally:
        await client.close()


async def test_a_request_over_the_receive_limit_is_refused_and_others_are_unaffected(apps: list[App]) -> None:
    app = await started(max_receive_bytes=256 * 1024)
    apps.append(app)
    bystander, big = AdsClient(f"127.0.0.1:{app.xds_port}"), AdsClient(f"127.0.0.1:{app.xds_port}")
    try:
        bystander.send(node=node("sidecar~10.0.0.2~ok-1.default~default.svc.cluster.local"), type_url=CDS)
        await bystander.recv()
        big.send(node=node("sidecar~10.0.0.3~big-1.default~default.svc.cluster.local"), type_url=CDS,
                 resource_names=[f"name-{i:08d}" for i in range(30_000)])
        assert await big.status() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(app.services.connections) == 1
    finally:
        await big.close()
        await bystander.close()


async def test_keepalive_goaways_a_ping_flood_but_keeps_a_well_behaved_client(apps: list[App]) -> None:
    # (gRPC C-core clients never ping more than once a second, so the "flood" is 1/s against a 2 s minimum.)
    app = await started(keepalive_interval=60, keepalive_min_client_ping=2.0)
    apps.append(app)
    target = f"127.0.0.1:{app.xds_port}"
    common = (("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0))
    flood = AdsClient(target, options=(("grpc.keepalive_time_ms", 100), *common))
    polite = AdsClient(target, options=(("grpc.keepalive_time_ms", 2500), *common))
    try:
        for i, c in enumerate((flood, polite)):
            c.send(node=node(f"sidecar~10.0.0.{i}~p{i}.default~default.svc.cluster.local"), type_url=CDS)
            await c.recv()
        [polite_conn] = [c for c in app.services.connections.values() if c.proxy.pod_name == "p1"]
        started_at = time.monotonic()
        code = await flood.status(timeout=10)
        assert code == grpc.StatusCode.UNAVAILABLE  # GOAWAY too_many_pings after 2 strikes
        await asyncio.sleep(max(0.0, 5.5 - (time.monotonic() - started_at)))  # the polite one pinged twice
        assert polite_conn.id in app.services.connections  # same stream, never kicked
        await polite.expect_none()
    finally:
        await flood.close()
        await polite.close()


# ------------------------------------------------------------------ slow consumer
def big_cluster(name: str, version: int, size: int = 20_000) -> Built:
    c = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
    c.connect_timeout.seconds = 1
    c.alt_stat_name = f"v{version}-" + "x" * size
    return Built.of(TypeUrl.CLUSTER, name, c)


def big_snapshot(version: int) -> ProxySnapshot:
    return snapshot(*(big_cluster(f"c{i}", version) for i in range(50)))  # ~1 MB of CDS


async def test_a_stream_that_stops_reading_never_delays_the_others(apps: list[App],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    current = {"snap": big_snapshot(0)}
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=0, drain_seconds=0, send_timeout=2.0),
              sources=[], generate=stand_in(lambda proxy: current["snap"]))
    apps.append(app)
    await app.start()
    target = f"127.0.0.1:{app.xds_port}"

    # The slow one: sends its request, reads nothing, ever.
    channel = grpc.aio.insecure_channel(target)
    from envoy.service.discovery.v3 import discovery_pb2

    async def requests() -> AsyncIterator[Any]:
        yield discovery_pb2.DiscoveryRequest(node=node("sidecar~10.0.0.99~slow-1.default~default.svc.cluster.local"),
                                             type_url=CDS)
        await asyncio.sleep(3600)

    slow_call = channel.stream_stream(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
        request_serializer=lambda m: m.SerializeToString(), response_deserializer=lambda b: b)(requests())
    fast = [AdsClient(target, options=(("grpc.max_receive_message_length", -1),)) for _ in range(4)]
    latest = [0] * len(fast)
    try:
        await until(lambda: len(app.services.connections) == 1, what="the slow stream")
        [slow_id] = list(app.services.connections)

        async def follow(i: int, c: AdsClient) -> None:
            c.send(node=node(f"sidecar~10.0.1.{i}~fast-{i}.default~default.svc.cluster.local"), type_url=CDS)
            while True:
                resp = await c.recv(timeout=30)
                c.send(type_url=CDS, version_info=resp.version_info, response_nonce=resp.nonce)
                latest[i] = int(cluster_pb2.Cluster.FromString(resp.resources[0].value).alt_stat_name.split("-")[0][1:])

        followers = [asyncio.create_task(follow(i, c)) for i, c in enumerate(fast)]
        await until(lambda: all(v == 0 for v in latest) and len(app.services.connections) == 5, what="fast streams")
        delays = []
        for version in range(1, 16):  # ~15 MB towards the slow reader: its writes block after a few
            current["snap"] = big_snapshot(version)
            pushed = time.monotonic()
            await app.planner.push(frozenset())
            await until(lambda v=version: all(x == v for x in latest), timeout=5, what=f"version {version}")
            delays.append(time.monotonic() - pushed)
        assert max(delays) < 1.5, delays  # never waits for the slow stream's blocked write
        # The slow stream is closed once its write has been blocked for send_timeout.
        await until(lambda: slow_id not in app.services.connections, timeout=10, what="the slow stream closed")
        assert counter(app, "pilot_xds_write_timeout_total") == 1
        assert counter(app, "xds_server_stream_errors_total", code="DEADLINE_EXCEEDED") == 1
        assert len(app.services.connections) == 4
        for task in followers:
            assert not task.done(), task
            task.cancel()
        await asyncio.sleep(2.5)  # the slow stream's status cannot be sent: its handler ends quietly
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
        assert not [t for t in asyncio.all_tasks() if slow_id in t.get_name()]
    finally:
        slow_call.cancel()
        await channel.close()
        await asyncio.gather(*(c.close() for c in fast))


def test_admission_flags_reach_the_settings_and_bad_values_are_refused() -> None:
    from xds_server.cli import build_parser
    from xds_server.commands.serve import check, settings_from_args

    def settings(*flags: str) -> Settings:
        return settings_from_args(build_parser().parse_args(["serve", "--config-dir", ".", *flags]))

    default = settings()
    assert (default.max_new_streams_per_second, default.new_stream_burst, default.max_admission_wait) == (200, 400, 10)
    s = settings("--max-new-streams-per-second", "5", "--new-stream-burst", "7", "--max-admission-wait", "0.5")
    assert (s.max_new_streams_per_second, s.new_stream_burst, s.max_admission_wait) == (5, 7, 0.5)
    assert check(s) is None
    assert "--max-admission-wait" in (check(settings("--max-admission-wait", "-1")) or "")
