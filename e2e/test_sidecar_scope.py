"""Which Sidecar a proxy gets (workloadSelector > namespace default > root-namespace default), and
exportTo hiding services from other namespaces, proven by what three clients can reach.

Backends (no sidecars): b (default), c (other), d and priv (third; priv is exported only to its
own namespace), plus the ServiceEntry vault.e2e.example in third, exported with `.`, backed by
pod priv. Clients with captured sidecars: x (default, role=special), y (default), z (third).
Sidecars: istio-system/default `./*` + `other/*`; default/default `./*`; default/special
(selects role=special) `other/*` + `third/*`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, wait_for
from e2e.harness.kubemesh import KubeMesh
from e2e.harness.mesh import VIP_NET

B = "b.default.svc.cluster.local"
C = "c.other.svc.cluster.local"
D = "d.third.svc.cluster.local"
PRIV = "priv.third.svc.cluster.local"
VAULT = "vault.e2e.example"
VAULT_VIP = str(VIP_NET[210])
BACKEND = {B: "b", C: "c", D: "d", PRIV: "priv", VAULT: "priv"}


def sidecar(name: str, namespace: str, hosts: list[str], selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"egress": [{"hosts": hosts}]}
    if selector:
        spec["workloadSelector"] = {"labels": selector}
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


NS_DEFAULT = sidecar("default", "default", ["./*"])


@dataclass
class World:
    mesh: Mesh
    clients: dict[str, Pod]

    def envoy(self, client: str) -> Envoy:
        envoy = self.clients[client].envoy
        assert envoy is not None
        return envoy


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    for name, ns, notes in (("b", "default", None), ("c", "other", None), ("d", "third", None),
                            ("priv", "third", {"networking.istio.io/exportTo": "."})):
        p = m.add_pod(name, ns, labels={"app": name})
        p.serve_http(8080)
        m.register(p)
        m.service(name, ns, ports=[8080], annotations=notes)
    m.dns.set(VAULT, VAULT_VIP)  # unknown to a sidecar that did not import it: a dead end
    m.apply("se-vault", {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "vault", "namespace": "third"},
        "spec": {"hosts": [VAULT], "addresses": [VAULT_VIP], "exportTo": ["."], "location": "MESH_EXTERNAL",
                 "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}], "resolution": "STATIC",
                 "endpoints": [{"address": m.pods["priv.third"].ip}]},
    })
    m.apply("sidecar-root", sidecar("default", "istio-system", ["./*", "other/*"]))
    m.apply("sidecar-ns-default", NS_DEFAULT)
    m.apply("sidecar-special", sidecar("special", "default", ["other/*", "third/*"], {"role": "special"}))
    clients = {
        "x": m.add_pod("x", "default", labels={"app": "x", "role": "special"}),
        "y": m.add_pod("y", "default", labels={"app": "y"}),
        "z": m.add_pod("z", "third", labels={"app": "z"}),
    }
    for p in clients.values():
        m.inject(p)
    return World(m, clients)


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


def outbound_hosts(envoy: Envoy) -> set[str]:
    """Outbound hosts, bar the Services every Kubernetes cluster has (E2E_MESH_SOURCES)."""
    hosts = {name.split("|")[3] for name in envoy.clusters() if name.startswith("outbound|")}
    return hosts - KubeMesh.platform_hosts


def wait_scope(world: World, client: str, expect: set[str]) -> None:
    envoy = world.envoy(client)
    wait_for(lambda: outbound_hosts(envoy) == expect, timeout=15,
             what=f"{client}'s outbound hosts == {sorted(expect)}",
             describe=lambda: f"have {sorted(outbound_hosts(envoy))}")
    for host in expect:
        wait_for(lambda h=host: envoy.endpoints().get(f"outbound|8080||{h}"), timeout=15,
                 what=f"{client}: {host} endpoints")


def reachable(world: World, client: str) -> set[str]:
    """The hosts the client's app can reach (by name, port 8080) among all of them."""
    out = set()
    for host, pod in BACKEND.items():
        r = world.clients[client].http(f"http://{host}:8080/", timeout=3)
        if r.served_by == pod:
            out.add(host)
    return out


def test_selector_sidecar_beats_namespace_default_beats_root(world: World) -> None:
    """Sidecar reference: "preference will be given to the resource with a workloadSelector that
    selects this workload instance, over a Sidecar configuration without any workloadSelector."
    NOTE 2: "A Sidecar configuration in the MeshConfig root namespace will be applied by default to
    all namespaces without a Sidecar configuration." x (selected) reaches other/third services but
    not b; y (same namespace, not selected) only b; z (a namespace without a Sidecar) gets the root
    default, with `./*` meaning its own namespace. Removing the namespace default hands y to the
    root default too."""
    for client, expect in (("x", {C, D}), ("y", {B}), ("z", {D, PRIV, VAULT, C})):
        wait_scope(world, client, expect)
        assert reachable(world, client) == expect, client
    try:
        world.mesh.delete("sidecar-ns-default")
        wait_scope(world, "y", {B, C})
        assert reachable(world, "y") == {B, C}
        assert outbound_hosts(world.envoy("x")) == {C, D}  # x keeps its own Sidecar
    finally:
        world.mesh.apply("sidecar-ns-default", NS_DEFAULT)
    wait_scope(world, "y", {B})


def test_export_to_dot_hides_services_from_other_namespaces(world: World) -> None:
    """Sidecar reference: "Only services and configuration artifacts exported to the sidecar's
    namespace (e.g., exportTo value of *) can be referenced. Private configurations (e.g., exportTo
    set to .) will not be available." x imports `third/*` yet gets neither the Service priv
    (annotation `networking.istio.io/exportTo: .`) nor the ServiceEntry vault (`exportTo: [.]`);
    z, in their namespace, reaches both."""
    wait_scope(world, "x", {C, D})
    x = world.clients["x"]
    for host in (PRIV, VAULT):
        r = x.http(f"http://{host}:8080/", timeout=3)
        assert r.served_by is None, (host, r)
    wait_scope(world, "z", {D, PRIV, VAULT, C})
    z = world.clients["z"]
    assert z.http(f"http://{PRIV}:8080/").served_by == "priv"
    assert z.http(f"http://{VAULT}:8080/").served_by == "priv"
