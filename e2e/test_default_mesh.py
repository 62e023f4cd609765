"""No Sidecar object anywhere: every sidecar can reach every service, by any of its names.

Pods: `a` (client, captured sidecar), `b` (app=b behind Service b:8080, captured sidecar).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from e2e.harness import Envoy, Mesh, Pod, Service

B_CLUSTER = "outbound|8080||b.default.svc.cluster.local"


@dataclass
class World:
    mesh: Mesh
    a: Pod
    b: Pod
    svc: Service
    a_envoy: Envoy
    b_envoy: Envoy


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    b = xds_mesh.add_pod("b", labels={"app": "b"})
    b.serve_http(8080)
    svc = xds_mesh.service("b", ports=[8080])
    a = xds_mesh.add_pod("a", labels={"app": "a"})
    a.serve_http(8080)
    b_envoy = xds_mesh.inject(b)
    a_envoy = xds_mesh.inject(a)
    a_envoy.wait_endpoints(B_CLUSTER, {f"{b.ip}:8080"})
    b_envoy.wait_listener("virtualInbound")
    return World(xds_mesh, a, b, svc, a_envoy, b_envoy)


@pytest.mark.parametrize("name", ["fqdn", "namespace-qualified", "short", "vip"])
def test_service_reachable_by_every_name(world: World, name: str) -> None:
    """Sidecar reference: "By default, Istio will program all sidecar proxies in the mesh with the
    necessary configuration required to reach every workload instance in the mesh, as well as
    accept traffic on all the ports associated with the workload."

    The app in `a` calls Service b; its sidecar routes the request (HTTP route, x-envoy headers)
    to pod b, whose sidecar accepts it on 15006 and hands it to the app from 127.0.0.6.
    """
    host = {"fqdn": world.svc.fqdn, "namespace-qualified": "b.default", "short": "b",
            "vip": world.svc.vip}[name]
    stat = world.a_envoy.cluster_stat_name(B_CLUSTER, "upstream_rq_total")
    before = world.a_envoy.stat(stat)
    r = world.a.http(f"http://{host}:8080/{name}")
    assert r.status == 200, r
    seen = r.json()
    assert (seen["pod"], seen["path"], seen["host"]) == ("b", f"/{name}", f"{host}:8080")
    assert "x-envoy-attempt-count" in seen["headers"]  # a's outbound HTTP route, not a raw passthrough
    assert seen["peer"] == "127.0.0.6"  # delivered by b's inbound sidecar
    world.a_envoy.wait_stat(stat, before + 1)


def test_inbound_accepts_every_service_port(world: World) -> None:
    """Sidecar reference: "... as well as accept traffic on all the ports associated with the
    workload." A plain (uncaptured) client reaching pod b's IP lands on b's inbound cluster."""
    client = world.mesh.add_pod("plain")
    try:
        stat = world.b_envoy.cluster_stat_name("inbound|8080||", "upstream_rq_total")
        before = world.b_envoy.stat(stat)
        r = client.http(f"http://{world.b.ip}:8080/direct")
        assert r.served_by == "b", r
        assert r.json()["peer"] == "127.0.0.6"
        world.b_envoy.wait_stat(stat, before + 1)
    finally:
        world.mesh.remove_pod(client)


def test_no_update_was_rejected(world: World) -> None:
    """Every resource the server sent was accepted by the real Envoy (no NACK)."""
    assert world.a_envoy.rejected_updates() == {}
    assert world.b_envoy.rejected_updates() == {}
