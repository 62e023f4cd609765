"""A DestinationRule's subsets and policy reach the importing proxies' CDS and EDS, its removal
removes the subset clusters, and nothing reaches a proxy that does not import the host (real
translator, real gRPC, delta clients)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2

from tests.integration.test_incremental_push import app, load, settle  # noqa: F401 - the fixture
from tests.support.ads_client import AdsClient
from xds_server.app import App
from xds_server.config import Kind, ObjectRef
from xds_server.resources import TypeUrl

RULE = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: a}
spec: {host: web, subsets: [{name: v1, labels: {version: v1}}], trafficPolicy: {tls: {mode: SIMPLE}}}
"""
WEB = "outbound|80||web.a.svc.cluster.local"
WEB_V1 = "outbound|80|v1|web.a.svc.cluster.local"


async def test_a_destination_rule_adds_and_removes_subset_clusters_for_importers_only(app: App) -> None:  # noqa: F811
    target = f"127.0.0.1:{app.xds_port}"
    importer, other = AdsClient(target, delta=True), AdsClient(target, delta=True)
    try:
        await settle(importer, "a")
        await settle(other, "b")  # its Sidecar imports only ./*: web is not in its scope
        load(app, RULE)
        resp = await importer.recv()
        assert resp.type_url == TypeUrl.CLUSTER
        assert sorted(r.name for r in resp.resources) == sorted([WEB, WEB_V1])
        clusters = {r.name: cluster_pb2.Cluster.FromString(r.resource.value) for r in resp.resources}
        assert clusters[WEB].transport_socket.name == "envoy.transport_sockets.tls"
        assert clusters[WEB_V1].eds_cluster_config.service_name == WEB_V1
        importer.send(type_url=TypeUrl.CLUSTER, response_nonce=resp.nonce)
        importer.send(type_url=TypeUrl.ENDPOINT, resource_names_subscribe=[WEB_V1])
        # The updated default cluster's assignment is sent again (Envoy waits for it before using
        # the new cluster), and the new subset's once subscribed, in whichever order.
        assignments: dict[str, endpoint_pb2.ClusterLoadAssignment] = {}
        while len(assignments) < 2:
            eds = await importer.recv()
            assert eds.type_url == TypeUrl.ENDPOINT
            for r in eds.resources:
                assignments[r.name] = endpoint_pb2.ClusterLoadAssignment.FromString(r.resource.value)
            importer.send(type_url=TypeUrl.ENDPOINT, response_nonce=eds.nonce)
        assert sorted(assignments) == sorted([WEB, WEB_V1])
        assert not assignments[WEB_V1].endpoints  # web-1 has no version label
        assert len(assignments[WEB].endpoints[0].lb_endpoints) == 1
        await importer.expect_none()
        await other.expect_none()

        app.store.delete("test", ObjectRef(Kind.DESTINATION_RULE, "a", "web"))
        resp = await importer.recv()
        assert resp.type_url == TypeUrl.CLUSTER
        assert [r.name for r in resp.resources] == [WEB] and list(resp.removed_resources) == [WEB_V1]
        assert not cluster_pb2.Cluster.FromString(resp.resources[0].resource.value).HasField("transport_socket")
        importer.send(type_url=TypeUrl.CLUSTER, response_nonce=resp.nonce)
        await other.expect_none()
    finally:
        await importer.close()
        await other.close()
