"""Fuzzed xDS requests: malformed messages, unknown type URLs, huge name lists, nonce games, node
changes mid-stream (status codes as istiod answers them, `pilot/pkg/xds/ads.go`).

Whatever a client sends: the server does not crash, logs no error, other proxies keep being served,
and every stream it ends or refuses is counted under the code the client saw. The sans-IO machines
are fuzzed with hypothesis (fast, many cases); the wire with seeded random sequences (real gRPC).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.discovery.v3.discovery_pb2 import DeltaDiscoveryRequest, DiscoveryRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import World
from tests.support.ads_client import AdsClient, node, until
from tests.support.resources import eds_cluster, endpoints, http_listener, route, snapshot
from xds_server.admin import debug
from xds_server.resources import ProxySnapshot, TypeUrl
from xds_server.translate import proxy_from_node
from xds_server.xds.delta import DeltaMachine
from xds_server.xds.machine import StreamError
from xds_server.xds.services import ADS_SERVICE, Connection
from xds_server.xds.sotw import SotwMachine

CDS, EDS, LDS, RDS = (t.value for t in (TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE))
UNKNOWN_TYPES = ["type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                 "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "garbage", "\x00\xff", "t" * 300]
TYPES = [CDS, EDS, LDS, RDS, "", *UNKNOWN_TYPES]
SERVED_MOSTLY = [*TYPES, *[CDS, EDS, LDS, RDS] * 4]  # sequences mostly run long before an error ends them
NAMES = ["a", "b", "c", "r1", "r2", "l1", "*", "", "missing", "ü/ñ", "x" * 200]
BYSTANDER = "sidecar~10.9.9.9~bystander-1.default~default.svc.cluster.local"


def world_snapshot(version: int = 0) -> ProxySnapshot:
    return snapshot(eds_cluster("a", 1 + version % 3), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                    endpoints("b", ("127.0.0.1", 2 + version)), http_listener("l1", 15001, "r1"), route("r1", "a"))


SNAPSHOTS = [
    world_snapshot(0),
    world_snapshot(1),
    snapshot(eds_cluster("a"), endpoints("a")),
    snapshot(),
    snapshot(eds_cluster("c"), endpoints("c"), http_listener("l2", 15002, "r2"), route("r2", "c")),
]


# ------------------------------------------------------------------ the machines (hypothesis)
nonce_choice = st.sampled_from(["last", "last", "stale", "random", "empty", "future"])
sotw_step = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(SERVED_MOSTLY), st.lists(st.sampled_from(NAMES), max_size=5),
              nonce_choice, st.booleans(), st.text(max_size=8)),
    st.tuples(st.just("snapshot"), st.integers(0, len(SNAPSHOTS) - 1)),
)
delta_step = st.one_of(
    st.tuples(st.just("request"), st.sampled_from(SERVED_MOSTLY), st.lists(st.sampled_from(NAMES), max_size=4),
              st.lists(st.sampled_from(NAMES), max_size=3), nonce_choice, st.booleans(),
              st.dictionaries(st.sampled_from(NAMES), st.text(max_size=6), max_size=3)),
    st.tuples(st.just("snapshot"), st.integers(0, len(SNAPSHOTS) - 1)),
)


def _nonce(choice: str, machine: Any, type_url: str, rng_text: str) -> str:
    st_ = machine.types.get(type_url)
    last = st_.status.sent_nonce if st_ is not None else ""
    return {"last": last, "stale": str(max(0, int(last or 0) - 1)) if last else "0", "random": rng_text or "n",
            "empty": "", "future": str(int(last or 0) + 7)}[choice]


def _check_out(outs: list[Any], machine: Any, snap: ProxySnapshot, delta: bool, nonces: list[int]) -> None:
    for out in outs:
        msg = (discovery_pb2.DeltaDiscoveryResponse if delta else discovery_pb2.DiscoveryResponse).FromString(
            out.payload)
        assert msg.type_url == out.type_url and msg.nonce == out.nonce and len(msg.resources) == out.resources
        nonces.append(int(out.nonce))
        current = snap.get(TypeUrl(out.type_url))
        if delta:
            for r in msg.resources:  # only what exists now, at its current version
                assert r.name in current and current[r.name].version == r.version, r.name
        elif out.type_url in (EDS, RDS):
            sub = machine.types[TypeUrl(out.type_url)].sub
            assert len(msg.resources) <= len(sub.names | set(current)), "a named type sends only subscribed names"
    assert nonces == sorted(set(nonces)), "nonces are unique and increasing"


def _run(machine: Any, steps: list[Any], delta: bool) -> None:
    snap = SNAPSHOTS[0]
    nonces: list[int] = []
    proxy = proxy_from_node("sidecar~10.0.0.1~p-1.default~default.svc.cluster.local")
    conn = Connection("c-1", proxy, "ipv4:127.0.0.1:1", "delta" if delta else "sotw", "fuzz", machine)
    for step in steps:
        try:
            if step[0] == "snapshot":
                snap = SNAPSHOTS[step[1]]
                outs = machine.on_snapshot(snap)
            elif delta:
                _, type_url, sub, unsub, nonce, nack, initial = step
                req = DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=sub,
                                            resource_names_unsubscribe=unsub,
                                            response_nonce=_nonce(nonce, machine, type_url, ""))
                req.initial_resource_versions.update(initial)
                if nack:
                    req.error_detail.message = "rejected"
                outs = machine.on_request(req, snap)
            else:
                _, type_url, names, nonce, nack, text = step
                req = DiscoveryRequest(type_url=type_url, resource_names=names, version_info=text,
                                       response_nonce=_nonce(nonce, machine, type_url, text))
                if nack:
                    req.error_detail.message = "rejected"
                outs = machine.on_request(req, snap)
        except StreamError as e:
            assert e.code is grpc.StatusCode.INVALID_ARGUMENT and e.message
            return
        _check_out(outs, machine, snap, delta, nonces)
        # The debug views read this state whatever it is.
        debug.syncz([conn])
        debug.adsz([conn])


FUZZ = settings(max_examples=int(os.environ.get("XDS_FUZZ_EXAMPLES", 250)), deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(sotw_step, max_size=30), st.sampled_from([None, None, None, TypeUrl.CLUSTER, TypeUrl.ENDPOINT]))
def test_sotw_machine_survives_any_request_sequence(steps: list[Any], only: TypeUrl | None) -> None:
    _run(SotwMachine(only), steps, delta=False)


@FUZZ
@given(st.lists(delta_step, max_size=30), st.sampled_from([None, None, None, TypeUrl.CLUSTER, TypeUrl.ROUTE]))
def test_delta_machine_survives_any_request_sequence(steps: list[Any], only: TypeUrl | None) -> None:
    _run(DeltaMachine(only), steps, delta=True)


# ------------------------------------------------------------------ over the wire
def codes(world: World, metric: str) -> dict[str, float]:
    assert world.app is not None
    out: dict[str, float] = {}
    for family in world.app.metrics.registry.collect():
        for s in family.samples:
            if s.name == metric:
                out[s.labels["code"]] = s.value
    return out


def counted(world: World) -> dict[str, float]:
    total: dict[str, float] = {}
    for metric in ("xds_server_stream_refusals_total", "xds_server_stream_errors_total"):
        for code, v in codes(world, metric).items():
            total[code] = total.get(code, 0) + v
    return {k: v for k, v in total.items() if v}


def random_request(rng: random.Random, delta: bool, i: int, nonces: list[str]) -> Any:
    msg = DeltaDiscoveryRequest() if delta else DiscoveryRequest()
    if (i == 0 and rng.random() < 0.9) or rng.random() < 0.1:  # node first, and sometimes a new one mid-stream
        node_id = rng.choice([f"sidecar~10.1.0.{rng.randrange(250)}~f-{rng.randrange(9)}.default~default.svc."
                              "cluster.local", "router~1.2.3.4~r.default~default.svc.cluster.local", "x", "",
                              "sidecar~~~", "~" * 50, "sidecar~10.0.0.1~bad"])
        msg.node.CopyFrom(node(node_id, **rng.choice([{}, {"NAMESPACE": "ns"}, {"LABELS": "not-a-map"},
                                                      {"INSTANCE_IPS": "1.2.3.4,::1,zzz"}])))
    msg.type_url = rng.choice(TYPES)
    names = rng.sample(NAMES, rng.randrange(4))
    if rng.random() < 0.05:
        names += [f"huge-{n}" for n in range(rng.choice([1000, 50_000]))]
    nonce = rng.choice(["", rng.choice(nonces) if nonces else "", "999", "not-a-number"])
    msg.response_nonce = nonce
    if delta:
        msg.resource_names_subscribe.extend(names)
        msg.resource_names_unsubscribe.extend(rng.sample(NAMES, rng.randrange(3)))
        if rng.random() < 0.2:
            msg.initial_resource_versions.update({n: rng.choice(["", "v", "123"]) for n in rng.sample(NAMES, 3)})
    else:
        msg.resource_names.extend(names)
        msg.version_info = rng.choice(["", "v1", "\u2603"])
    if rng.random() < 0.15:
        msg.error_detail.code = rng.randrange(20)
        msg.error_detail.message = rng.choice(["bad", "x" * 5000])
    return msg


LOST = "LOST"  # a grpc Python client still writing when the server ends the stream can read
# "Internal error from Core" (INTERNAL) instead of the status: the code is lost on the client side.


def ending(e: grpc.aio.AioRpcError) -> str:
    if e.code() == grpc.StatusCode.INTERNAL and e.details() == "Internal error from Core":
        return LOST
    return e.code().name


async def fuzz_stream(target: str, rng: random.Random) -> str | None:
    """One stream of random requests; the status it ended with (None: still open when closed)."""
    delta = rng.random() < 0.5
    client = AdsClient(target, delta=delta, options=(("grpc.max_send_message_length", -1),))
    nonces: list[str] = []
    try:
        for i in range(rng.randrange(1, 8)):
            client._requests.put_nowait(random_request(rng, delta, i, nonces))
            try:
                resp = await asyncio.wait_for(client._inbox.get(), 0.05)
            except TimeoutError:
                continue
            if isinstance(resp, grpc.aio.AioRpcError):
                return ending(resp)
            if resp is None:
                return "OK"
            nonces.append(resp.nonce)
        while True:  # responses may still come; the stream either ends or stays open (None)
            try:
                item = await asyncio.wait_for(client._inbox.get(), 0.3)
            except TimeoutError:
                return None
            if item is None:
                return "OK"
            if isinstance(item, grpc.aio.AioRpcError):
                return ending(item)
    finally:
        await client.close()


async def raw_stream(target: str, rng: random.Random) -> str | None:
    """Bytes that may not be a protobuf at all: garbage, truncated requests, a valid one then garbage."""
    channel = grpc.aio.insecure_channel(target)
    method = rng.choice(["StreamAggregatedResources", "DeltaAggregatedResources"])
    valid = DiscoveryRequest(node=node("sidecar~10.2.0.1~raw-1.default~default.svc.cluster.local"),
                             type_url=CDS).SerializeToString()
    frames = rng.choice([
        [rng.randbytes(rng.randrange(1, 64))],
        [valid[: rng.randrange(1, len(valid))]],
        [valid, b"\xff\xff\xff\xff\x0f"],
        [valid, rng.randbytes(32)],
        [b"\x0a\x80"],  # a length prefix running past the end
    ])

    async def requests() -> Any:
        for f in frames:
            yield f
        await asyncio.sleep(1)

    call = channel.stream_stream(f"/{ADS_SERVICE}/{method}", request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)(requests())
    try:
        async for _ in call:
            pass
        return (await call.code()).name
    except grpc.aio.AioRpcError as e:
        return ending(e)
    finally:
        call.cancel()
        await channel.close()


async def test_fuzzed_streams_never_hurt_the_server_or_other_proxies(world: World,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    assert world.app is not None
    await world.publish(world_snapshot(0))
    target = f"127.0.0.1:{world.app.xds_port}"
    bystander = AdsClient(target)
    try:
        bystander.send(node=node(BYSTANDER), type_url=CDS)
        first = await bystander.recv()
        bystander.send(type_url=CDS, version_info=first.version_info, response_nonce=first.nonce)
        rng = random.Random(int(os.environ.get("XDS_FUZZ_SEED", "20260409")))
        seen: dict[str, int] = {}
        started = time.monotonic()
        for batch in range(8):
            streams = [fuzz_stream(target, random.Random(rng.random())) for _ in range(12)]
            streams += [raw_stream(target, random.Random(rng.random())) for _ in range(4)]
            for code in await asyncio.gather(*streams):
                if code is not None and code not in ("OK", "CANCELLED"):
                    seen[code] = seen.get(code, 0) + 1
            # Other proxies are unaffected: a push reaches the bystander at once.
            await world.publish(world_snapshot(batch + 1))
            resp = await bystander.recv(timeout=2)
            assert resp.version_info != first.version_info
            bystander.send(type_url=CDS, version_info=resp.version_info, response_nonce=resp.nonce)
            first = resp
        assert time.monotonic() - started < 30
        await until(lambda: len(world.app.services.connections) == 1, what="only the bystander left")
        print("fuzzed stream endings:", seen)
        assert seen.get("INVALID_ARGUMENT", 0) > 10, seen  # the fuzz did hit the refusals
        # Every one counted, under the code the client saw (a status lost on the client side still
        # counts once, under some code).
        server = counted(world)
        assert sum(server.values()) == sum(seen.values()), (server, seen)
        assert all(server.get(code, 0) >= n for code, n in seen.items() if code != LOST), (server, seen)
        unknown = world.app.metrics.registry.get_sample_value("xds_server_xds_unknown_type_requests_total",
                                                              {"type_url": "garbage"})
        assert unknown and unknown > 0
    finally:
        await bystander.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# ------------------------------------------------------------------ targeted cases
async def test_undecodable_requests_end_only_their_stream_with_invalid_argument(world: World) -> None:
    assert world.app is not None
    target = f"127.0.0.1:{world.app.xds_port}"
    for seed in range(5):
        assert await raw_stream(target, random.Random(seed)) in ("INVALID_ARGUMENT", LOST)
    assert counted(world) == {"INVALID_ARGUMENT": 5.0}


async def test_nonce_games_are_ignored_and_counted(world: World, target: str) -> None:
    assert world.app is not None
    await world.publish(world_snapshot(0))
    c = AdsClient(target)
    try:
        c.send(node=node(BYSTANDER), type_url=CDS)
        first = await c.recv()
        for nonce in ("999", "-1", "abc", "0"):  # never sent: ignored, no response, no state change
            c.send(type_url=CDS, version_info="bogus", response_nonce=nonce, error_detail="fake NACK")
        await c.expect_none()
        [conn] = world.app.services.connections.values()
        cds = conn.machine.statuses()[CDS]
        assert cds.nack is None and cds.acks == 0
        expired = world.app.metrics.registry.get_sample_value("pilot_xds_expired_nonce_total", {"type": "cds"})
        assert expired == 4
        c.send(type_url=CDS, version_info=first.version_info, response_nonce=first.nonce)  # the real ACK
        await c.expect_none()
        assert cds.acks == 1 and cds.state == "SYNCED"
    finally:
        await c.close()


async def test_unknown_types_keep_the_stream_and_get_nothing(world: World, target: str) -> None:
    assert world.app is not None
    await world.publish(world_snapshot(0))
    c = AdsClient(target, delta=True)
    try:
        c.send(node=node(BYSTANDER), type_url=UNKNOWN_TYPES[0], resource_names_subscribe=["x"])
        await c.expect_none()
        c.send(type_url=CDS)
        resp = await c.recv()
        assert resp.type_url == CDS and sorted(r.name for r in resp.resources) == ["a", "b"]
        assert world.app.metrics.registry.get_sample_value("xds_server_xds_unknown_type_requests_total",
                                                           {"type_url": UNKNOWN_TYPES[0]}) == 1
    finally:
        await c.close()


async def test_a_node_change_mid_stream_is_ignored(world: World, target: str) -> None:
    assert world.app is not None
    other = "sidecar~10.0.0.7~other-1.prod~prod.svc.cluster.local"
    world.per_proxy[other] = snapshot(eds_cluster("prod-only"), endpoints("prod-only"))
    await world.publish(world_snapshot(0))
    c = AdsClient(target)
    try:
        c.send(node=node(BYSTANDER), type_url=CDS)
        first = await c.recv()
        # The stream belongs to the node of its first request; a later node is not a new identity.
        c.send(node=node(other, NAMESPACE="prod"), type_url=CDS, version_info=first.version_info,
               response_nonce=first.nonce)
        c.send(node=node(other), type_url=EDS, resource_names=["a", "prod-only"])
        resp = await c.recv()
        assert resp.type_url == EDS and [x.value for x in resp.resources] and len(resp.resources) == 1
        [conn] = world.app.services.connections.values()
        assert conn.proxy.key == BYSTANDER
    finally:
        await c.close()


async def test_a_huge_name_list_is_answered_without_stalling_the_server(world: World, target: str) -> None:
    assert world.app is not None
    await world.publish(world_snapshot(0))
    bystander, huge = AdsClient(target), AdsClient(target, options=(("grpc.max_send_message_length", -1),))
    try:
        bystander.send(node=node(BYSTANDER), type_url=CDS)
        first = await bystander.recv()
        bystander.send(type_url=CDS, version_info=first.version_info, response_nonce=first.nonce)
        huge.send(node=node("sidecar~10.0.0.8~huge-1.default~default.svc.cluster.local"), type_url=EDS,
                  resource_names=["a", *(f"cluster-{i}" for i in range(200_000))])
        resp = await huge.recv(timeout=10)
        assert resp.type_url == EDS and len(resp.resources) == 1  # only the names that exist
        started = time.monotonic()
        await world.publish(world_snapshot(1))
        await bystander.recv(timeout=2)
        assert time.monotonic() - started < 1.0
    finally:
        await bystander.close()
        await huge.close()
