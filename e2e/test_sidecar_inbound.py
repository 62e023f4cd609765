"""Sidecar `ingress` on a captured pod: every defaultEndpoint form, captureMode NONE (a real
listener), connection pools, TLS termination (SIMPLE and MUTUAL); and a pod with
INTERCEPTION_MODE NONE, which gets no inbound configuration from its Service.

Pods: `srv` (captured sidecar) with apps on 127.0.0.1:8081, <podIP>:8082 and a unix socket;
`plain` (no sidecar) is the client, as a caller from outside the mesh; `lone` (sidecar with
INTERCEPTION_MODE NONE, Service lone port 80 -> 8070).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, TlsClient
from e2e.harness.certs import Certs, KeyPair, make_ca

SNI = "srv.e2e.example"


@dataclass
class World:
    mesh: Mesh
    srv: Pod
    envoy: Envoy
    plain: Pod
    certs: Certs
    client: KeyPair


def ingress(number: int, endpoint: str, **extra: Any) -> dict[str, Any]:
    protocol = "HTTPS" if "tls" in extra else "HTTP"
    return {"port": {"number": number, "protocol": protocol, "name": f"p{number}"},
            "defaultEndpoint": endpoint, **extra}


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    srv = m.add_pod("srv", labels={"app": "srv"})
    certs = make_ca(m.workdir / "certs")
    server = certs.issue("srv", [SNI, srv.ip])
    client = certs.issue("client")
    srv.serve_http(8081, bind="127.0.0.1")
    srv.serve_http(8082, bind=srv.ip)
    sock = srv.serve_http_unix("app.sock")
    tls = {"serverCertificate": str(server.cert), "privateKey": str(server.key)}
    m.apply("sidecar-srv", {
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": {"name": "srv", "namespace": "default"},
        "spec": {
            "workloadSelector": {"labels": {"app": "srv"}},
            "inboundConnectionPool": {"http": {"http2MaxRequests": 99, "maxRequestsPerConnection": 100}},
            "ingress": [
                ingress(9080, "127.0.0.1:8081", connectionPool={
                    "tcp": {"maxConnections": 7},
                    "http": {"http1MaxPendingRequests": 11, "maxRequestsPerConnection": 1}}),
                ingress(9081, "0.0.0.0:8082"),
                ingress(9082, f"unix://{sock}"),
                ingress(9083, "127.0.0.1:8081", captureMode="NONE"),
                ingress(9443, "127.0.0.1:8081", tls={"mode": "SIMPLE", **tls}),
                ingress(9444, "127.0.0.1:8081", tls={"mode": "MUTUAL", "caCertificates": str(certs.ca), **tls}),
            ],
            "egress": [{"hosts": ["~/*"]}],
        },
    })
    envoy = m.inject(srv)
    for port in (9080, 9081, 9082, 9083, 9443, 9444):
        envoy.wait_cluster(f"inbound|{port}||")
    envoy.wait_listener(f"{srv.ip}_9083")
    return World(m, srv, envoy, m.add_pod("plain"), certs, client)


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


@pytest.mark.parametrize(("port", "peer"), [(9080, "127.0.0.1"), (9081, "127.0.0.6"), (9082, "unix")],
                         ids=["loopback", "instance-ip", "unix"])
def test_default_endpoint_forms(world: World, port: int, peer: str) -> None:
    """Sidecar reference (defaultEndpoint): "Format should be one of 127.0.0.1:PORT, [::1]:PORT
    (forward to localhost), 0.0.0.0:PORT, [::]:PORT (forward to the instance IP), or
    unix:///path/to/socket (forward to Unix domain socket)." Each port reaches the app listening
    only where its endpoint says: loopback (no source bind), the pod IP (from 127.0.0.6, which
    iptables leaves alone), a unix socket."""
    r = world.plain.http(f"http://{world.srv.ip}:{port}/in-{port}")
    assert r.served_by == "srv", r
    assert (r.json()["path"], r.json()["peer"]) == (f"/in-{port}", peer)
    cluster = world.envoy.clusters()[f"inbound|{port}||"]
    assert cluster["type"] == "STATIC"
    assert world.envoy.cluster_stat(f"inbound|{port}||", "upstream_rq_total") >= 1


def test_ingress_capture_none_is_a_real_listener(world: World) -> None:
    """Sidecar reference (CaptureMode NONE): "When used in an ingress listener, care needs to be
    taken to ensure that the listener port is not in use by other processes on the host." The
    proxy owns a socket on <podIP>:9083 (seen by `ss`), not a chain in virtualInbound, and traffic
    to it reaches the app."""
    srv, env = world.srv, world.envoy
    listener = env.listeners()[f"{srv.ip}_9083"]
    assert listener.get("bind_to_port", True) is True
    sockets = srv.ns.exec("ss", "-Hltnp", f"src {srv.ip}:9083")
    assert "envoy" in sockets, sockets
    before = env.stat(f"listener.{srv.ip}_9083.downstream_cx_total")
    r = world.plain.http(f"http://{srv.ip}:9083/real")
    assert r.served_by == "srv" and r.json()["path"] == "/real", r
    env.wait_stat(f"listener.{srv.ip}_9083.downstream_cx_total", before + 1)


def test_inbound_connection_pools(world: World) -> None:
    """Sidecar reference: "Connection pool settings for a server's inbound sidecar are configured
    in the following precedence, highest to lowest: per-port ConnectionPool from the Sidecar, top
    level InboundConnectionPool from the Sidecar, ..." and "the connection pool settings are
    overriden, not merged." Port 9080's own pool (maxConnections 7, maxRequestsPerConnection 1)
    replaces the top-level one; 9081 gets the top-level pool. With one request per connection,
    every request to 9080 opens an upstream connection; 9081 reuses one."""
    env, srv = world.envoy, world.srv
    clusters = env.clusters()
    own, top = clusters["inbound|9080||"], clusters["inbound|9081||"]
    t_own = own["circuit_breakers"]["thresholds"][0]
    assert (t_own["max_connections"], t_own["max_pending_requests"]) == (7, 11)
    assert t_own["max_requests"] == 4294967295  # not merged with the top level's 99
    assert top["circuit_breakers"]["thresholds"][0]["max_requests"] == 99

    def mrpc(c: dict[str, Any]) -> int:
        opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        return int(opts["common_http_protocol_options"]["max_requests_per_connection"])

    assert (mrpc(own), mrpc(top)) == (1, 100)
    counts = {}
    for port in (9080, 9081):
        stat = env.cluster_stat_name(f"inbound|{port}||", "upstream_cx_total")
        before = env.stat(stat)
        assert {r.served_by for r in world.plain.http_many(f"http://{srv.ip}:{port}/", 4)} == {"srv"}
        counts[port] = env.stat(stat) - before
    assert counts[9080] == 4 and counts[9081] <= 1, counts


def test_ingress_tls_simple(world: World) -> None:
    """Sidecar reference (ingress `tls`): "Set of TLS related options that will enable TLS
    termination on the sidecar for requests originating from outside the mesh. Currently supports
    only SIMPLE and MUTUAL TLS modes." The client verifies the sidecar's certificate; the app
    behind it gets plain HTTP."""
    r = world.plain.http(f"https://{world.srv.ip}:9443/tls", tls=TlsClient(sni=SNI, ca=str(world.certs.ca)))
    assert r.served_by == "srv" and r.json()["path"] == "/tls", r
    assert world.plain.http(f"http://{world.srv.ip}:9443/", timeout=3).served_by is None  # TLS only


def test_ingress_tls_mutual_requires_a_client_certificate(world: World) -> None:
    """Sidecar reference: MUTUAL is one of the supported modes (client certificates verified
    against `caCertificates`). Without a client certificate the handshake is refused; with one
    signed by the CA the request reaches the app."""
    url = f"https://{world.srv.ip}:9444/mtls"
    ca = str(world.certs.ca)
    r = world.plain.http(url, tls=TlsClient(sni=SNI, ca=ca), timeout=3)
    assert r.status is None and r.kind in ("tls", "reset", "closed"), r
    r = world.plain.http(url, tls=TlsClient(sni=SNI, ca=ca, cert=str(world.client.cert), key=str(world.client.key)))
    assert r.served_by == "srv" and r.json()["path"] == "/mtls", r


def test_interception_none_gets_no_inbound_from_its_service(world: World) -> None:
    """Sidecar reference: captureMode NONE "No traffic capture"; with INTERCEPTION_MODE NONE istiod
    builds no virtual listeners and no inbound config from service targets (`listener_inbound.go`).
    The Service selecting `lone` gives its proxy no inbound listener or cluster: callers
    reach the app directly (their own address as peer). Its outbound listeners are real sockets on
    127.0.0.1, so the app can call its own Service through the proxy on loopback."""
    m = world.mesh
    lone = m.add_pod("lone", labels={"app": "lone"})
    try:
        lone.serve_http(8070)
        svc = m.service("lone", ports=[{"name": "http", "port": 80, "targetPort": 8070}])
        env = m.inject(lone, interception="NONE")
        env.wait_endpoints(f"outbound|80||{svc.fqdn}", {f"{lone.ip}:8070"})
        listeners = env.listeners()
        assert "virtualOutbound" not in listeners and "virtualInbound" not in listeners
        assert not [c for c in env.clusters() if c.startswith("inbound|")]
        r = world.plain.http(f"http://{lone.ip}:8070/direct")
        assert r.served_by == "lone" and r.json()["peer"] == world.plain.ip, r
        r = lone.http("http://127.0.0.1:80/self", host=svc.fqdn)
        assert r.served_by == "lone" and r.json()["peer"] == lone.ip, r  # via the proxy, not loopback
        assert env.rejected_updates() == {}
    finally:
        m.remove_pod(lone)
        m.delete("svc-default-lone")
