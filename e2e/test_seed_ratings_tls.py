"""The Sidecar reference's `ratings` example (February 2020 edition, istio/api e090ac3f8) end to
end: the ratings sidecar terminates TLS on 9443 with `inboundTls` and forwards to the app on a
unix socket; the DestinationRule `ratings-istio-mtls-exception` (portLevelSettings 9443
`tls: {mode: SIMPLE, caCertificates}`) makes a client's sidecar originate that TLS, so the client
app speaks plain HTTP to ratings:9443. 9080 stays plaintext (`tls: {mode: DISABLE}`).

The YAML is the reference's, verbatim but for two kinds of path: the certificate files
(/etc/certs/...) and the unix socket (/var/run/someuds.sock) live under the test's own workdir,
because a network namespace is not a mount namespace: /etc and /var/run are shared by every pod
and every concurrent run on this machine. The file names are the reference's.

Pods (namespace prod-us1): `ratings` (app: ratings, captured sidecar, HTTP app on a unix socket);
`client` (app: client, captured sidecar, the plain-HTTP caller); `plain` (no sidecar: a caller
from outside the mesh, to see what the ratings sidecar itself accepts).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, TlsClient, wait_for
from e2e.harness.certs import make_ca

MESH_SOURCES = ("files", "kubernetes")  # the Kubernetes source too: objects and pods from an API server

NS = "prod-us1"
RATINGS = f"ratings.{NS}.svc.cluster.local"
CLUSTER_9443 = f"outbound|9443||{RATINGS}"
CLUSTER_9080 = f"outbound|9080||{RATINGS}"
INBOUND_HANDSHAKES = "listener.0.0.0.0_15006.ssl.handshake"  # TLS terminated by the ratings sidecar

# The reference's Sidecar examples for prod-us1 (namespace default; ratings), its PeerAuthentication
# (a kind xds-server does not read: skipped) and its DestinationRule, as published.
SEED_SIDECARS = """\
apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata:
  name: default
  namespace: prod-us1
spec:
  egress:
  - hosts:
    - "prod-us1/*"
    - "prod-apis/*"
    - "istio-system/*"
---
apiVersion: networking.istio.io/v1alpha3
kind: Sidecar
metadata:
  name: ratings
  namespace: prod-us1
spec:
  workloadSelector:
    labels:
      app: ratings
  ingress:
  - port:
      number: 9080
      protocol: HTTP
      name: somename
    defaultEndpoint: unix:///var/run/someuds.sock
  - port:
      number: 9443
      protocol: HTTPS
      name: httpsport
    inboundTls:
      mode: SIMPLE # overrides namespace default
      serverCertificate: /etc/certs/servercert.pem
      privateKey: /etc/certs/privatekey.pem
    defaultEndpoint: unix:///var/run/someuds.sock
  egress:
  - port:
      number: 9080
      protocol: HTTP
      name: egresshttp
    hosts:
    - "prod-us1/*"
  - hosts:
    - "istio-system/*"
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: ratings-istio-mtls-exception
  namespace: prod-us1
spec:
  selector:
    matchLabels:
      app: ratings
  # other ports inherit the settings from namespace-wide policy.
  portLevelMtls:
    9080:
      mode: DISABLE
    9443:
      mode: DISABLE
"""

SEED_DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: ratings-istio-mtls-exception
  namespace: prod-us1
spec:
  host: ratings.prod-us1.svc.cluster.local
  trafficPolicy:
   portLevelSettings:
   - port:
       number: 9080
     tls:
       mode: DISABLE
   - port:
       number: 9443
     tls:
       mode: SIMPLE
       caCertificates: /etc/certs/ca-certs.pem
"""


@dataclass
class World:
    mesh: Mesh
    ratings: Pod
    ratings_envoy: Envoy
    client: Pod
    client_envoy: Envoy
    plain: Pod
    certs_dir: Path  # stands for /etc/certs
    sock: Path  # stands for /var/run/someuds.sock
    wrong_ca: Path  # a CA that did not sign the ratings certificate

    def apply_destination_rule(self, ca: Path | None = None) -> None:
        """The reference's DestinationRule; `ca`: trusting that CA file instead of ca-certs.pem."""
        apply_destination_rule(self.mesh, self.certs_dir, ca)


