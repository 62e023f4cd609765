"""CSDS (ClientStatusDiscoveryService) on the xDS port, with raw ADS clients as the proxies."""

from __future__ import annotations

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from envoy.type.matcher.v3 import node_pb2, string_pb2, struct_pb2

from tests.conftest import World
from tests.support.ads_client import AdsClient, node, until
from tests.support.resources import eds_cluster, endpoints, snapshot
from xds_server.resources import TypeUrl

CDS, EDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT
WEB = "sidecar~10.0.0.7~web-1.default~default.svc.cluster.local"
API = "sidecar~10.0.0.8~api-1.shop~shop.svc.cluster.local"
Status = csds_pb2.ConfigStatus


@pytest.fixture
async def csds(target: str):
    channel = grpc.aio.insecure_channel(target)
    yield csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
    await channel.close()


def by_name(config: csds_pb2.ClientConfig) -> dict[tuple[str, str], csds_pb2.ClientConfig.GenericXdsConfig]:
    return {(g.type_url.rsplit(".", 1)[-1], g.name): g for g in config.generic_xds_configs}


async def test_fetch_reports_each_proxys_resources_with_per_resource_status(
        world: World, target: str, csds: csds_pb2_grpc.ClientStatusDiscoveryServiceStub) -> None:
    await world.publish(snapshot(eds_cluster("a"), eds_cluster("b"), endpoints("a", ("127.0.0.1", 1)),
                                 endpoints("b", ("127.0.0.1", 2))))
    web, api = AdsClient(target), AdsClient(target, delta=True)
    try:
        web.send(node=node(WEB, NAMESPACE="default", ROLE="frontend"), type_url=CDS)
        cds = await web.recv()
        web.send(type_url=CDS, version_info=cds.version_info, response_nonce=cds.nonce)
        web.send(type_url=EDS, resource_names=["a", "b"])
        eds = await web.recv()  # sent, not ACKed: STALE
        api.send(node=node(API, NAMESPACE="shop"), type_url=CDS)
        bad = await api.recv()
        api.send(type_url=CDS, response_nonce=bad.nonce, error_detail="Invalid duration")
        assert world.app is not None
        await until(lambda: sum(c.machine.statuses()[CDS.value].nacks for c in world.app.services.connections.values()
                                if c.kind == "delta") == 1, what="NACK seen")

        resp = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest())
        assert [c.node.id for c in resp.config] == [WEB, API]  # sorted by node id
        web_cfg, api_cfg = resp.config
        assert web_cfg.node.metadata.fields["ROLE"].string_value == "frontend"
        w = by_name(web_cfg)
        assert set(w) == {("Cluster", "a"), ("Cluster", "b"), ("ClusterLoadAssignment", "a"),
                          ("ClusterLoadAssignment", "b")}
        assert w[("Cluster", "a")].config_status == Status.SYNCED
        assert w[("Cluster", "a")].client_status == config_dump_shared_pb2.ClientResourceStatus.ACKED
        assert w[("Cluster", "a")].version_info == world.default.get(CDS)["a"].version
        assert w[("ClusterLoadAssignment", "a")].config_status == Status.STALE
        cluster = cluster_pb2.Cluster()
        assert w[("Cluster", "a")].xds_config.Unpack(cluster) and cluster.name == "a"
        assert w[("Cluster", "a")].last_updated.seconds > 0
        a = by_name(api_cfg)
        assert {k: g.config_status for k, g in a.items()} == {("Cluster", "a"): Status.ERROR,
                                                             ("Cluster", "b"): Status.ERROR}
        assert a[("Cluster", "a")].error_state.details == "Invalid duration"
        assert a[("Cluster", "a")].client_status == config_dump_shared_pb2.ClientResourceStatus.NACKED
        assert eds.nonce  # the EDS response that is still unacknowledged

        # A node matcher narrows the answer; exclude_resource_contents drops the bodies.
        only_web = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest(
            node_matchers=[node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(prefix="sidecar~10.0.0.7~"))],
            exclude_resource_contents=True))
        assert [c.node.id for c in only_web.config] == [WEB]
        assert not any(g.HasField("xds_config") for g in only_web.config[0].generic_xds_configs)
    finally:
        await web.close()
        await api.close()


async def test_node_matchers_are_ored_and_metadata_matchers_apply(
        world: World, target: str, csds: csds_pb2_grpc.ClientStatusDiscoveryServiceStub) -> None:
    web, api = AdsClient(target), AdsClient(target)
    try:
        web.send(node=node(WEB, NAMESPACE="default", ROLE="frontend"), type_url=CDS)
        api.send(node=node(API, NAMESPACE="shop"), type_url=CDS)
        await web.recv()
        await api.recv()
        role = struct_pb2.StructMatcher(path=[struct_pb2.StructMatcher.PathSegment(key="ROLE")])
        role.value.string_match.exact = "frontend"
        by_meta = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest(
            node_matchers=[node_pb2.NodeMatcher(node_metadatas=[role])]))
        assert [c.node.id for c in by_meta.config] == [WEB]
        either = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest(node_matchers=[
            node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(exact=WEB)),
            node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(suffix="SHOP.SVC.CLUSTER.LOCAL", ignore_case=True)),
        ]))
        assert [c.node.id for c in either.config] == [WEB, API]
        none = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest(
            node_matchers=[node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(exact="nobody"))]))
        assert list(none.config) == []
    finally:
        await web.close()
        await api.close()


async def test_stream_client_status_answers_every_request(
        world: World, target: str, csds: csds_pb2_grpc.ClientStatusDiscoveryServiceStub) -> None:
    web = AdsClient(target)
    try:
        web.send(node=node(WEB), type_url=CDS)
        await web.recv()
        call = csds.StreamClientStatus()
        await call.write(csds_pb2.ClientStatusRequest())
        first = await call.read()
        await call.write(csds_pb2.ClientStatusRequest(
            node_matchers=[node_pb2.NodeMatcher(node_id=string_pb2.StringMatcher(exact="nobody"))]))
        second = await call.read()
        await call.done_writing()
        assert [c.node.id for c in first.config] == [WEB] and list(second.config) == []
        assert await call.code() == grpc.StatusCode.OK
    finally:
        await web.close()
