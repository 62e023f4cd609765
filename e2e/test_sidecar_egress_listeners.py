"""Sidecar egress listeners with a port, captureMode NONE, a bind address or a unix socket, and
egressProxy, proven with traffic from one captured client whose Sidecar each test rewrites.

Pods without sidecars: b (default; Service b ports 8080, 9090, 9091, all to the app's 8080),
c (other; Service c port 8080), egress (default; Service egress 8080: the egress proxy),
ext (not in the registry; HTTP 8080, TCP echo 9000; ext.e2e.example in DNS). Client: a.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, views, wait_for
from e2e.harness.kubemesh import KubeMesh
from e2e.harness.mesh import VIP_NET

B = "b.default.svc.cluster.local"
C = "c.other.svc.cluster.local"
EGRESS = "egress.default.svc.cluster.local"
EXT = "ext.e2e.example"
BIND_IP = str(VIP_NET[220])  # an address only the bound egress listener knows
ALL = {f"outbound|{p}||{B}" for p in (8080, 9090, 9091)} | {f"outbound|8080||{C}", f"outbound|8080||{EGRESS}"}


def http_port(number: int) -> dict[str, Any]:
    return {"number": number, "protocol": "HTTP", "name": f"http-{number}"}


@dataclass
class World:
    mesh: Mesh
    a: Pod
    envoy: Envoy
    ext: Pod
    uds: Path


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    for name, ns in (("b", "default"), ("c", "other"), ("egress", "default")):
        p = m.add_pod(name, ns, labels={"app": name})
        p.serve_http(8080)
        m.register(p)
    m.service("b", ports=[{"name": f"http-{port}", "port": port, "targetPort": 8080} for port in (8080, 9090, 9091)])
    m.service("c", "other", ports=[8080])
    m.service("egress", ports=[8080])
    ext = m.add_pod("ext")
    ext.serve_http(8080)
    ext.serve_tcp_echo(9000)
    m.dns.set(EXT, ext.ip)
    a = m.add_pod("a", labels={"app": "a"})
    envoy = m.inject(a)
    uds = a.workdir / "egress" / "b.sock"
    uds.parent.mkdir()
    uds.parent.chmod(0o777)  # uid-1337 Envoy creates the socket here
    world = World(m, a, envoy, ext, uds)
    use_sidecar(world, None, ALL)
    return world


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


def outbound(envoy: Envoy) -> set[str]:
    """Outbound clusters, bar those of the Services every Kubernetes cluster has (E2E_MESH_SOURCES)."""
    return {name for name in envoy.clusters()
            if name.startswith("outbound|") and name.split("|")[3] not in KubeMesh.platform_hosts}


def use_sidecar(world: World, spec: dict[str, Any] | None, expect: set[str]) -> None:
    """Apply (or remove) a's Sidecar and wait until its outbound clusters are `expect`, with endpoints."""
    if spec is None:
        world.mesh.delete("sidecar-a")
    else:
        world.mesh.apply("sidecar-a", {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                                       "metadata": {"name": "a", "namespace": "default"},
                                       "spec": {"workloadSelector": {"labels": {"app": "a"}}, **spec}})
    env = world.envoy
    wait_for(lambda: outbound(env) == expect, timeout=15, what=f"a's outbound clusters == {sorted(expect)}",
             describe=lambda: f"have {sorted(outbound(env))}")
    for cluster in expect:
        wait_for(lambda c=cluster: env.endpoints().get(c), timeout=15, what=f"endpoints of {cluster}")


@pytest.fixture
def reset(world: World) -> Iterator[World]:
    yield world
    use_sidecar(world, None, ALL)


def served_by(world: World, url: str, **kw: Any) -> str | None:
    return world.a.http(url, timeout=3, **kw).served_by


def test_explicit_port_imports_only_services_declaring_it(reset: World) -> None:
    """An egress listener with a port imports only the services that declare that port number,
    trimmed to that single port (istio `pilot/pkg/model/sidecar.go` selectServices). Sidecar reference: "The
    port if specified, will be used as the default destination port associated with the imported
    hosts." With one egress listener on 9090 and hosts `*/*`, only b:9090 is reachable; b:8080
    and c:8080 are not."""
    w = reset
    use_sidecar(w, {"egress": [{"port": http_port(9090), "hosts": ["*/*"]}]}, {f"outbound|9090||{B}"})
    assert served_by(w, f"http://{B}:9090/") == "b"
    assert served_by(w, f"http://{B}:8080/") is None
    assert served_by(w, f"http://{C}:8080/") is None


