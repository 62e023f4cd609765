"""Kubernetes Service shapes seen from a captured client: TCP on a VIP, headless TCP, an
auto-detected port carrying HTTP and raw TCP, port protocol rules (server-first traffic),
reserved ports, EDS health, and the capture rules themselves.

Pods: `a` (client, captured sidecar); backends without sidecars, registered so that Services
select them: `echo` (TCP 9000), `h1`/`h2` (headless TCP 9100), `auto` (HTTP+TCP on 7000), `db`
(server-first on 3306/3307/3308), `rsv` (HTTP 8080, TCP 9000 behind reserved Service ports),
`p1`/`p2` (HTTP 8080; p2 starts not ready).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e.harness import Envoy, Mesh, Pod, Service, iptables, views, wait_for


@dataclass
class World:
    mesh: Mesh
    a: Pod
    envoy: Envoy
    svc: dict[str, Service]
    pods: dict[str, Pod]


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    pods: dict[str, Pod] = {}
    svc: dict[str, Service] = {}

    pods["echo"] = p = m.add_pod("echo", labels={"app": "echo"})
    p.serve_tcp_echo(9000)
    svc["echo"] = m.service("echo", ports=[{"name": "tcp-echo", "port": 9000, "targetPort": 9000}])

    for name in ("h1", "h2"):
        pods[name] = p = m.add_pod(name, labels={"app": "hl"})
        p.serve_tcp_echo(9100)
    svc["hl"] = m.service("hl", selector={"app": "hl"}, headless=True,
                          ports=[{"name": "tcp", "port": 9100, "targetPort": 9100}])

    pods["auto"] = p = m.add_pod("auto", labels={"app": "auto"})
    p.serve_dual(7000)
    svc["auto"] = m.service("auto", ports=[{"port": 7000, "targetPort": 7000}])  # unnamed: auto

    pods["db"] = p = m.add_pod("db", labels={"app": "db"})
    for port in (3306, 3307, 3308):
        p.serve_banner(port)
    svc["db"] = m.service("db", ports=[
        {"name": "db", "port": 3306, "targetPort": 3306},  # unknown name, well-known port: TCP
        {"name": "db-replica", "port": 3307, "targetPort": 3307},  # unknown name: auto
        {"name": "http-db", "appProtocol": "tcp", "port": 3308, "targetPort": 3308},  # appProtocol wins
    ])

    pods["rsv"] = p = m.add_pod("rsv", labels={"app": "rsv"})
    p.serve_http(8080)
    p.serve_tcp_echo(9000)
    svc["rsv"] = m.service("rsv", ports=[
        {"name": "http-status", "port": 15021, "targetPort": 8080},
        {"name": "tcp-prom", "port": 15090, "targetPort": 9000},
    ])

    for name in ("p1", "p2"):
        pods[name] = p = m.add_pod(name, labels={"app": "hp"})
        p.serve_http(8080)
    svc["hp"] = m.service("hp", ports=[8080])

    for name, p in pods.items():
        m.register(p, ready=name != "p2")
    a = m.add_pod("a", labels={"app": "a"})
    envoy = m.inject(a)
    envoy.wait_endpoints(f"outbound|8080||{svc['hp'].fqdn}", {f"{pods['p1'].ip}:8080"})
    envoy.wait_endpoints(f"outbound|9000||{svc['echo'].fqdn}", {f"{pods['echo'].ip}:9000"})
    return World(m, a, envoy, svc, pods)


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


def test_tcp_service_on_its_vip(world: World) -> None:
    """Understanding Traffic Routing (TCP): "These attributes are used to determine the intended
    Service; the proxy is configured to listen on each service IP (<Kubernetes ClusterIP>:<Port>)
    pair and forward traffic to the upstream service." The echo Service gets a `<vip>_9000`
    listener with one tcp_proxy chain; a raw TCP exchange by name lands on the echo pod through
    the Service's cluster."""
    svc, env = world.svc["echo"], world.envoy
    cluster = f"outbound|9000||{svc.fqdn}"
    listener = env.listeners()[f"{svc.vip}_9000"]
    assert listener.get("bind_to_port") is False
    assert list(views.chain_clusters(listener).values()) == [cluster]
    before = env.cluster_stat(cluster, "upstream_cx_total")
    assert world.a.tcp(svc.fqdn, 9000, "hi").reply == "echo hi"
    env.wait_stat(env.cluster_stat_name(cluster, "upstream_cx_total"), before + 1)


