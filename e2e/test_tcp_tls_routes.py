"""VirtualService `tcp` and `tls` routes through a real client sidecar (istiod's tls.go
buildSidecarOutbound{TCP,TLS}FilterChainOpts): weighted TCP destinations split connections by
weight, `sourceLabels` picks the rule per client, `destinationSubnets` steers only the
connections to those addresses, and a `tls` route picks the backend by SNI without terminating
TLS. Each test has its control: the same traffic without the VirtualService.

Pods (namespace default): `client` (version=v1) and `other` (version=v2) with captured sidecars;
TCP line echoes on 9000, registered: `front1` (app=front), `v1` (app=tcp-v1), `v2` (app=tcp-v2);
TLS line echoes on 443 naming the SNI they got: `secure1` (app=secure), `alt1` (app=tls-alt);
unregistered TCP echoes on 7000 behind a VIP-less ServiceEntry: `ext1`, `decoy`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, TlsClient, views, wait_for
from e2e.harness.apps import PYTHON
from e2e.harness.certs import make_ca

TCP_PORT = {"name": "tcp", "port": 9000, "targetPort": 9000}
TLS_PORT = {"name": "tls", "port": 443, "targetPort": 443}
TCP_PROXY = "envoy.filters.network.tcp_proxy"

# Many connections from one process in the pod, each routed on its own: "<pod> <line>" or "error: <kind>".
CONNECT_MANY = """
import json, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(count):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"x\\n")
            out.append(s.makefile("rb").readline().decode().strip())
    except OSError as e:
        out.append("error: " + type(e).__name__)
print(json.dumps(out))
"""


# One connection: a line and its echo, then how long until the peer closes the idle connection.
IDLE_CLOSE = """
import json, socket, sys, time
host, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
s.sendall(b"x\\n")
reply = s.makefile("rb").readline().decode().strip()
s.settimeout(wait)
start = time.monotonic()
try:
    closed = s.recv(1) == b""
except socket.timeout:
    closed = False
except ConnectionResetError:
    closed = True
print(json.dumps({"reply": reply, "closed": closed, "after": time.monotonic() - start}))
"""


# A minimal HTTP/1.1 CONNECT proxy (what a tunnel target such as Squid does): READY once listening.
CONNECT_PROXY = """
import socket, sys, threading
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])), reuse_port=True)
print("READY", flush=True)
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except OSError:
            pass
def handle(c):
    with c:
        head = c.makefile("rb")
        method, target, _ = head.readline().decode().split(" ", 2)
        while head.readline() not in (b"\\r\\n", b"\\n", b""):
            pass
        if method != "CONNECT":
            c.sendall(b"HTTP/1.1 405 Method Not Allowed\\r\\ncontent-length: 0\\r\\n\\r\\n")
            return
        host, _, port = target.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5) as up:
            c.sendall(b"HTTP/1.1 200 OK\\r\\n\\r\\n")
            back = threading.Thread(target=pipe, args=(up, c), daemon=True)
            back.start()
            pipe(c, up)
            back.join()
while True:
    conn, _ = srv.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
"""


def fqdn(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


def virtual_service(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def to(service: str, weight: int | None = None, port: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": {"host": fqdn(service)}}
    if port is not None:
        out["destination"]["port"] = {"number": port}
    if weight is not None:
        out["weight"] = weight
    return out


def connect_many(pod: Pod, host: str, port: int, count: int) -> Counter[str]:
    out = pod.ns.exec(*PYTHON, "-c", CONNECT_MANY, host, str(port), str(count), timeout=5 * count + 20)
    return Counter(json.loads(out))


def tcp_targets(chain: dict[str, Any]) -> dict[str, int]:
    """cluster -> weight of a chain's tcp_proxy (a single cluster counts as weight 1)."""
    for f in chain.get("filters", []):
        if f.get("name") == TCP_PROXY:
            return views.weighted_clusters(f.get("typed_config", {}))
    return {}