def test_port_route_belongs_to_the_listener_with_that_port(reset: World) -> None:
    """Sidecar reference: "when multiple egress listeners are specified, where one or more
    listeners have specific ports while others have no port, the hosts exposed on a listener port
    will be based on the listener with the most specific port." Listener 8080 imports `./*`, the
    portless one `*/*`: c's 8080 cluster exists (CDS is the union), but route 8080 has no c, so
    c:8080 is not reachable while b's other ports come from the portless listener."""
    w = reset
    use_sidecar(w, {"egress": [{"port": http_port(8080), "hosts": ["./*"]}, {"hosts": ["*/*"]}]}, ALL)
    route = w.envoy.route_configs()["8080"]
    assert {d for domains in views.vhost_domains(route).values() for d in domains} >= {B, EGRESS}
    assert C not in views.vhost_domains(route) and f"{C}:8080" not in views.vhost_domains(route)
    assert served_by(w, f"http://{B}:8080/") == "b"
    assert served_by(w, f"http://{B}:9091/") == "b"
    assert served_by(w, f"http://{C}:8080/") is None


def test_capture_none_bind_and_unix_socket_egress(reset: World) -> None:
    """Sidecar reference (egress `bind`): "If captureMode is NONE, bind will default to 127.0.0.1";
    CaptureMode NONE: "the application is expected to explicitly communicate with the listener port
    or Unix domain socket"; `port`: "If using Unix domain socket, use 0 as the port number". The
    app reaches b through a real 127.0.0.1:9090 listener, through a listener bound to an address
    only that listener knows (captured, bind_to_port false), and through a unix socket with
    `Host: svc:port`."""
    w = reset
    sock = f"unix://{w.uds}"
    use_sidecar(w, {"egress": [
        {"port": http_port(9090), "captureMode": "NONE", "hosts": ["./*"]},
        {"port": http_port(9091), "bind": BIND_IP, "hosts": ["./*"]},
        {"port": {"number": 0, "protocol": "HTTP", "name": "uds"}, "bind": sock, "hosts": [f"./{B}"]},
        {"hosts": ["*/*"]},
    ]}, ALL)
    listeners = w.envoy.listeners()
    assert listeners["127.0.0.1_9090"].get("bind_to_port", True) is True
    assert listeners[f"{BIND_IP}_9091"].get("bind_to_port") is False
    assert listeners[f"{sock}_0"]["address"]["pipe"]["path"] == str(w.uds)

    r = w.a.http("http://127.0.0.1:9090/loopback", host=f"{B}:9090")
    assert r.served_by == "b" and r.json()["path"] == "/loopback", r
    assert served_by(w, f"http://{BIND_IP}:9091/", host=f"{B}:9091") == "b"
    r = w.a.http("http://ignored/uds", unix=str(w.uds), host=f"{B}:8080")
    assert r.served_by == "b" and r.json()["path"] == "/uds", r


def test_egress_proxy_receives_unknown_traffic(reset: World) -> None:
    """Sidecar reference (egressProxy): "Specifies the details of the egress proxy to which unknown
    traffic should be forwarded to from the sidecar. ... NOTE 1: The specified egress host must be
    imported in the egress section". Unknown HTTP (a host on a mesh port) and raw TCP to an
    unknown port both reach the egress pod instead of ext; known services are unaffected."""
    w = reset
    egress_cluster = f"outbound|8080||{EGRESS}"
    use_sidecar(w, {"egress": [{"hosts": ["./*"]}],
                    "outboundTrafficPolicy": {"mode": "ALLOW_ANY",
                                              "egressProxy": {"host": EGRESS, "port": {"number": 8080}}}},
                {f"outbound|{p}||{B}" for p in (8080, 9090, 9091)} | {egress_cluster})
    chains = views.chain_clusters(w.envoy.listeners()["virtualOutbound"])
    assert next(c for name, c in chains.items() if "catchall" in name) == egress_cluster
    r = w.a.http(f"http://{EXT}:8080/unknown-host")
    assert r.served_by == "egress" and r.json()["host"] == f"{EXT}:8080", r
    assert served_by(w, f"http://{w.ext.ip}:9000/unknown-port") == "egress"
    assert served_by(w, f"http://{B}:8080/") == "b"