def test_headless_tcp_listener_per_pod(world: World) -> None:
    """istiod (`listener.go`): a headless TCP port gets one listener per endpoint IP (the pod IP),
    with an ORIGINAL_DST cluster. Kubernetes DNS gives clients the pod IPs; each
    connection reaches exactly the pod that was dialled, through the Service's cluster (not the
    passthrough), whichever name or IP the client used."""
    svc, env = world.svc["hl"], world.envoy
    cluster = f"outbound|9100||{svc.fqdn}"
    assert env.clusters()[cluster]["type"] == "ORIGINAL_DST"
    h1, h2 = world.pods["h1"], world.pods["h2"]
    listeners = env.listeners()
    for p in (h1, h2):
        assert views.chain_clusters(listeners[f"{p.ip}_9100"]), listeners[f"{p.ip}_9100"]
    stat = env.cluster_stat_name(cluster, "upstream_cx_total")
    passthrough = env.stat("cluster.PassthroughCluster.upstream_cx_total")
    before = env.stat(stat)
    assert world.a.tcp(h1.ip, 9100, "one").reply == "h1 one"
    assert world.a.tcp(h2.ip, 9100, "two").reply == "h2 two"
    assert world.a.tcp(svc.fqdn, 9100, "dns").reply.endswith(" dns")
    env.wait_stat(stat, before + 3)
    assert env.stat("cluster.PassthroughCluster.upstream_cx_total") == passthrough


def test_auto_port_carries_http_and_raw_tcp(world: World) -> None:
    """Protocol Selection: "Istio can automatically detect HTTP and HTTP/2 traffic. If the protocol
    cannot automatically be determined, traffic will be treated as plain TCP traffic." One unnamed
    port: an HTTP request is routed by the sidecar (RDS `host:port`, domains ["*"]) and a raw
    line on the same port is proxied as TCP, both to the same pod."""
    svc, env = world.svc["auto"], world.envoy
    route = env.route_configs()[f"{svc.fqdn}:7000"]
    assert list(views.vhost_domains(route).values()) == [["*"]]
    r = world.a.http(f"http://{svc.fqdn}:7000/sniffed")
    assert r.served_by == "auto", r
    assert "x-envoy-attempt-count" in r.json()["headers"]  # went through the HTTP route
    assert world.a.tcp(svc.fqdn, 7000, "raw bytes").reply == "auto raw bytes"
    assert env.cluster_stat(f"outbound|7000||{svc.fqdn}", "upstream_cx_total") >= 2


def test_port_protocol_server_first(world: World) -> None:
    """Protocol Selection: "If both are defined, appProtocol takes precedence over the port name."
    An unknown port name means auto-detection, except ports 25, 53, 3306 and 27017, which are TCP
    (istio `pilot/pkg/serviceregistry/kube/conversion.go`), and server-first protocols on auto
    ports hang (sniffing waits for the client's first bytes). A server that speaks first is
    reachable on 3306 (name `db`) and on 3308 (name `http-db`, appProtocol tcp), but not on 3307
    (name `db-replica`: auto, the sidecar waits for client bytes that never come)."""
    svc, env = world.svc["db"], world.envoy
    listeners = env.listeners()
    for port in (3306, 3308):
        assert not listeners[f"{svc.vip}_{port}"].get("listener_filters"), port  # no sniffing
        assert world.a.tcp(svc.fqdn, port, banner=True).reply == "db hello"
    assert any(f["name"] == "envoy.filters.listener.http_inspector"
               for f in listeners[f"{svc.vip}_3307"]["listener_filters"])
    r = world.a.tcp(svc.fqdn, 3307, banner=True, timeout=1.0)
    assert r.kind == "timeout", r


def test_reserved_ports_have_no_wildcard_listener(world: World) -> None:
    """istiod (`listener.go` conflictWithReservedListener): a listener that would be on the
    wildcard address on ENVOY_STATUS_PORT, ENVOY_PROMETHEUS_PORT, 15001 or 15006 is skipped;
    VIP-bound TCP on those ports is allowed. The HTTP Service port 15021 gets no `0.0.0.0_15021` listener (its requests
    are not routed to the pod), while the TCP port 15090 on the VIP works."""
    svc, env = world.svc["rsv"], world.envoy
    listeners = env.listeners()
    assert "0.0.0.0_15021" not in listeners and f"{svc.vip}_15021" not in listeners
    assert f"outbound|15021||{svc.fqdn}" in env.clusters()  # imported, just not listened for
    assert world.a.tcp(svc.fqdn, 15090, "metrics").reply == "rsv metrics"
    r = world.a.http(f"http://{svc.fqdn}:15021/healthz/ready", timeout=3)
    assert r.served_by is None, r  # passed through to the bare VIP, which the node rejects
    # The sidecar's own ports still work: inbound capture (15006) and outbound (15001) are intact.
    assert world.a.tcp(world.svc["echo"].fqdn, 9000, "still").reply == "echo still"


