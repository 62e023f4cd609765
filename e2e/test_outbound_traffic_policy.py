"""outboundTrafficPolicy at mesh level: ALLOW_ANY (default) passes unknown hosts through,
REGISTRY_ONLY blocks them, and a ServiceEntry re-admits one host.

Pods: `a` (client, captured sidecar); `b` (Service b:8080, no sidecar: gives port 8080 an HTTP
listener); `ext` (no sidecar, not in the registry; `ext.e2e.example` in DNS), HTTP 8080, TCP echo 9000.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e.harness import Envoy, Mesh, Pod, views, wait_for

EXT_HOST = "ext.e2e.example"
MESH_CONFIGMAP = "mesh-configmap"


@dataclass
class World:
    mesh: Mesh
    a: Pod
    b: Pod
    ext: Pod
    envoy: Envoy


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    b = xds_mesh.add_pod("b", labels={"app": "b"})
    b.serve_http(8080)
    xds_mesh.register(b)
    xds_mesh.service("b", ports=[8080])
    ext = xds_mesh.add_pod("ext")
    ext.serve_http(8080)
    ext.serve_tcp_echo(9000)
    xds_mesh.dns.set(EXT_HOST, ext.ip)
    a = xds_mesh.add_pod("a", labels={"app": "a"})
    envoy = xds_mesh.inject(a)
    envoy.wait_endpoints("outbound|8080||b.default.svc.cluster.local", {f"{b.ip}:8080"})
    return World(xds_mesh, a, b, ext, envoy)


def catchall_cluster(envoy: Envoy) -> str:
    chains = views.chain_clusters(envoy.listeners()["virtualOutbound"])
    return next(cluster for name, cluster in chains.items() if "catchall" in name)


def set_mode(world: World, mode: str | None) -> None:
    """Switch the mesh-wide mode via the `istio` ConfigMap and wait until a's sidecar has it."""
    if mode is None:
        world.mesh.delete(MESH_CONFIGMAP)
    else:
        world.mesh.apply(MESH_CONFIGMAP, {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": f"outboundTrafficPolicy:\n  mode: {mode}\n"},
        })
    want = "BlackHoleCluster" if mode == "REGISTRY_ONLY" else "PassthroughCluster"
    wait_for(lambda: catchall_cluster(world.envoy) == want, timeout=15,
             what=f"virtualOutbound catch-all -> {want}")


@pytest.fixture
def registry_only(world: World) -> Iterator[World]:
    set_mode(world, "REGISTRY_ONLY")
    try:
        yield world
    finally:
        set_mode(world, None)


def test_allow_any_passes_unknown_hosts_through(world: World) -> None:
    """Egress task: "By default, Istio configures the Envoy proxy to pass through requests for
    unknown services." Sidecar reference: "In ALLOW_ANY mode, any traffic to unknown destinations
    will be allowed." Both an unknown HTTP host on a mesh HTTP port and raw TCP to an unknown
    port reach `ext`, via PassthroughCluster."""
    env = world.envoy
    cx = env.cluster_stat_name("PassthroughCluster", "upstream_cx_total")
    before = env.stat(cx)
    r = world.a.http(f"http://{EXT_HOST}:8080/any")
    assert r.served_by == "ext", r
    assert world.a.tcp(EXT_HOST, 9000, "hello").reply == "ext hello"
    env.wait_stat(cx, before + 2)


def test_registry_only_blocks_unknown_hosts(registry_only: World) -> None:
    """Sidecar reference: "In REGISTRY_ONLY mode, unknown outbound traffic will be dropped."
    Egress task: "If the option is set to REGISTRY_ONLY, then the Istio proxy blocks any host
    without an HTTP service or service entry defined within the mesh." HTTP to an unknown host
    gets 502 from the sidecar; TCP to an unknown port gets no answer; the known Service works."""
    w = registry_only
    r = w.a.http(f"http://{EXT_HOST}:8080/blocked")
    assert r.status == 502, r
    assert r.served_by is None
    t = w.a.tcp(EXT_HOST, 9000, "hello", timeout=3)
    assert t.reply == "" and t.kind in ("closed", "reset"), t
    assert w.a.http("http://b.default.svc.cluster.local:8080/known").served_by == "b"


def test_service_entry_admits_external_host_by_dns(registry_only: World) -> None:
    """Egress task: "Create a ServiceEntry to allow access to an external HTTP service." ...
    "With DNS resolution, the sidecar proxy will ignore the original destination IP address and
    direct the traffic to httpbin.org, performing a DNS query to get an IP address of httpbin.org."
    Under REGISTRY_ONLY the host becomes reachable, and a request claiming that Host but sent to
    another IP (pod b's) still lands on the address DNS gives for the host."""
    w = registry_only
    cluster = f"outbound|8080||{EXT_HOST}"
    w.mesh.apply("se-ext", {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"hosts": [EXT_HOST], "location": "MESH_EXTERNAL", "resolution": "DNS",
                 "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}]},
    })
    try:
        assert w.envoy.wait_cluster(cluster)["type"] == "STRICT_DNS"
        wait_for(lambda: w.a.http(f"http://{EXT_HOST}:8080/se").served_by == "ext", timeout=15,
                 what="ext reachable through its ServiceEntry")
        r = w.a.http(f"http://{w.b.ip}:8080/spoof", host=f"{EXT_HOST}:8080")
        assert r.served_by == "ext", r
        assert w.envoy.cluster_stat(cluster, "upstream_rq_total") >= 2
    finally:
        w.mesh.delete("se-ext")
        wait_for(lambda: cluster not in w.envoy.clusters(), timeout=15, what=f"{cluster} removed")
