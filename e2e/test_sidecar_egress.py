"""Sidecar egress `hosts` decide which services a sidecar can reach, proven with traffic.

Pods without sidecars serve Services b (namespace default) and c (namespace other), both :8080;
`a` (default, app=a) is the captured client whose Sidecar each test rewrites.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from e2e.harness import Envoy, Mesh, Pod, wait_for

MESH_SOURCES = ("files", "kubernetes")  # the Kubernetes source too: objects and pods from an API server

B = "b.default.svc.cluster.local"
C = "c.other.svc.cluster.local"


@dataclass
class World:
    mesh: Mesh
    a: Pod
    envoy: Envoy


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    for name, ns in (("b", "default"), ("c", "other")):
        p = xds_mesh.add_pod(name, ns, labels={"app": name})
        p.serve_http(8080)
        xds_mesh.register(p)
        xds_mesh.service(name, ns, ports=[8080])
    a = xds_mesh.add_pod("a", labels={"app": "a"})
    envoy = xds_mesh.inject(a)
    return World(xds_mesh, a, envoy)


def outbound_hosts(world: World) -> set[str]:
    hosts = {name.split("|")[3] for name in world.envoy.clusters() if name.startswith("outbound|")}
    return hosts - world.mesh.platform_hosts


def use_sidecar(world: World, hosts: list[str] | None, expect: set[str]) -> None:
    """Apply (or remove) a's Sidecar and wait until its CDS holds exactly `expect`."""
    if hosts is None:
        world.mesh.delete("sidecar-a")
    else:
        world.mesh.apply("sidecar-a", {
            "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"workloadSelector": {"labels": {"app": "a"}}, "egress": [{"hosts": hosts}]},
        })
    wait_for(lambda: outbound_hosts(world) == expect, timeout=15,
             what=f"a's outbound clusters == {sorted(expect)}",
             describe=lambda: f"have {sorted(outbound_hosts(world))}")
    for host in expect:
        wait_for(lambda h=host: world.envoy.endpoints().get(f"outbound|8080||{h}"), timeout=15,
                 what=f"endpoints for {host}")


def reaches(world: World, host: str) -> bool:
    r = world.a.http(f"http://{host}:8080/", timeout=3)
    return r.served_by == host.split(".")[0]


def test_without_sidecar_every_service_is_reachable(world: World) -> None:
    """Sidecar reference: "If a host is set to */*, Istio will configure the sidecar to be able to
    reach every service in the mesh that is exported to the sidecar's namespace" — which is also
    what a sidecar gets with no Sidecar object at all."""
    use_sidecar(world, None, {B, C})
    assert reaches(world, B) and reaches(world, C)
    use_sidecar(world, ["*/*"], {B, C})
    assert reaches(world, B) and reaches(world, C)


def test_dot_namespace_imports_only_own_namespace(world: World) -> None:
    """Sidecar reference: "./foo.example.com only selects the service from the namespace of the
    sidecar." With `./*`, c (namespace other) is not imported: a's request to it is not routed
    (the VIP exists only in sidecar config, so the passthrough goes nowhere: 503, never c)."""
    try:
        use_sidecar(world, ["./*"], {B})
        assert reaches(world, B)
        r = world.a.http(f"http://{C}:8080/", timeout=3)
        assert r.served_by is None and r.status == 503, r
    finally:
        use_sidecar(world, None, {B, C})


def test_adding_a_namespace_imports_it_live(world: World) -> None:
    """Sidecar reference: "Services in the specified namespace matching dnsName will be exposed."
    Extending the hosts of a running sidecar makes c reachable without restarting anything."""
    try:
        use_sidecar(world, ["./*"], {B})
        assert not reaches(world, C)
        use_sidecar(world, ["./*", "other/*"], {B, C})
        assert reaches(world, C)
    finally:
        use_sidecar(world, None, {B, C})


def test_tilde_trims_all_outbound_config(world: World) -> None:
    """Sidecar reference: "The value ~/* can be used to completely trim the configuration for
    sidecars that simply receive traffic and respond, but make no outbound connections of their own.\""""
    try:
        use_sidecar(world, ["~/*"], set())
        assert not reaches(world, B) and not reaches(world, C)
    finally:
        use_sidecar(world, None, {B, C})
    assert world.envoy.rejected_updates() == {}
