"""ServiceEntry forms seen from a captured client: VIP-less TLS (SNI) and TCP entries, every
resolution (STATIC, DNS, DNS_ROUND_ROBIN, NONE), workloadSelector, MESH_EXTERNAL/MESH_INTERNAL.

Pods: `a` (client, captured sidecar); `ext1`, `ext2` ("external" hosts, no sidecar, not in the
registry): HTTP 8080, TCP echo 9100 and 9200, TLS echo 443; `decoy` (same apps): the address a
client dials when the entry is expected to ignore it; `wl1`, `wl2` (app=wl, HTTP 8080; wl2 starts
not ready) selected by a MESH_INTERNAL entry. Names resolve in the node DNS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, TlsClient, views, wait_for
from e2e.harness.certs import make_ca
from e2e.harness.mesh import VIP_NET

STATIC_VIP = str(VIP_NET[200])
NOWHERE = "198.18.0.250"  # in the pod network, no pod has it


def service_entry(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def http_port(number: int, target: int = 8080) -> dict[str, Any]:
    return {"number": number, "name": "http", "protocol": "HTTP", "targetPort": target}


@dataclass
class World:
    mesh: Mesh
    a: Pod
    envoy: Envoy
    pods: dict[str, Pod]


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    certs = make_ca(m.workdir / "certs")
    keys = certs.issue("tls.e2e.example", ["tls.e2e.example", "other.e2e.example"])
    pods: dict[str, Pod] = {}
    for name in ("ext1", "ext2", "decoy"):
        pods[name] = p = m.add_pod(name)
        p.serve_http(8080)
        p.serve_tcp_echo(9100)
        p.serve_tcp_echo(9200)
        p.serve_tls_echo(443, keys)
    for name in ("wl1", "wl2"):
        pods[name] = p = m.add_pod(name, labels={"app": "wl"})
        p.serve_http(8080)
        m.register(p, ready=name == "wl1")
    ext1, ext2, decoy = pods["ext1"].ip, pods["ext2"].ip, pods["decoy"].ip

    dns = m.dns
    dns.set("tls.e2e.example", ext1)
    dns.set("other.e2e.example", decoy)
    dns.set("dns1.e2e.example", ext1)
    dns.set("dns2.e2e.example", ext2)
    dns.set("multi.e2e.example", ext1, ext2)
    dns.set("rr.e2e.example", ext1, ext2)
    dns.set("static.e2e.example", STATIC_VIP)
    # Hosts whose entries route by Host header: the address the client dials does not matter.
    for host in ("dns.e2e.example", "wl.e2e.example", "tcp.e2e.example", "none.e2e.example"):
        dns.set(host, decoy)

    m.apply("service-entries",
            service_entry("tls", {"hosts": ["tls.e2e.example"], "location": "MESH_EXTERNAL",
                                  "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}],
                                  "resolution": "DNS"}),
            service_entry("tcp", {"hosts": ["tcp.e2e.example"], "location": "MESH_EXTERNAL",
                                  "ports": [{"number": 9100, "name": "tcp", "protocol": "TCP"}],
                                  "resolution": "STATIC", "endpoints": [{"address": ext2}]}),
            service_entry("static", {"hosts": ["static.e2e.example"], "addresses": [STATIC_VIP],
                                     "location": "MESH_EXTERNAL", "ports": [http_port(8080)],
                                     "resolution": "STATIC",
                                     "endpoints": [{"address": ext1}, {"address": ext2}]}),
            service_entry("dns", {"hosts": ["dns.e2e.example"], "ports": [http_port(8081)],
                                  "resolution": "DNS", "endpoints": [{"address": "dns1.e2e.example"},
                                                                     {"address": "dns2.e2e.example"}]}),
            service_entry("multi", {"hosts": ["multi.e2e.example"], "ports": [http_port(8082)],
                                    "resolution": "DNS"}),
            service_entry("rr", {"hosts": ["rr.e2e.example"], "ports": [http_port(8083)],
                                 "resolution": "DNS_ROUND_ROBIN"}),
            service_entry("none", {"hosts": ["none.e2e.example"], "resolution": "NONE",
                                   "ports": [{"number": 9201, "name": "tcp", "protocol": "TCP",
                                              "targetPort": 9200}]}),
            service_entry("wl", {"hosts": ["wl.e2e.example"], "location": "MESH_INTERNAL",
                                 "ports": [http_port(8084)], "resolution": "STATIC",
                                 "workloadSelector": {"labels": {"app": "wl"}}}))
    a = m.add_pod("a", labels={"app": "a"})
    envoy = m.inject(a)
    envoy.wait_endpoints("outbound|8084||wl.e2e.example", {f"{pods['wl1'].ip}:8080"})
    envoy.wait_endpoints("outbound|8080||static.e2e.example", {f"{ext1}:8080", f"{ext2}:8080"})
    for cluster in ("outbound|8081||dns.e2e.example", "outbound|8082||multi.e2e.example",
                    "outbound|8083||rr.e2e.example", "outbound|443||tls.e2e.example"):
        wait_for(lambda c=cluster: envoy.endpoints().get(c), timeout=15, what=f"{cluster} resolved")
    return World(m, a, envoy, pods)


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


def served(world: World, url: str, count: int = 8) -> set[str | None]:
    return {r.served_by for r in world.a.http_many(url, count)}


def test_vipless_tls_entry_routes_by_sni(world: World) -> None:
    """ServiceEntry reference: "For HTTPs or TLS traffic containing Server Name Indication (SNI),
    the SNI value will be matched against the hosts field." A TLS connection dialled at the decoy
    but naming tls.e2e.example reaches the entry's host (DNS: ext1) without being terminated;
    the same connection naming another server goes through the PassthroughFilterChain to the
    address actually dialled."""
    env, decoy = world.envoy, world.pods["decoy"]
    listener = env.listeners()["0.0.0.0_443"]
    assert any(f["name"] == "envoy.filters.listener.tls_inspector" for f in listener["listener_filters"])
    cluster = "outbound|443||tls.e2e.example"
    se_before = env.cluster_stat(cluster, "upstream_cx_total")
    pt_before = env.stat("cluster.PassthroughCluster.upstream_cx_total")

    r = world.a.tcp(decoy.ip, 443, "hi", tls=TlsClient(sni="tls.e2e.example"))
    assert r.reply == "ext1 sni=tls.e2e.example hi", r
    r = world.a.tcp(decoy.ip, 443, "hi", tls=TlsClient(sni="other.e2e.example"))
    assert r.reply == "decoy sni=other.e2e.example hi", r
    env.wait_stat(env.cluster_stat_name(cluster, "upstream_cx_total"), se_before + 1)
    env.wait_stat("cluster.PassthroughCluster.upstream_cx_total", pt_before + 1)


def test_vipless_tcp_entry_captures_every_ip_on_its_port(world: World) -> None:
    """ServiceEntry reference: "If the Addresses field is empty, traffic will be identified solely
    based on the destination port. ... the sidecar will behave as a simple TCP proxy, forwarding
    incoming traffic on a specified port to the specified destination endpoint IP/host." Port
    9100 to the decoy, or to an address nobody has, lands on the entry's endpoint (ext2)."""
    listener = world.envoy.listeners()["0.0.0.0_9100"]
    assert list(views.chain_clusters(listener).values()) == ["outbound|9100||tcp.e2e.example"]
    assert world.a.tcp(world.pods["decoy"].ip, 9100, "x").reply == "ext2 x"
    assert world.a.tcp(NOWHERE, 9100, "y").reply == "ext2 y"
    assert world.a.tcp("tcp.e2e.example", 9100, "z").reply == "ext2 z"