def test_not_ready_pod_is_not_an_endpoint(world: World) -> None:
    """A pod that is not ready is UNHEALTHY and left out of EDS (istio
    `pilot/pkg/xds/endpoints/endpoint_builder.go`). Flipping p2's Ready
    condition in its Pod manifest adds it to, then removes it from, the endpoints that requests
    are balanced over."""
    m, env, svc = world.mesh, world.envoy, world.svc["hp"]
    p1, p2 = world.pods["p1"], world.pods["p2"]
    cluster = f"outbound|8080||{svc.fqdn}"
    url = f"http://{svc.fqdn}:8080/"
    assert {r.served_by for r in world.a.http_many(url, 6)} == {"p1"}
    try:
        m.register(p2, ready=True)
        env.wait_endpoints(cluster, {f"{p1.ip}:8080", f"{p2.ip}:8080"})
        wait_for(lambda: {r.served_by for r in world.a.http_many(url, 6)} == {"p1", "p2"},
                 timeout=10, what="requests spread over p1 and p2")
    finally:
        m.register(p2, ready=False)
    env.wait_endpoints(cluster, {f"{p1.ip}:8080"})
    assert {r.served_by for r in world.a.http_many(url, 6)} == {"p1"}


# istio-iptables' rule list (`tools/istio-iptables/pkg/capture/run.go`), verbatim. The harness adds one
# documented rule: inbound 15000 (Envoy admin, reached only from inside the pod) is excluded too.
ISTIO_IPTABLES_NAT = """
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
"""
HARNESS_EXTRA = "-A ISTIO_INBOUND -p tcp --dport 15000 -j RETURN"


def canonical(rule: str) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """(chain, sorted options): option order within a rule is iptables-save's business."""
    tokens = iptables.normalise(rule).split()
    chain, rest = tokens[1], tokens[2:]
    opts: list[tuple[str, ...]] = []
    i = 0
    while i < len(rest):
        neg = rest[i] == "!"
        i += neg
        opt = [rest[i]]
        i += 1
        while i < len(rest) and not rest[i].startswith("-") and rest[i] != "!":
            opt.append(rest[i])
            i += 1
        opts.append(("!", *opt) if neg else tuple(opt))
    return chain, tuple(sorted(opts))


def per_chain(rules: list[str]) -> dict[str, list[tuple[tuple[str, ...], ...]]]:
    out: dict[str, list[tuple[tuple[str, ...], ...]]] = {}
    for rule in rules:
        chain, opts = canonical(rule)
        out.setdefault(chain, []).append(opts)
    return out


def test_capture_rules_are_istio_init_and_app_traffic_hits_15001(world: World) -> None:
    """The injector's `istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*'
    -d 15090,15021,15020` — the injected pod's nat table holds exactly those rules (in order per
    chain), and a connection from the app (uid 0, not 1337) enters Envoy on 15001: one to a
    destination no listener claims stays there and is passed through (a connection to a Service
    is handed to that Service's listener instead, which counts it)."""
    spec = ISTIO_IPTABLES_NAT.strip().splitlines()
    at = spec.index("-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN") + 1
    # Through Kubernetes the rules are those of the istio-init container `xds-server inject` adds:
    # exactly istio-iptables', without the harness's own extra exclusion.
    expected = spec if world.mesh.source == "kubernetes" else [*spec[:at], HARNESS_EXTRA, *spec[at:]]
    assert per_chain(iptables.nat_rules(world.a.ns)) == per_chain(expected)

    env = world.envoy
    before = env.stat("listener.0.0.0.0_15001.downstream_cx_total")
    passthrough = env.stat("cluster.PassthroughCluster.upstream_cx_total")
    rsv = world.pods["rsv"]
    assert world.a.tcp(rsv.ip, 9000, "via 15001").reply == "rsv via 15001"
    env.wait_stat("listener.0.0.0.0_15001.downstream_cx_total", before + 1)
    env.wait_stat("cluster.PassthroughCluster.upstream_cx_total", passthrough + 1)
