"""Issue 16: a VirtualService change reaches only the proxies that import its host, and sends only
the type it changes: an HTTP route change is one RouteConfiguration (RDS) for an importer, and
nothing at all for a proxy whose Sidecar does not import the host. Real translator, real gRPC,
delta clients that subscribe (CDS, EDS, LDS, then the RDS names the listeners use) and ACK like Envoy.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_pb2

from tests.integration.test_incremental_push import NEW_POD, app, load, settle  # noqa: F401 - the fixture
from tests.support.ads_client import AdsClient
from xds_server.app import App
from xds_server.config import Kind, ObjectRef
from xds_server.resources import TypeUrl

ROUTE = "80"  # web.a is HTTP on port 80: its virtual host lives in route "80"


def virtual_service(timeout: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: a}}
spec:
  hosts: [web]
  http: [{{timeout: {timeout}, route: [{{destination: {{host: web}}}}]}}]
"""


async def subscribe_routes(c: AdsClient) -> route_pb2.RouteConfiguration:
    c.send(type_url=TypeUrl.ROUTE, resource_names_subscribe=[ROUTE])
    resp = await c.recv()
    assert resp.type_url == TypeUrl.ROUTE and [r.name for r in resp.resources] == [ROUTE]
    c.send(type_url=TypeUrl.ROUTE, response_nonce=resp.nonce)
    await c.expect_none()
    return route_pb2.RouteConfiguration.FromString(resp.resources[0].resource.value)


async def route_update(c: AdsClient) -> route_pb2.RouteConfiguration:
    """The next response must be route "80" alone (no other type, no other resource); ACK it."""
    resp = await c.recv()
    assert resp.type_url == TypeUrl.ROUTE, f"sent {resp.type_url}, expected only RDS"
    assert [r.name for r in resp.resources] == [ROUTE] and not resp.removed_resources
    c.send(type_url=TypeUrl.ROUTE, response_nonce=resp.nonce)
    return route_pb2.RouteConfiguration.FromString(resp.resources[0].resource.value)


def web_timeout(config: route_pb2.RouteConfiguration) -> float | None:
    for vhost in config.virtual_hosts:
        if vhost.name == "web.a.svc.cluster.local:80":
            route = vhost.routes[0].route
            return route.timeout.ToTimedelta().total_seconds() if route.HasField("timeout") else None
    raise AssertionError("no virtual host for web.a")


async def test_http_route_change_sends_only_rds_to_importers_and_nothing_to_others(app: App) -> None:  # noqa: F811
    target = f"127.0.0.1:{app.xds_port}"
    importer, other = AdsClient(target, delta=True), AdsClient(target, delta=True)
    try:
        await settle(importer, "a")
        await subscribe_routes(importer)
        await settle(other, "b")  # its Sidecar imports only ./*: web.a is not in its scope
        load(app, virtual_service("3s"))
        assert web_timeout(await route_update(importer)) == 3.0
        await importer.expect_none()
        load(app, virtual_service("5s"))
        assert web_timeout(await route_update(importer)) == 5.0
        await importer.expect_none()
        app.store.delete("test", ObjectRef(Kind.VIRTUAL_SERVICE, "a", "web"))
        assert web_timeout(await route_update(importer)) == 0.0  # istiod's default: timeout 0s (none)
        await importer.expect_none()
        await other.expect_none()
        # Positive control for the silent one: a change it does import reaches it.
        load(app, """
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: b}
spec: {clusterIP: 10.96.0.3, selector: {app: cache}, ports: [{name: tcp, port: 6379}]}
""")
        resp = await other.recv()
        assert resp.type_url == TypeUrl.CLUSTER
    finally:
        await importer.close()
        await other.close()


TCP_ROUTE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: b}
spec:
  hosts: [db.b.svc.cluster.local]
  tcp: [{match: [{port: 5432}], route: [{destination: {host: db.b.svc.cluster.local}}]}]
"""


async def test_tcp_route_change_sends_only_lds(app: App) -> None:  # noqa: F811
    """A tcp route lives in the listener's filter chain: LDS alone changes (clusters stay)."""
    target = f"127.0.0.1:{app.xds_port}"
    clients = [AdsClient(target, delta=True), AdsClient(target, delta=True)]
    try:
        await settle(clients[0], "a")
        await subscribe_routes(clients[0])
        await settle(clients[1], "b")  # both import db.b (a: `*/*`, b: `./*`)
        load(app, TCP_ROUTE)
        for c in clients:
            resp = await c.recv()
            assert resp.type_url == TypeUrl.LISTENER, f"sent {resp.type_url}, expected only LDS"
            assert resp.resources and not resp.removed_resources
            c.send(type_url=TypeUrl.LISTENER, response_nonce=resp.nonce)
        for c in clients:
            await c.expect_none()
    finally:
        for c in clients:
            await c.close()