def test_static_resolution_balances_over_endpoints(world: World) -> None:
    """ServiceEntry reference: STATIC: "Use the static IP addresses specified in endpoints (see
    below) as the backing instances associated with the service." An EDS cluster with both
    addresses; requests to the entry's VIP spread over ext1 and ext2. MESH_EXTERNAL ("the service
    is external to the mesh") marks the cluster `istio.external`."""
    cluster = world.envoy.clusters()["outbound|8080||static.e2e.example"]
    assert cluster["type"] == "EDS"
    assert cluster["metadata"]["filter_metadata"]["istio"].get("external") is True
    wait_for(lambda: served(world, "http://static.e2e.example:8080/") == {"ext1", "ext2"},
             timeout=10, what="static entry balanced over ext1 and ext2")


def test_dns_resolution_resolves_endpoints_or_the_host(world: World) -> None:
    """ServiceEntry reference: DNS: "If no endpoints are specified, the proxy will resolve the DNS
    address specified in the hosts field ... If endpoints are specified, the DNS addresses
    specified in the endpoints will be resolved to determine the destination IP address."
    STRICT_DNS clusters; two endpoint names (one pod each) and one host name with two addresses
    both spread requests over ext1 and ext2, whatever address the client dialled."""
    clusters = world.envoy.clusters()
    for name, hosts in (("outbound|8081||dns.e2e.example", {"dns1.e2e.example", "dns2.e2e.example"}),
                        ("outbound|8082||multi.e2e.example", {"multi.e2e.example"})):
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS"
        inline = {e["endpoint"]["address"]["socket_address"]["address"]
                  for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]}
        assert inline == hosts
    for url in ("http://dns.e2e.example:8081/", "http://multi.e2e.example:8082/"):
        wait_for(lambda u=url: served(world, u) == {"ext1", "ext2"}, timeout=10, what=f"{url} balanced")


