"""Issue 4: changing inputs changes only what it must.

A pod added to one service sends, in delta, exactly one ClusterLoadAssignment to the proxies
that import that service, and nothing at all to a proxy whose Sidecar does not import it.
Real translator, real gRPC, clients that subscribe and ACK like Envoy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2

from tests.support.ads_client import AdsClient, node
from xds_server.app import App
from xds_server.config.parse import parse
from xds_server.resources import TypeUrl
from xds_server.settings import Settings

CDS, EDS, LDS = TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER

MESH = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: b}
spec: {clusterIP: 10.96.0.2, selector: {app: db}, ports: [{name: tcp, port: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: a, labels: {app: web}}
status: {podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: b}
spec: {egress: [{hosts: ["./*"]}]}
"""

NEW_POD = """
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: a, labels: {app: web}}
status: {podIP: 10.0.0.2, conditions: [{type: Ready, status: "True"}]}
"""


def load(app: App, text: str) -> None:
    for doc in yaml.safe_load_all(text):
        obj, problems = parse(doc, "test")
        assert obj is not None, problems
        app.store.upsert("test", obj)


@pytest.fixture
async def app() -> AsyncIterator[App]:
    a = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=-1, debounce_quiet=0.02, drain_seconds=0),
            sources=[])
    load(a, MESH)
    await a.start()
    yield a
    await a.stop(0)


async def settle(c: AdsClient, namespace: str) -> list[str]:
    """Subscribe like Envoy (CDS, then EDS for EDS clusters, LDS) and ACK; return EDS names."""
    c.send(node=node(f"sidecar~10.1.0.1~client.{namespace}~{namespace}.svc.cluster.local", NAMESPACE=namespace),
           type_url=CDS)
    cds = await c.recv()
    eds_names = []
    for r in cds.resources:
        cluster = cluster_pb2.Cluster.FromString(r.resource.value)
        if cluster.type == cluster_pb2.Cluster.EDS:
            eds_names.append(cluster.eds_cluster_config.service_name or cluster.name)
    c.send(type_url=CDS, response_nonce=cds.nonce)
    if eds_names:
        c.send(type_url=EDS, resource_names_subscribe=eds_names)
        eds = await c.recv()
        c.send(type_url=EDS, response_nonce=eds.nonce)
    c.send(type_url=LDS)
    lds = await c.recv()
    c.send(type_url=LDS, response_nonce=lds.nonce)
    await c.expect_none()
    return sorted(eds_names)


async def test_pod_added_sends_one_cla_to_importers_and_nothing_to_others(app: App) -> None:
    target = f"127.0.0.1:{app.xds_port}"
    importer, other = AdsClient(target, delta=True), AdsClient(target, delta=True)
    try:
        assert "outbound|80||web.a.svc.cluster.local" in await settle(importer, "a")
        assert "outbound|80||web.a.svc.cluster.local" not in await settle(other, "b")
        load(app, NEW_POD)
        resp = await importer.recv()
        assert resp.type_url == EDS
        assert [r.name for r in resp.resources] == ["outbound|80||web.a.svc.cluster.local"]
        assert not resp.removed_resources
        importer.send(type_url=EDS, response_nonce=resp.nonce)
        await importer.expect_none()
        await other.expect_none()
    finally:
        await importer.close()
        await other.close()


async def test_domain_suffix_names_kubernetes_hosts() -> None:
    a = App(Settings(xds_host="127.0.0.1", xds_port=0, admin_port=-1, domain_suffix="corp.internal"), sources=[])
    load(a, MESH)
    from xds_server.translate import Memo, generate, proxy_from_node

    view = a.store.view()
    proxy = proxy_from_node("sidecar~10.1.0.1~c.a~a.svc.corp.internal", {"NAMESPACE": "a"})
    snap = generate(view, proxy, Memo()).snapshot
    assert "outbound|80||web.a.svc.corp.internal" in snap.get(CDS)
    assert not [n for n in snap.get(CDS) if "cluster.local" in n]