def wait_chain(envoy: Envoy, listener: str, expected: dict[str, int], *, server_names: list[str] | None = None,
               prefixes: list[str] | None = None) -> None:
    """Until `listener` has a chain (with those server names / prefix ranges, if given) to `expected`."""
    def chains() -> list[dict[str, Any]]:
        lis = envoy.listeners().get(listener, {})
        return [*lis.get("filter_chains", []), *([lis["default_filter_chain"]] if "default_filter_chain" in lis
                                                 else [])]

    def ok() -> bool:
        for c in chains():
            match = c.get("filter_chain_match", {})
            got = [f"{r['address_prefix']}/{r.get('prefix_len', 0)}" for r in match.get("prefix_ranges", [])]
            if (tcp_targets(c) == expected and (server_names is None or match.get("server_names") == server_names)
                    and (prefixes is None or got == prefixes)):
                return True
        return False

    wait_for(ok, timeout=20, what=f"{listener}: chain to {expected}", describe=lambda: f"chains: {chains()}")


def cluster(service: str, port: int) -> str:
    return f"outbound|{port}||{fqdn(service)}"


@dataclass
class World:
    mesh: Mesh
    client: Pod
    other: Pod
    envoys: dict[str, Envoy]
    vips: dict[str, str]
    pods: dict[str, Pod]


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    keys = make_ca(m.workdir / "certs").issue("secure", [fqdn("secure"), fqdn("tls-alt")])
    pods: dict[str, Pod] = {}
    vips: dict[str, str] = {}
    for app, name in {"front": "front1", "tcp-v1": "v1", "tcp-v2": "v2"}.items():
        p = pods[name] = m.add_pod(name, labels={"app": app})
        p.serve_tcp_echo(9000)
        m.register(p)
        vips[app] = m.service(app, ports=[TCP_PORT]).vip
    for app, name in {"secure": "secure1", "tls-alt": "alt1"}.items():
        p = pods[name] = m.add_pod(name, labels={"app": app})
        p.serve_tls_echo(443, keys)
        m.register(p)
        vips[app] = m.service(app, ports=[TLS_PORT]).vip
    for name in ("ext1", "decoy"):
        p = pods[name] = m.add_pod(name)  # outside the registry
        p.serve_tcp_echo(7000)
    p = pods["tunnel1"] = m.add_pod("tunnel1", labels={"app": "tunnel"})
    p.ns.spawn("connect-proxy-3128", [*PYTHON, "-c", CONNECT_PROXY, "3128"], ready_line="READY")
    m.register(p)
    vips["tunnel"] = m.service("tunnel", ports=[{"name": "tcp", "port": 3128, "targetPort": 3128}]).vip
    m.apply("ext-entry", {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                          "metadata": {"name": "ext", "namespace": "default"},
                          "spec": {"hosts": ["ext.e2e.example"], "location": "MESH_EXTERNAL",
                                   "ports": [{"number": 7000, "name": "tcp", "protocol": "TCP"}],
                                   "resolution": "NONE"}})
    client = m.add_pod("client", labels={"app": "client", "version": "v1"})
    other = m.add_pod("other", labels={"app": "other", "version": "v2"})
    envoys = {p.name: m.inject(p) for p in (client, other)}
    for envoy in envoys.values():
        for app, name in {"front": "front1", "tcp-v1": "v1", "tcp-v2": "v2"}.items():
            envoy.wait_endpoints(cluster(app, 9000), {f"{pods[name].ip}:9000"})
        for app, name in {"secure": "secure1", "tls-alt": "alt1"}.items():
            envoy.wait_endpoints(cluster(app, 443), {f"{pods[name].ip}:443"})
        envoy.wait_listener("0.0.0.0_7000")
        envoy.wait_endpoints(cluster("tunnel", 3128), {f"{pods['tunnel1'].ip}:3128"})
    return World(m, client, other, envoys, vips, pods)


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


def test_tcp_connections_split_by_weight(world: World) -> None:
    """VirtualService reference, RouteDestination.weight: "The proportion of traffic to be forwarded
    to the service version." 1:3 between tcp-v1 and tcp-v2: 200 connections to front's VIP."""
    vip, listener = world.vips["front"], f"{world.vips['front']}_9000"
    assert connect_many(world.client, vip, 9000, 5) == Counter({"front1 x": 5})  # control
    try:
        world.mesh.apply("vs-split", virtual_service("front", {"hosts": [fqdn("front")], "tcp": [
            {"route": [to("tcp-v1", 1), to("tcp-v2", 3), to("front", 0)]}]}))
        wait_chain(world.envoys["client"], listener, {cluster("tcp-v1", 9000): 1, cluster("tcp-v2", 9000): 3})
        got = connect_many(world.client, vip, 9000, 200)
        assert set(got) == {"v1 x", "v2 x"}, got  # weight 0: front1 gets none
        # Binomial(200, 1/4): mean 50, sd 6.1; outside [25, 80] with p < 1e-4.
        assert 25 <= got["v1 x"] <= 80, got
    finally:
        world.mesh.delete("vs-split")
    wait_chain(world.envoys["client"], listener, {cluster("front", 9000): 1})
    assert connect_many(world.client, vip, 9000, 3) == Counter({"front1 x": 3})