def test_dns_round_robin_uses_one_address(world: World) -> None:
    """ServiceEntry reference: "Unlike DNS, DNS_ROUND_ROBIN only uses the first IP address returned
    when a new connection needs to be initiated without relying on complete results of DNS
    resolution." A LOGICAL_DNS cluster: the host has two addresses, every request goes to one."""
    assert world.envoy.clusters()["outbound|8083||rr.e2e.example"]["type"] == "LOGICAL_DNS"
    got = served(world, "http://rr.e2e.example:8083/")
    assert len(got) == 1 and got <= {"ext1", "ext2"}, got


def test_none_resolution_keeps_the_original_destination(world: World) -> None:
    """ServiceEntry reference: NONE: "Assume that incoming connections have already been resolved
    (to a specific destination IP address). ... the proxy will forward the connection to the IP
    address to which the connection was bound." An ORIGINAL_DST cluster; port 9201 is the entry's
    port, its targetPort 9200 the port reached on whichever pod was dialled."""
    env = world.envoy
    cluster = "outbound|9201||none.e2e.example"
    assert env.clusters()[cluster]["type"] == "ORIGINAL_DST"
    before = env.cluster_stat(cluster, "upstream_cx_total")
    for name in ("ext1", "ext2"):
        assert world.a.tcp(world.pods[name].ip, 9201, "orig").reply == f"{name} orig"
    env.wait_stat(env.cluster_stat_name(cluster, "upstream_cx_total"), before + 2)


def test_workload_selector_selects_ready_pods(world: World) -> None:
    """ServiceEntry reference: workloadSelector "Applicable only for MESH_INTERNAL services ...
    Selects one or more Kubernetes pods or VM workloads ... based on their labels." Only the ready
    pod wl1 is an endpoint; once wl2 reports Ready it is one too, and requests reach both. The
    MESH_INTERNAL cluster carries no `istio.external` mark."""
    m, env = world.mesh, world.envoy
    wl1, wl2 = world.pods["wl1"], world.pods["wl2"]
    cluster = "outbound|8084||wl.e2e.example"
    meta = env.clusters()[cluster].get("metadata", {}).get("filter_metadata", {}).get("istio", {})
    assert "external" not in meta
    assert served(world, "http://wl.e2e.example:8084/") == {"wl1"}
    try:
        m.register(wl2, ready=True)
        env.wait_endpoints(cluster, {f"{wl1.ip}:8080", f"{wl2.ip}:8080"})
        wait_for(lambda: served(world, "http://wl.e2e.example:8084/") == {"wl1", "wl2"}, timeout=10,
                 what="requests reach wl1 and wl2")
    finally:
        m.register(wl2, ready=False)
    env.wait_endpoints(cluster, {f"{wl1.ip}:8080"})