def localize(text: str, certs_dir: Path, sock: Path) -> str:
    """The reference's YAML with its two machine-wide paths moved under this run's workdir."""
    return (text.replace("/etc/certs/", f"{certs_dir}/")
            .replace("unix:///var/run/someuds.sock", f"unix://{sock}"))


def apply_destination_rule(mesh: Mesh, certs_dir: Path, ca: Path | None = None) -> None:
    text = SEED_DESTINATION_RULE.replace("/etc/certs/ca-certs.pem", str(ca or certs_dir / "ca-certs.pem"))
    mesh.apply("seed-002-destination-rule", text)


def upstream_tls(cluster: dict[str, Any]) -> dict[str, Any] | None:
    """The cluster's UpstreamTlsContext (config-dump JSON), or None for a plaintext cluster."""
    socket = cluster.get("transport_socket")
    if not socket:
        return None
    assert socket["name"] == "envoy.transport_sockets.tls", socket
    return socket["typed_config"]


def trusted_ca(cluster: dict[str, Any]) -> str | None:
    tls = upstream_tls(cluster)
    if tls is None:
        return None
    common = tls.get("common_tls_context", {})
    validation = common.get("validation_context") or (
        common.get("combined_validation_context", {}).get("default_validation_context", {}))
    return validation.get("trusted_ca", {}).get("filename")


def wait_client_tls(world: World, ca: Path | None) -> None:
    """Until the client's 9443 cluster trusts `ca` (None: until it is plaintext)."""
    want = str(ca) if ca else None
    wait_for(lambda: trusted_ca(world.client_envoy.clusters()[CLUSTER_9443]) == want
             and (want is not None or upstream_tls(world.client_envoy.clusters()[CLUSTER_9443]) is None),
             timeout=15, what=f"{CLUSTER_9443} trusting {want}",
             describe=lambda: f"cluster: {world.client_envoy.clusters().get(CLUSTER_9443)}")


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    certs_dir = m.workdir / "etc-certs"
    certs = make_ca(certs_dir, "ratings-ca")
    server = certs.issue("ratings", [RATINGS, f"ratings.{NS}"])
    shutil.copy(certs.ca, certs_dir / "ca-certs.pem")
    shutil.copy(server.cert, certs_dir / "servercert.pem")
    shutil.copy(server.key, certs_dir / "privatekey.pem")
    for name in ("ca-certs.pem", "servercert.pem", "privatekey.pem"):
        (certs_dir / name).chmod(0o644)  # read by the uid-1337 Envoys
    wrong = make_ca(m.workdir / "wrong-ca", "someone-else").ca

    ratings = m.add_pod("ratings", NS, labels={"app": "ratings"})
    sock = ratings.serve_http_unix("someuds.sock")
    client = m.add_pod("client", NS, labels={"app": "client"})
    sidecars = localize(SEED_SIDECARS, certs_dir, sock)
    if m.source == "kubernetes":
        # The test API server has no security.istio.io CRDs; xds-server reads no PeerAuthentication.
        sidecars = sidecars.split("---\napiVersion: security.istio.io")[0]
    m.apply("seed-002-sidecars", sidecars)
    apply_destination_rule(m, certs_dir)
    # The Service must declare 9443 for clients to have a 9443 listener and cluster at all.
    m.service("ratings", NS, ports=[{"name": "http-ratings", "port": 9080, "targetPort": 9080},
                                    {"name": "https-ratings", "port": 9443, "targetPort": 9443}])
    ratings_envoy = m.inject(ratings)
    client_envoy = m.inject(client)
    for port in (9080, 9443):
        ratings_envoy.wait_cluster(f"inbound|{port}||")
        client_envoy.wait_endpoints(f"outbound|{port}||{RATINGS}", {f"{ratings.ip}:{port}"})
    return World(m, ratings, ratings_envoy, client, client_envoy, m.add_pod("plain", NS), certs_dir, sock, wrong)


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


