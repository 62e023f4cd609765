"""VirtualService and DestinationRule are held but not translated yet: adding, changing or
deleting them sends nothing to connected proxies (real translator, real gRPC, delta clients)."""

from __future__ import annotations

from tests.integration.test_incremental_push import NEW_POD, app, load, settle  # noqa: F401 - the fixture
from tests.support.ads_client import AdsClient
from xds_server.app import App
from xds_server.config import Kind, ObjectRef
from xds_server.resources import TypeUrl

TRAFFIC = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: a}
spec:
  hosts: [web]
  http:
  - timeout: 3s
    route: [{destination: {host: web, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: a}
spec: {host: web, subsets: [{name: v1, labels: {version: v1}}], trafficPolicy: {tls: {mode: SIMPLE}}}
"""


async def test_traffic_management_objects_change_nothing_a_proxy_receives(app: App) -> None:  # noqa: F811
    target = f"127.0.0.1:{app.xds_port}"
    importer = AdsClient(target, delta=True)
    try:
        await settle(importer, "a")
        load(app, TRAFFIC)
        assert {ObjectRef(Kind.VIRTUAL_SERVICE, "a", "web"), ObjectRef(Kind.DESTINATION_RULE, "a", "web")} <= {
            obj.ref for _, obj in app.store.objects()}
        app.store.delete("test", ObjectRef(Kind.VIRTUAL_SERVICE, "a", "web"))
        # Positive control: a pod change right after is pushed, and it is the only thing pushed.
        load(app, NEW_POD)
        resp = await importer.recv()
        assert resp.type_url == TypeUrl.ENDPOINT
        assert [r.name for r in resp.resources] == ["outbound|80||web.a.svc.cluster.local"]
        importer.send(type_url=TypeUrl.ENDPOINT, response_nonce=resp.nonce)
        await importer.expect_none()
    finally:
        await importer.close()
