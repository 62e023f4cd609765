"""Config changed while traffic flows: each change converges within a deadline, and a request loop
to an unrelated Service (b) never sees a failure meanwhile. Bad input (an invalid Sidecar, a YAML
syntax error, a node the server does not serve) leaves working traffic working and the previous config in place.

Pods without sidecars: b (Service b:8080, the unrelated route), c (namespace other, Service c:8080),
d1 (Service d:8080; d2 joins and leaves), ext (not in the registry; ext.e2e.example in DNS).
Client: a (captured sidecar).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, RequestLoop, server, views, wait_for

MESH_SOURCES = ("files", "kubernetes")  # the Kubernetes source too: objects and pods from an API server

B = "b.default.svc.cluster.local"
C = "c.other.svc.cluster.local"
D = "d.default.svc.cluster.local"
EXT = "ext.e2e.example"
CONVERGE = 10.0  # seconds a change may take to reach the sidecar and work


@dataclass
class World:
    mesh: Mesh
    a: Pod
    envoy: Envoy


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    for name, ns, app in (("b", "default", "b"), ("c", "other", "c"), ("d1", "default", "d")):
        p = m.add_pod(name, ns, labels={"app": app})
        p.serve_http(8080)
        m.register(p)
    m.service("b", ports=[8080])
    m.service("c", "other", ports=[8080])
    m.service("d", ports=[8080])
    ext = m.add_pod("ext")
    ext.serve_http(8080)
    m.dns.set(EXT, ext.ip)
    a = m.add_pod("a", labels={"app": "a"})
    envoy = m.inject(a)
    for host in (B, C, D):
        wait_for(lambda h=host: envoy.endpoints().get(f"outbound|8080||{h}"), timeout=15, what=f"{host} endpoints")
    return World(m, a, envoy)


@pytest.fixture
def unrelated(world: World) -> Iterator[RequestLoop]:
    """Requests to b all along the test; none may fail, and no update may be rejected."""
    loop = world.a.request_loop("b", f"http://{B}:8080/loop", expect_pod="b")
    loop.wait_more(3)
    yield loop
    loop.wait_more(3)  # still flowing after the last change
    results = loop.stop()
    assert loop.failures() == [], f"{len(loop.failures())} of {len(results)} requests to b failed"
    assert world.mesh.rejected_updates() == {}


def reaches(world: World, host: str, pod: str) -> bool:
    return world.a.http(f"http://{host}:8080/", timeout=3).served_by == pod


def sidecar_a(hosts: list[Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"workloadSelector": {"labels": {"app": "a"}}, "egress": [{"hosts": hosts}]}}


def set_registry_only(world: World, on: bool) -> None:
    if on:
        world.mesh.apply("mesh-configmap", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"}})
    else:
        world.mesh.delete("mesh-configmap")
    want = "BlackHoleCluster" if on else "PassthroughCluster"

    def catchall() -> str:
        chains = views.chain_clusters(world.envoy.listeners()["virtualOutbound"])
        return next(c for name, c in chains.items() if "catchall" in name)

    wait_for(lambda: catchall() == want, timeout=CONVERGE, what=f"catch-all -> {want}")


def test_service_entry_added_under_registry_only_starts_working(world: World, unrelated: RequestLoop) -> None:
    """Egress task: "Create a ServiceEntry to allow access to an external HTTP service." Switching
    the mesh to REGISTRY_ONLY blocks ext (502); adding its ServiceEntry makes it reachable within
    the deadline; removing it blocks it again. Requests to b never fail through the three pushes."""
    try:
        set_registry_only(world, True)
        assert world.a.http(f"http://{EXT}:8080/").status == 502
        world.mesh.apply("se-ext", {
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"hosts": [EXT], "location": "MESH_EXTERNAL", "resolution": "DNS",
                     "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}]}})
        wait_for(lambda: reaches(world, EXT, "ext"), timeout=CONVERGE, what="ext reachable via its ServiceEntry")
        unrelated.wait_more()
        world.mesh.delete("se-ext")
        wait_for(lambda: world.a.http(f"http://{EXT}:8080/").status == 502, timeout=CONVERGE,
                 what="ext blocked again")
    finally:
        world.mesh.delete("se-ext")
        set_registry_only(world, False)


def test_pod_joining_and_leaving_a_service(world: World, unrelated: RequestLoop) -> None:
    """Sidecar reference: "By default, Istio will program all sidecar proxies in the mesh with the
    necessary configuration required to reach every workload instance in the mesh". A pod that
    joins Service d receives requests within the deadline; when it leaves (its Pod object goes
    before the process, as with a graceful termination) it stops receiving them, and a loop on d
    itself sees no failure either."""
    m, env = world.mesh, world.envoy
    cluster = f"outbound|8080||{D}"
    d1 = m.pods["d1.default"]
    on_d = world.a.request_loop("d", f"http://{D}:8080/d", expect_pod={"d1", "d2"})
    d2 = m.add_pod("d2", labels={"app": "d"})
    try:
        d2.serve_http(8080)
        m.register(d2)
        env.wait_endpoints(cluster, {f"{d1.ip}:8080", f"{d2.ip}:8080"}, timeout=CONVERGE)
        wait_for(lambda: {r.served_by for r in world.a.http_many(f"http://{D}:8080/", 6)} == {"d1", "d2"},
                 timeout=CONVERGE, what="requests reach d1 and d2")
        # The loop too, before d2 leaves: with fast pushes the window can be shorter than the few
        # requests it takes the load balancer to pick d2 by chance.
        wait_for(lambda: "d2" in {r.by for r in on_d.results()}, timeout=CONVERGE, what="the loop on d reaches d2")
        m.delete("pod-default-d2")
        env.wait_endpoints(cluster, {f"{d1.ip}:8080"}, timeout=CONVERGE)
        on_d.wait_more()
    finally:
        m.remove_pod(d2)
    assert {r.served_by for r in world.a.http_many(f"http://{D}:8080/", 6)} == {"d1"}
    on_d.wait_more()
    on_d.stop()
    assert on_d.failures() == []
    assert {r.by for r in on_d.results()} == {"d1", "d2"}


def test_sidecar_narrowed_and_widened(world: World, unrelated: RequestLoop) -> None:
    """Sidecar reference: "./foo.example.com only selects the service from the namespace of the
    sidecar." Narrowing a's Sidecar to `./*` makes c unreachable within the deadline; widening it
    with `other/*` brings c back; b keeps answering throughout."""
    try:
        world.mesh.apply("sidecar-a", sidecar_a(["./*"]))
        wait_for(lambda: not reaches(world, C, "c"), timeout=CONVERGE, what="c no longer reachable")
        unrelated.wait_more()
        world.mesh.apply("sidecar-a", sidecar_a(["./*", "other/*"]))
        wait_for(lambda: reaches(world, C, "c"), timeout=CONVERGE, what="c reachable again")
    finally:
        world.mesh.delete("sidecar-a")


def wait_rejected(world: World, fragment: str) -> None:
    srv = world.mesh.server
    assert srv is not None
    wait_for(lambda: any(fragment in r["message"] for r in srv.rejected_inputs()), timeout=CONVERGE,
             what=f"the server to reject input ({fragment!r})", describe=lambda: str(srv.rejected_inputs()))


def test_bad_input_keeps_the_previous_good_config(world: World, unrelated: RequestLoop) -> None:
    """Bad input must not hurt working traffic: a Sidecar that fails validation (which, if used,
    would widen a's scope), then a file that is not YAML at all, are rejected by the server; a
    keeps its previous Sidecar (c stays unreachable, b keeps working) and Envoy never sees a bad
    update. Fixing the file is picked up as usual."""
    m, env = world.mesh, world.envoy
    try:
        m.apply("sidecar-a", sidecar_a(["./*"]))
        wait_for(lambda: not reaches(world, C, "c"), timeout=CONVERGE, what="c no longer reachable")
        clusters = set(env.clusters())

        m.apply("sidecar-a", sidecar_a(["*/*", "no-slash"]))
        wait_rejected(world, "no-slash")
        unrelated.wait_more()
        assert not reaches(world, C, "c") and set(env.clusters()) == clusters

        if m.source == "files":  # an API server never stores text that is not YAML
            path = m.config_dir / "sidecar-a.yaml"
            tmp = m.config_dir / ".sidecar-a.tmp"
            tmp.write_text("apiVersion: networking.istio.io/v1\nkind: Sidecar\nspec: {egress: [\n")
            tmp.replace(path)
            wait_rejected(world, "invalid YAML")
            unrelated.wait_more()
            assert not reaches(world, C, "c") and set(env.clusters()) == clusters

        m.apply("sidecar-a", sidecar_a(["./*", "other/*"]))
        wait_for(lambda: reaches(world, C, "c"), timeout=CONVERGE, what="c reachable after the fix")
        assert env.rejected_updates() == {}
    finally:
        m.delete("sidecar-a")


def test_node_of_another_proxy_type_is_refused_without_harm(world: World, unrelated: RequestLoop) -> None:
    """A node id's type is one of `sidecar`, `router`, `waypoint`, `ztunnel` (istio
    `pilot/pkg/model/context.go` ParseServiceNodeWithMetadata); only `sidecar` is served here, and a
    node the server cannot serve is refused (istiod closes a malformed one with InvalidArgument;
    this server accepts ids of other shapes as an unknown proxy, by design, but refuses other
    proxy types). A `router~...` Envoy gets its stream
    closed with InvalidArgument and no configuration, while the existing sidecar keeps serving."""
    m = world.mesh
    assert m.server is not None
    bad = m.add_pod("bad")
    try:
        boot = server.bootstrap(f"router~{bad.ip}~bad.default~default.svc.cluster.local", m.server.xds_address,
                                {"NAMESPACE": "default"})
        envoy = bad.start_envoy(boot, wait=False)
        wait_for(lambda: "gRPC config stream to xds-grpc closed: 3" in envoy.proc.log.read_text(),
                 timeout=CONVERGE, what="the ADS stream closed with InvalidArgument (3)",
                 describe=lambda: envoy.proc.log_tail(10))
        assert envoy.proc.alive()
        assert envoy.listeners() == {}
        assert envoy.server_state() != "LIVE"
        unrelated.wait_more()
    finally:
        m.remove_pod(bad, unregister=False)