def test_client_sidecar_originates_tls_to_ratings_9443(world: World) -> None:
    """Reference: "the associated DestinationRule to ensure that the clients use the appropriate
    TLS settings"; the ratings workload accepts "HTTPS traffic on port 9443 with one-way TLS
    termination using custom certificates ... then forwarded to the attached workload instance
    listening on a Unix domain socket." The client app sends plain HTTP to ratings:9443; its
    sidecar's 9443 cluster wraps it in TLS trusting ca-certs.pem (a handshake counted on both
    sides), and the UDS app answers 200."""
    client, server = world.client_envoy, world.ratings_envoy
    wait_client_tls(world, world.certs_dir / "ca-certs.pem")
    before = client.cluster_stat(CLUSTER_9443, "ssl.handshake")
    server_before = server.stat(INBOUND_HANDSHAKES)

    r = world.client.http(f"http://{RATINGS}:9443/ratings/0")
    assert r.status == 200 and r.served_by == "ratings", r
    assert (r.json()["peer"], r.json()["path"]) == ("unix", "/ratings/0")
    client.wait_stat(client.cluster_stat_name(CLUSTER_9443, "ssl.handshake"), before + 1)
    server.wait_stat(INBOUND_HANDSHAKES, server_before + 1)


def test_ratings_9443_speaks_only_tls(world: World) -> None:
    """What the ratings sidecar itself accepts on 9443, from outside the mesh: HTTPS verified
    against the CA reaches the UDS app; plain HTTP does not get an answer from the app."""
    url, server = f"{world.ratings.ip}:9443/direct", world.ratings_envoy
    before = server.stat(INBOUND_HANDSHAKES)
    r = world.plain.http(f"https://{url}", tls=TlsClient(sni=RATINGS, ca=str(world.certs_dir / "ca-certs.pem")))
    assert r.status == 200 and r.served_by == "ratings" and r.json()["peer"] == "unix", r
    server.wait_stat(INBOUND_HANDSHAKES, before + 1)
    r = world.plain.http(f"http://{url}", timeout=3)
    assert r.served_by is None, r


def test_9080_stays_plaintext(world: World) -> None:
    """DestinationRule portLevelSettings 9080 `tls: {mode: DISABLE}`: the client's 9080 cluster
    has no transport socket, and plain HTTP to ratings:9080 reaches the UDS app through the
    ratings sidecar's plaintext 9080 listener."""
    assert upstream_tls(world.client_envoy.clusters()[CLUSTER_9080]) is None
    r = world.client.http(f"http://{RATINGS}:9080/ratings/1")
    assert r.status == 200 and r.served_by == "ratings" and r.json()["peer"] == "unix", r
    assert world.client_envoy.cluster_stat(CLUSTER_9080, "ssl.handshake") == 0


def test_wrong_ca_fails_verification(world: World) -> None:
    """Negative control: the same DestinationRule trusting a CA that did not sign the ratings
    certificate. The client sidecar's handshake fails verification (ssl.fail_verify_error), so
    the plain-HTTP caller gets no answer: 9443 is a TCP-class (HTTPS) port, proxied by tcp_proxy,
    which closes the connection when the upstream connection fails (no HTTP 503 on this path)."""
    client = world.client_envoy
    try:
        world.apply_destination_rule(ca=world.wrong_ca)
        wait_client_tls(world, world.wrong_ca)
        before = client.cluster_stat(CLUSTER_9443, "ssl.fail_verify_error")
        r = world.client.http(f"http://{RATINGS}:9443/ratings/2", timeout=5)
        assert r.status is None and r.kind in ("closed", "reset"), r
        client.wait_stat(client.cluster_stat_name(CLUSTER_9443, "ssl.fail_verify_error"), before + 1)
    finally:
        world.apply_destination_rule()
    wait_client_tls(world, world.certs_dir / "ca-certs.pem")
    r = world.client.http(f"http://{RATINGS}:9443/ratings/3")
    assert r.status == 200 and r.served_by == "ratings", r


def test_without_the_destination_rule_plain_http_is_not_served(world: World) -> None:
    """Positive control: the DestinationRule is what makes 9443 work. Without it the client's
    sidecar forwards the app's plaintext as is, the ratings sidecar's 9443 only speaks TLS, and
    the request gets no answer from the app; putting the rule back restores it."""
    try:
        world.mesh.delete("seed-002-destination-rule")
        wait_client_tls(world, None)
        r = world.client.http(f"http://{RATINGS}:9443/ratings/4", timeout=3)
        assert r.served_by is None, r
    finally:
        world.apply_destination_rule()
    wait_client_tls(world, world.certs_dir / "ca-certs.pem")
    r = world.client.http(f"http://{RATINGS}:9443/ratings/5")
    assert r.status == 200 and r.served_by == "ratings", r
