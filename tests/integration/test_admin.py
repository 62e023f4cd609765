"""Admin endpoints (/healthz, /readyz, /metrics, /debug/*) against a live App with a raw ADS client.

The real-Envoy versions of the NACK, config_dump and CSDS checks are in tests/envoy/test_ops.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging

import grpc
import pytest

from tests.conftest import World
from tests.support.admin_http import admin_get, admin_json, metric, value
from tests.support.ads_client import AdsClient, node, until
from tests.support.resources import eds_cluster, endpoints, http_listener, route, snapshot, stand_in
from xds_server.admin.debug import redact
from xds_server.app import App
from xds_server.config.parse import parse
from xds_server.config.refs import Problem
from xds_server.logs import JsonFormatter
from xds_server.resources import TypeUrl
from xds_server.settings import Settings

CDS, EDS, LDS, RDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE
NODE_ID = "sidecar~10.0.0.7~web-1.default~default.svc.cluster.local"
NODE = node(NODE_ID, NAMESPACE="default", APP_VERSION="v1")


def world_ab() -> object:
    return snapshot(eds_cluster("a"), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                    endpoints("b", ("127.0.0.1", 2)), http_listener("l1", 10001, "r1"), route("r1", "a"))


def admin_port(world: World) -> int:
    assert world.app is not None
    return world.app.admin_port


@pytest.fixture
async def sotw(target: str):
    c = AdsClient(target)
    yield c
    await c.close()


async def cds_acked(world: World, c: AdsClient) -> object:
    """Connect, get CDS, ACK it; returns the response."""
    c.send(node=NODE, type_url=CDS)
    resp = await c.recv()
    c.send(type_url=CDS, version_info=resp.version_info, response_nonce=resp.nonce)
    assert world.app is not None
    await until(lambda: _state(world, "cds") == "SYNCED", what="CDS SYNCED")
    return resp


def _state(world: World, short: str) -> str:
    assert world.app is not None
    conns = list(world.app.services.connections.values())
    if not conns:
        return ""
    from xds_server.admin.debug import syncz

    return syncz(conns)["proxies"][0]["types"][short]["state"]


# ---------------------------------------------------------------- health


class SlowSource:
    """A source that syncs when the test says so."""

    name = "slow"

    def __init__(self) -> None:
        self.go = asyncio.Event()

    async def run(self, store, stop: asyncio.Event) -> None:
        await self.go.wait()
        store.mark_synced(self.name)
        await stop.wait()


async def test_readyz_is_503_until_sources_sync_and_streams_are_refused_meanwhile() -> None:
    source = SlowSource()
    app = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=0), sources=[source],
              generate=stand_in(lambda proxy: snapshot()))
    await app.start()
    client = AdsClient(f"127.0.0.1:{app.xds_port}")
    try:
        assert (await admin_json(app.admin_port, "/healthz")) == {"status": "ok"}
        body = await admin_json(app.admin_port, "/readyz", status=503)
        assert body == {"ready": False, "serving": True, "sources": {"slow": False}}
        # Refused as the stream opens, before any request is read (sending one could race the abort
        # and fail on the client side with INTERNAL instead).
        assert await client.status() == grpc.StatusCode.UNAVAILABLE
        assert await metric(app.admin_port, "xds_server_stream_refusals_total", code="UNAVAILABLE") == 1
        source.go.set()
        await until(lambda: app.ready(), what="ready")
        body = await admin_json(app.admin_port, "/readyz")
        assert body == {"ready": True, "serving": True, "sources": {"slow": True}}
    finally:
        await client.close()
        await app.stop(0)


# ---------------------------------------------------------------- metrics


async def test_each_app_has_its_own_registry(world: World, sotw: AdsClient) -> None:
    other = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=0), sources=[],
                generate=stand_in(lambda proxy: snapshot()))
    await other.start()
    try:
        await cds_acked(world, sotw)
        assert await metric(admin_port(world), "pilot_xds", kind="sotw") == 1
        assert await metric(other.admin_port, "pilot_xds", kind="sotw") == 0
        _, text = await admin_get(other.admin_port, "/metrics")
        assert "process_cpu_seconds_total" in text or "python_info" in text  # default collectors
    finally:
        await other.stop(0)


async def test_nack_is_error_in_syncz_and_counted_by_type(world: World, sotw: AdsClient) -> None:
    await world.publish(world_ab())
    await cds_acked(world, sotw)
    await world.publish(snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1))))
    bad = await sotw.recv()
    sotw.send(type_url=CDS, version_info="", response_nonce=bad.nonce, error_detail="Invalid duration: -5s")
    await until(lambda: _state(world, "cds") == "ERROR", what="CDS ERROR")
    body = await admin_json(admin_port(world), "/debug/syncz")
    [proxy] = body["proxies"]
    assert proxy["proxy"] == "web-1.default" and proxy["node_id"] == NODE_ID and proxy["kind"] == "sotw"
    cds = proxy["types"]["cds"]
    assert cds["state"] == "ERROR"
    assert cds["last_nack"]["error"] == "Invalid duration: -5s"
    assert cds["last_nack"]["nonce"] == bad.nonce and cds["last_nack"]["version"] == bad.version_info
    assert cds["last_nack"]["at"].endswith("Z")
    assert cds["sent"]["nonce"] == bad.nonce and cds["acked"]["nonce"] != bad.nonce
    assert proxy["types"]["lds"] == {"type_url": LDS.value, "subscribed": False, "state": "NOT_SENT", "sent": None,
                                     "acked": None, "last_nack": None, "responses": 0, "acks": 0, "nacks": 0}
    assert await metric(admin_port(world), "pilot_total_xds_rejects_total", type="cds") == 1
    assert await metric(admin_port(world), "pilot_total_xds_rejects_total", type="eds") == 0
    # ?proxy= narrows it; an unknown proxy is a 404 naming it
    assert len((await admin_json(admin_port(world), "/debug/syncz?proxy=web-1.default"))["proxies"]) == 1
    missing = await admin_json(admin_port(world), "/debug/syncz?proxy=nope.default", status=404)
    assert "nope.default" in missing["error"]


async def test_stale_nonce_unknown_type_recv_max_and_pushes(world: World, sotw: AdsClient) -> None:
    await world.publish(world_ab())
    resp = await cds_acked(world, sotw)
    sotw.send(type_url=CDS, version_info=resp.version_info, response_nonce="no-such-nonce")
    sotw.send(type_url="type.googleapis.com/envoy.service.runtime.v3.Runtime")
    port = admin_port(world)
    await until(lambda: world.app.metrics.expired_nonce.labels("cds")._value.get() == 1, what="stale nonce")
    _, text = await admin_get(port, "/metrics")
    assert value(text, "pilot_xds_expired_nonce_total", type="cds") == 1
    await until(lambda: "Runtime" in str(world.app.metrics.unknown_types.collect()), what="unknown type")
    _, text = await admin_get(port, "/metrics")
    assert value(text, "xds_server_xds_unknown_type_requests_total",
                 type_url="type.googleapis.com/envoy.service.runtime.v3.Runtime") == 1
    assert value(text, "pilot_xds_pushes_total", type="cds") == 1
    assert value(text, "pilot_xds_config_size_bytes_count", type="cds") == 1
    assert value(text, "pilot_xds_send_time_count") == 1
    assert value(text, "pilot_xds_recv_max") > 100  # the first request carries the node


async def test_convergence_queue_and_push_time_are_observed_at_ack_of_a_push(world: World, sotw: AdsClient) -> None:
    port = admin_port(world)
    await world.publish(world_ab())
    await cds_acked(world, sotw)
    assert await metric(port, "pilot_proxy_convergence_time_count") == 0  # a first connect is not a push
    await world.publish(snapshot(eds_cluster("a"), endpoints("a", ("127.0.0.1", 1))))
    pushed = await sotw.recv()
    assert await metric(port, "pilot_proxy_queue_time_count") == 1
    assert await metric(port, "pilot_xds_push_time_count", type="cds") == 1
    assert await metric(port, "pilot_proxy_convergence_time_count") == 0  # not ACKed yet
    sotw.send(type_url=CDS, version_info=pushed.version_info, response_nonce=pushed.nonce)
    await until(lambda: _state(world, "cds") == "SYNCED", what="ACK")
    assert await metric(port, "pilot_proxy_convergence_time_count") == 1
    assert await metric(port, "pilot_debounce_time_count") >= 1
    assert await metric(port, "pilot_pushcontext_init_seconds_count") >= 1


async def test_inbound_updates_and_config_rejects_follow_the_store(world: World) -> None:
    app = world.app
    assert app is not None
    svc, problems = parse({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
                           "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}, "f.yaml:0")
    assert svc is not None and not problems
    bad, problems = parse({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                           "metadata": {"name": "broken", "namespace": "shop"},
                           "spec": {"egress": [{"hosts": ["nonsense"]}]}}, "f.yaml:1")
    assert bad is None and problems
    app.store.replace("f.yaml", [svc])
    app.store.report("f.yaml", problems)
    app.store.report("f.yaml", problems)  # re-reported unchanged (a rescan): not a new rejection
    app.store.replace("f.yaml", [])
    port = app.admin_port
    _, text = await admin_get(port, "/metrics")
    assert value(text, "pilot_inbound_updates_total", kind="Service", event="add") == 1
    assert value(text, "pilot_inbound_updates_total", kind="Service", event="delete") == 1
    assert value(text, "xds_server_config_rejects_total", kind="Sidecar") == 1
    assert value(text, "xds_server_config_rejected", kind="Sidecar") == 1
    app.store.replace("f.yaml", [svc])
    body = await admin_json(port, "/debug/configz")
    assert body["counts"] == {"Service": 1}
    assert body["objects"] == [{"kind": "Service", "namespace": "shop", "name": "web", "origin": "f.yaml"}]
    [rejected] = [r for r in body["rejected"] if r["severity"] == "error"]
    assert rejected["kind"] == "Sidecar" and rejected["namespace"] == "shop" and rejected["name"] == "broken"
    assert rejected["origin"] == "f.yaml" and rejected["where"] == "f.yaml:1"
    assert rejected["message"].startswith("spec.egress[0].hosts")
    app.store.report("f.yaml", [])
    assert await metric(port, "xds_server_config_rejected", kind="Sidecar") == 0


# ---------------------------------------------------------------- debug views


async def test_config_dump_is_the_proxys_snapshot_in_envoy_shape(world: World, sotw: AdsClient) -> None:
    await world.publish(world_ab())
    resp = await cds_acked(world, sotw)
    port = admin_port(world)
    assert "proxy=" in (await admin_json(port, "/debug/config_dump", status=400))["error"]
    assert "not connected" in (await admin_json(port, "/debug/config_dump?proxy=x.y", status=404))["error"]
    assert "unknown sds" in (await admin_json(port, "/debug/config_dump?proxy=web-1.default&types=sds",
                                              status=400))["error"]
    dump = await admin_json(port, "/debug/config_dump?proxy=web-1.default")
    types = [c["@type"].rsplit(".", 1)[-1] for c in dump["configs"]]
    assert types == ["ClustersConfigDump", "EndpointsConfigDump", "ListenersConfigDump", "RoutesConfigDump"]
    clusters, eps, listeners, routes = dump["configs"]
    assert [c["cluster"]["name"] for c in clusters["dynamic_active_clusters"]] == ["a", "b"]
    assert clusters["dynamic_active_clusters"][0]["cluster"]["@type"] == CDS.value
    assert clusters["dynamic_active_clusters"][0]["cluster"]["connect_timeout"] == "1s"
    versions = {c["cluster"]["name"]: c["version_info"] for c in clusters["dynamic_active_clusters"]}
    assert versions == {n: b.version for n, b in world.default.get(CDS).items()}
    assert all("last_updated" in c for c in clusters["dynamic_active_clusters"])  # sent at this version
    assert [e["endpoint_config"]["cluster_name"] for e in eps["dynamic_endpoint_configs"]] == ["a", "b"]
    assert not any("last_updated" in e for e in eps["dynamic_endpoint_configs"])  # EDS never requested
    assert [x["name"] for x in listeners["dynamic_listeners"]] == ["l1"]
    assert listeners["dynamic_listeners"][0]["active_state"]["listener"]["address"]["socket_address"][
        "port_value"] == 10001
    assert [r["route_config"]["name"] for r in routes["dynamic_route_configs"]] == ["r1"]
    by_node = await admin_json(port, f"/debug/config_dump?proxyID={NODE_ID}&types=cds")
    assert [c["@type"].rsplit(".", 1)[-1] for c in by_node["configs"]] == ["ClustersConfigDump"]
    assert resp.version_info  # silence: the response was the connect answer


def test_redact_hides_inline_private_keys_but_keeps_file_paths() -> None:
    tls = {"tls_certificates": [{"certificate_chain": {"filename": "/c.pem"},
                                 "private_key": {"inline_string": "-----BEGIN PRIVATE KEY-----"}},
                                {"private_key": {"filename": "/k.pem"}}]}
    out = redact(tls)
    assert out["tls_certificates"][0]["private_key"] == {"inline_string": "[redacted]"}
    assert out["tls_certificates"][0]["certificate_chain"] == {"filename": "/c.pem"}
    assert out["tls_certificates"][1]["private_key"] == {"filename": "/k.pem"}


async def test_adsz_lists_connections_with_their_subscriptions(world: World, target: str) -> None:
    await world.publish(world_ab())
    sotw, delta = AdsClient(target), AdsClient(target, delta=True)
    try:
        sotw.send(node=NODE, type_url=CDS)
        await sotw.recv()
        sotw.send(type_url=EDS, resource_names=["b", "a"])
        await sotw.recv()
        delta.send(node=node("sidecar~10.0.0.8~api-1.shop~shop.svc.cluster.local"), type_url=LDS)
        await delta.recv()
        body = await admin_json(admin_port(world), "/debug/adsz")
        assert body["total"] == 2
        api, web = body["connections"]
        assert (api["proxy"], api["kind"], api["namespace"]) == ("api-1.shop", "delta", "shop")
        assert api["subscriptions"] == {"lds": {"wildcard": True, "names": []}}
        assert (web["proxy"], web["kind"], web["node_id"]) == ("web-1.default", "sotw", NODE_ID)
        assert web["subscriptions"] == {"cds": {"wildcard": True, "names": []},
                                        "eds": {"wildcard": False, "names": ["a", "b"]}}
        assert web["peer"].startswith("ipv4:127.0.0.1:") and web["connected_since"].endswith("Z")
        assert web["method"] == "StreamAggregatedResources"
        assert web["metadata"] == {"NAMESPACE": "default", "APP_VERSION": "v1"}
        only = await admin_json(admin_port(world), "/debug/adsz?proxy=api-1.shop")
        assert [c["proxy"] for c in only["connections"]] == ["api-1.shop"]
    finally:
        await sotw.close()
        await delta.close()


# ---------------------------------------------------------------- logs


async def test_nack_log_line_names_proxy_type_nonce_and_error_in_json(world: World, sotw: AdsClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("xds_server.xds")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await world.publish(world_ab())
        sotw.send(node=NODE, type_url=CDS)
        resp = await sotw.recv()
        sotw.send(type_url=CDS, response_nonce=resp.nonce, error_detail="Proto constraint validation failed")
        await until(lambda: "NACK" in stream.getvalue(), what="NACK log line")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [nack] = [x for x in lines if "NACK" in x["msg"]]
    assert nack["level"] == "warning" and nack["logger"] == "xds_server.xds"
    assert (nack["proxy"], nack["type"], nack["nonce"]) == ("web-1.default", "cds", resp.nonce)
    assert nack["error"] == "Proto constraint validation failed" and nack["node_id"] == NODE_ID
    assert "proxy=web-1.default type=cds nonce=" in nack["msg"] and nack["msg"].endswith("validation failed")
    assert any(x["msg"].startswith("xds connect ") for x in lines)


def test_json_formatter_keeps_extras_and_problems_print_kind_ns_name_field() -> None:
    problem = Problem(None, "spec.egress[0].hosts[0]: must be namespace/dnsName", "dir/a.yaml:2")
    record = logging.LogRecord("xds_server.sources.files", logging.WARNING, __file__, 1, "rejected: %s",
                               (problem,), None)
    record.origin = "dir/a.yaml"
    out = json.loads(JsonFormatter().format(record))
    assert out["msg"] == "rejected: dir/a.yaml:2: spec.egress[0].hosts[0]: must be namespace/dnsName"
    assert out["origin"] == "dir/a.yaml" and out["level"] == "warning" and out["time"].endswith("Z")