def test_source_labels_pick_the_rule_per_client(world: World) -> None:
    """L4MatchAttributes.sourceLabels: "One or more labels that constrain the applicability of a
    rule to workloads with the given labels." The version=v2 client goes to tcp-v2; the rule does
    not apply to the version=v1 client, which falls to the next rule (tcp-v1)."""
    vip, listener = world.vips["front"], f"{world.vips['front']}_9000"
    try:
        world.mesh.apply("vs-labels", virtual_service("front", {"hosts": [fqdn("front")], "tcp": [
            {"match": [{"sourceLabels": {"version": "v2"}}], "route": [to("tcp-v2")]},
            {"route": [to("tcp-v1")]}]}))
        wait_chain(world.envoys["client"], listener, {cluster("tcp-v1", 9000): 1})
        wait_chain(world.envoys["other"], listener, {cluster("tcp-v2", 9000): 1})
        assert connect_many(world.client, vip, 9000, 3) == Counter({"v1 x": 3})
        assert connect_many(world.other, vip, 9000, 3) == Counter({"v2 x": 3})
    finally:
        world.mesh.delete("vs-labels")
    for name in ("client", "other"):
        wait_chain(world.envoys[name], listener, {cluster("front", 9000): 1})
    assert connect_many(world.other, vip, 9000, 2) == Counter({"front1 x": 2})


def test_destination_subnets_steer_only_those_addresses(world: World) -> None:
    """L4MatchAttributes.destinationSubnets: "IPv4 or IPv6 ip addresses of destination with
    optional subnet." A VIP-less NONE entry on 7000 passes connections to the address dialled; the
    route sends those to decoy's address to tcp-v1 instead, and leaves ext1's alone."""
    decoy, ext1 = world.pods["decoy"].ip, world.pods["ext1"].ip
    assert connect_many(world.client, decoy, 7000, 2) == Counter({"decoy x": 2})  # control
    try:
        world.mesh.apply("vs-subnets", virtual_service("ext", {"hosts": ["ext.e2e.example"], "tcp": [
            {"match": [{"destinationSubnets": [f"{decoy}/32"]}], "route": [to("tcp-v1", port=9000)]}]}))
        wait_chain(world.envoys["client"], "0.0.0.0_7000", {cluster("tcp-v1", 9000): 1}, prefixes=[f"{decoy}/32"])
        assert connect_many(world.client, decoy, 7000, 3) == Counter({"v1 x": 3})
        assert connect_many(world.client, ext1, 7000, 3) == Counter({"ext1 x": 3})
    finally:
        world.mesh.delete("vs-subnets")
    wait_for(lambda: connect_many(world.client, decoy, 7000, 1) == Counter({"decoy x": 1}), timeout=20,
             what="decoy reached directly again")


