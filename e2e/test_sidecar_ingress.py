"""Sidecar `ingress` (defaultEndpoint on a unix socket or loopback) and captureMode NONE egress,
with the Istio Sidecar reference's own examples (ratings behind a UDS; productpage without iptables).
"""

from __future__ import annotations

import pytest

from e2e.harness import Mesh, Pod

MESH_SOURCES = ("files", "kubernetes")  # the Kubernetes source too: objects and pods from an API server

MYSQL_HOST = "mysql.e2e.example"


def sidecar(name: str, app: str, spec: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"workloadSelector": {"labels": {"app": app}}, **spec}}


@pytest.fixture(scope="module")
def client(xds_mesh: Mesh) -> Pod:
    """A captured client with a sidecar, and nothing else."""
    c = xds_mesh.add_pod("client", labels={"app": "client"})
    xds_mesh.inject(c)
    return c


@pytest.fixture(scope="module")
def plain(xds_mesh: Mesh) -> Pod:
    """A client outside the mesh (no capture, no sidecar)."""
    return xds_mesh.add_pod("plain")


def test_ingress_forwards_to_unix_socket(xds_mesh: Mesh, client: Pod, plain: Pod) -> None:
    """Sidecar reference (ratings example): "The workload accepts inbound HTTP traffic on port
    9080. The traffic is then forwarded to the attached workload instance listening on a Unix
    domain socket." Reached through the client's sidecar by Service name, and from outside the
    mesh by pod IP (captured to 15006)."""
    ratings = xds_mesh.add_pod("ratings", labels={"app": "ratings"})
    sock = ratings.serve_http_unix("ratings.sock")
    xds_mesh.apply("sidecar-ratings", sidecar("ratings", "ratings", {"ingress": [{
        "port": {"number": 9080, "protocol": "HTTP", "name": "somename"},
        "defaultEndpoint": f"unix://{sock}",
    }]}))
    svc = xds_mesh.service("ratings", ports=[9080])
    envoy = xds_mesh.inject(ratings)
    envoy.wait_cluster("inbound|9080||")
    assert client.envoy is not None
    client.envoy.wait_endpoints(f"outbound|9080||{svc.fqdn}", {f"{ratings.ip}:9080"})

    r = client.http(f"http://{svc.fqdn}:9080/ratings/0")
    assert r.served_by == "ratings", r
    assert (r.json()["peer"], r.json()["path"]) == ("unix", "/ratings/0")
    r = plain.http(f"http://{ratings.ip}:9080/direct")
    assert r.served_by == "ratings" and r.json()["peer"] == "unix", r
    assert envoy.rejected_updates() == {}


def test_no_iptables_pod_ingress_and_loopback_egress(xds_mesh: Mesh, plain: Pod) -> None:
    """Sidecar reference (no-ip-tables example): with INTERCEPTION_MODE NONE, the Sidecar "allows
    such pods to receive HTTP traffic on port 9080 ... and forward it to the application
    listening on 127.0.0.1:8080. It also allows the application to communicate with a backing
    MySQL database on 127.0.0.1:3306, that then gets proxied to the externally hosted MySQL
    service at mysql.foo.com:3306." (mysql.foo.com is mysql.e2e.example here, in the node DNS.)"""
    mysql = xds_mesh.add_pod("mysql")
    mysql.serve_tcp_echo(3306)
    xds_mesh.dns.set(MYSQL_HOST, mysql.ip)
    xds_mesh.apply("se-mysql", {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
        "metadata": {"name": "external-svc-mysql", "namespace": "default"},
        "spec": {"hosts": [MYSQL_HOST], "ports": [{"number": 3306, "name": "mysql", "protocol": "MYSQL"}],
                 "location": "MESH_EXTERNAL", "resolution": "DNS"},
    })
    pp = xds_mesh.add_pod("productpage", labels={"app": "productpage"})
    pp.serve_http(8080, bind="127.0.0.1")
    xds_mesh.apply("sidecar-productpage", sidecar("no-ip-tables", "productpage", {
        "ingress": [{"port": {"number": 9080, "protocol": "HTTP", "name": "somename"},
                     "defaultEndpoint": "127.0.0.1:8080", "captureMode": "NONE"}],
        "egress": [{"port": {"number": 3306, "protocol": "MYSQL", "name": "egressmysql"},
                    "captureMode": "NONE", "bind": "127.0.0.1", "hosts": [f"*/{MYSQL_HOST}"]}],
    }))
    envoy = xds_mesh.inject(pp, interception="NONE")
    listener = envoy.wait_listener(f"{pp.ip}_9080")
    assert listener.get("bind_to_port", True) is True  # a real socket, not a capture target
    envoy.wait_listener("127.0.0.1_3306")
    assert "virtualOutbound" not in envoy.listeners() and "virtualInbound" not in envoy.listeners()

    # Inbound: the app only listens on loopback; the proxy's real listener is the way in.
    r = plain.http(f"http://{pp.ip}:9080/productpage")
    assert r.served_by == "productpage", r
    assert r.json()["path"] == "/productpage"
    assert plain.http(f"http://{pp.ip}:8080/", timeout=2).kind == "refused"

    # Egress: the app talks to 127.0.0.1:3306 and reaches the external host through its sidecar.
    assert pp.tcp("127.0.0.1", 3306, "select 1").reply == "mysql select 1"
    assert envoy.cluster_stat(f"outbound|3306||{MYSQL_HOST}", "upstream_cx_total") >= 1
    assert envoy.rejected_updates() == {}