def test_destination_rule_idle_timeout_closes_idle_tcp_connections(world: World) -> None:
    """ConnectionPoolSettings.TCPSettings.idleTimeout: "The idle timeout for TCP connections. The
    idle timeout is defined as the period in which there are no bytes sent or received on either
    the upstream or downstream connection." With 1s the client sidecar closes a connection that
    went quiet after one echo; without the rule it stays open (Envoy's default is 1h)."""
    vip, listener = world.vips["front"], f"{world.vips['front']}_9000"

    def idle(wait: float) -> dict[str, Any]:
        out = world.client.ns.exec(*PYTHON, "-c", IDLE_CLOSE, vip, "9000", str(wait), timeout=wait + 20)
        result: dict[str, Any] = json.loads(out)
        return result

    def idle_timeout() -> str | None:
        for chain in world.envoys["client"].listeners().get(listener, {}).get("filter_chains", []):
            for f in chain.get("filters", []):
                if f.get("name") == TCP_PROXY:
                    return f.get("typed_config", {}).get("idle_timeout")
        return None

    control = idle(3)
    assert control["reply"] == "front1 x" and not control["closed"], control
    try:
        world.mesh.apply("dr-idle", {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                                     "metadata": {"name": "front", "namespace": "default"},
                                     "spec": {"host": fqdn("front"),
                                              "trafficPolicy": {"connectionPool": {"tcp": {"idleTimeout": "1s"}}}}})
        wait_for(lambda: idle_timeout() == "1s", timeout=20, what="tcp_proxy idle_timeout 1s",
                 describe=lambda: f"idle_timeout {idle_timeout()}")
        got = idle(10)
        assert got["reply"] == "front1 x" and got["closed"], got
        assert 0.8 <= got["after"] <= 5, got
    finally:
        world.mesh.delete("dr-idle")
    wait_for(lambda: idle_timeout() is None, timeout=20, what="tcp_proxy without idle_timeout")


def test_destination_rule_tunnel_carries_tcp_over_connect(world: World) -> None:
    """TrafficPolicy.tunnel: "Configuration of tunneling TCP over other transport or application
    layers for the host configured in the DestinationRule." A client connection to the tunnel
    service is sent as `CONNECT <ext1>:7000` to its endpoint (an HTTP CONNECT proxy), which
    reaches ext1's echo; without the rule the proxy gets the raw line and refuses it."""
    vip, listener, target = world.vips["tunnel"], f"{world.vips['tunnel']}_3128", f"{world.pods['ext1'].ip}:7000"

    def tunnel_hostname() -> str | None:
        for chain in world.envoys["client"].listeners().get(listener, {}).get("filter_chains", []):
            for f in chain.get("filters", []):
                if f.get("name") == TCP_PROXY:
                    return f.get("typed_config", {}).get("tunneling_config", {}).get("hostname")
        return None

    assert not world.client.tcp(vip, 3128, "x", timeout=3).reply.startswith("ext1")  # control
    try:
        world.mesh.apply("dr-tunnel", {
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "tunnel", "namespace": "default"},
            "spec": {"host": fqdn("tunnel"), "trafficPolicy": {"tunnel": {
                "protocol": "CONNECT", "targetHost": world.pods["ext1"].ip, "targetPort": 7000}}}})
        wait_for(lambda: tunnel_hostname() == target, timeout=20, what=f"tunneling_config {target}",
                 describe=lambda: f"hostname {tunnel_hostname()}")
        assert world.client.tcp(vip, 3128, "x").reply == "ext1 x"
    finally:
        world.mesh.delete("dr-tunnel")
    wait_for(lambda: tunnel_hostname() is None, timeout=20, what="tcp_proxy without tunneling_config")


def test_tls_route_by_sni_without_terminating(world: World) -> None:
    """TLSMatchAttributes.sniHosts: "SNI (server name indicator) to match on." With the route, TLS
    to secure's VIP naming secure reaches alt1, still TLS end to end (the echo names the SNI it
    got); another server name no longer reaches any backend (the service's own chain is left out
    once a tls route matched; other names pass through to the VIP, which nobody serves)."""
    vip, name, listener = world.vips["secure"], fqdn("secure"), f"{world.vips['secure']}_443"

    def reply(sni: str) -> str:
        result = world.client.tcp(vip, 443, "hi", tls=TlsClient(sni=sni), timeout=3)
        return result.reply or f"error: {result.kind}"

    assert reply(name) == f"secure1 sni={name} hi"  # control
    assert reply("else.e2e.example") == "secure1 sni=else.e2e.example hi"
    try:
        world.mesh.apply("vs-sni", virtual_service("secure", {"hosts": [name], "tls": [
            {"match": [{"sniHosts": [name]}], "route": [to("tls-alt")]}]}))
        wait_chain(world.envoys["client"], listener, {cluster("tls-alt", 443): 1}, server_names=[name])
        assert reply(name) == f"alt1 sni={name} hi"
        assert reply("else.e2e.example").startswith("error: ")
    finally:
        world.mesh.delete("vs-sni")
    wait_chain(world.envoys["client"], listener, {cluster("secure", 443): 1})
    assert reply("else.e2e.example") == "secure1 sni=else.e2e.example hi"
