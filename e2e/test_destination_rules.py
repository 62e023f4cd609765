"""DestinationRule traffic policies at traffic level, through a real client sidecar: consistent
hash (HTTP header, source IP), outlier detection, connection pool limits and their precedence
(subset > port level > top level), TLS origination (SIMPLE with auto SNI, with `sni` and
`subjectAltNames`; ISTIO_MUTUAL stays plaintext). Each test first shows the behaviour without the
rule (the positive control) where there is one, then applies the rule, waits until the client's
Envoy holds the expected cluster (and route) config, and proves the effect with traffic; the
rule is removed at the end, whatever happened.

Pods (namespace default; backends without sidecars, registered so they are endpoints):
`client` (captured sidecar); `h1`..`h3` (app=hash; HTTP 8080, TCP line echo 9000); `good` and
`bad` (app=flaky; bad answers every request with 500); `slow1` (app=slow, version=v1;
/delay/<s> answers after s seconds); `pool1` (app=pool); `secure1` (app=secure: HTTPS on 8443,
TLS line echo on 9443, certificate for secure.default.svc.cluster.local from the harness CA).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, wait_for
from e2e.harness.certs import Certs, make_ca


def fqdn(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


def cluster_name(service: str, port: int = 8080) -> str:
    return f"outbound|{port}||{fqdn(service)}"


def destination_rule(name: str, host: str, traffic_policy: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"host": host, "trafficPolicy": traffic_policy}}


@dataclass
class World:
    mesh: Mesh
    client: Pod
    envoy: Envoy
    certs: Certs
    wrong_ca: str  # a CA that signed nothing the backends present
    secure_vip: str
    hash_vip: str

    def pod(self, name: str) -> Pod:
        return self.mesh.pods[f"{name}.default"]

    def cluster(self, service: str, port: int = 8080) -> dict[str, Any]:
        return self.envoy.clusters()[cluster_name(service, port)]

    def wait_cluster(self, service: str, ok: Any, what: str, port: int = 8080) -> None:
        """Until the client's cluster for `service` (and `port`) satisfies `ok(cluster)`."""
        name = cluster_name(service, port)
        wait_for(lambda: ok(self.cluster(service, port)), timeout=15, what=f"{name}: {what}",
                 describe=lambda: f"cluster: {self.envoy.clusters().get(name)}")

    def host_health(self, service: str) -> dict[str, dict[str, Any]]:
        """"ip:port" -> health_status of each host of the client's cluster, from /clusters."""
        data = json.loads(self.envoy.admin("/clusters?format=json").body)
        for cs in data.get("cluster_statuses", []):
            if cs["name"] == cluster_name(service):
                return {f"{h['address']['socket_address']['address']}:{h['address']['socket_address']['port_value']}":
                        h.get("health_status", {}) for h in cs.get("host_statuses", [])}
        return {}


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    backends: dict[str, list[Pod]] = {"hash": [], "flaky": [], "slow": [], "pool": []}
    for app, names in (("hash", ("h1", "h2", "h3")), ("flaky", ("good", "bad")), ("slow", ("slow1",)),
                       ("pool", ("pool1",))):
        for name in names:
            p = m.add_pod(name, labels={"app": app, **({"version": "v1"} if app == "slow" else {})})
            p.serve_http(8080, status=500 if name == "bad" else 200)
            if app == "hash":
                p.serve_tcp_echo(9000)
            m.register(p)
            backends[app].append(p)
    for app in ("flaky", "slow", "pool"):
        m.service(app, ports=[8080])
    certs = make_ca(m.workdir / "certs")
    keys = certs.issue("secure", [fqdn("secure")])
    secure = m.add_pod("secure1", labels={"app": "secure"})
    secure.serve_https(8443, keys)
    secure.serve_tls_echo(9443, keys)
    m.register(secure)
    hash_vip = m.service("hash", ports=[8080, {"name": "tcp", "port": 9000, "targetPort": 9000}]).vip
    svc = m.service("secure", ports=[{"name": "http-secure", "port": 8443, "targetPort": 8443},
                                     {"name": "tcp-secure", "port": 9443, "targetPort": 9443}])
    client = m.add_pod("client", labels={"app": "client"})
    envoy = m.inject(client)
    for app, pods in backends.items():
        envoy.wait_endpoints(cluster_name(app), {f"{p.ip}:8080" for p in pods})
    for port in (8443, 9443):
        envoy.wait_endpoints(cluster_name("secure", port), {f"{secure.ip}:{port}"})
    envoy.wait_endpoints(cluster_name("hash", 9000), {f"{p.ip}:9000" for p in backends["hash"]})
    wrong = make_ca(m.workdir / "wrong-ca", "someone-else")
    return World(m, client, envoy, certs, str(wrong.ca), svc.vip, hash_vip)


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


def test_consistent_hash_on_a_header_keeps_a_user_on_one_pod(world: World) -> None:
    """DestinationRule reference (LoadBalancerSettings.consistentHash.httpHeaderName): "Hash based
    on a specific HTTP header." The cluster becomes RING_HASH and the route hashes on x-user
    (istiod's ConsistentHashToHashPolicy): 20 requests of one user, each on a fresh connection,
    all reach one pod, and different users spread over more than one pod. Control: without the
    rule (LEAST_REQUEST) one user's 20 requests spread."""
    url = f"http://{fqdn('hash')}:8080/"

    def pods_for(user: str) -> Counter[str | None]:
        return Counter(r.served_by for r in world.client.http_many(url, 20, headers={"x-user": user}))

    spread = pods_for("alice")
    assert len(spread) > 1 and None not in spread, spread

    world.mesh.apply("dr-hash", destination_rule("hash", fqdn("hash"), {
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}}))
    try:
        world.wait_cluster("hash", lambda c: c["lb_policy"] == "RING_HASH", "lb_policy RING_HASH")
        vhost_name = f"{fqdn('hash')}:8080"
        wait_for(lambda: route_hash_headers(world.envoy, "8080", vhost_name) == ["x-user"],
                 timeout=15, what="route hash_policy on x-user",
                 describe=lambda: f"vhost: {vhost(world.envoy, '8080', vhost_name)}")
        seen: set[str | None] = set()
        for i in range(30):  # users until two pods were seen (P(30 users on one of 3 pods) ~ 3^-29)
            got = pods_for(f"user-{i}")
            assert len(got) == 1 and None not in got, (f"user-{i}", got)
            seen |= set(got)
            if len(seen) > 1:
                break
        assert len(seen) > 1, seen
        alice = pods_for("alice")  # the user whose requests spread before
        assert len(alice) == 1 and None not in alice, alice
    finally:
        world.mesh.delete("dr-hash")
    world.wait_cluster("hash", lambda c: c["lb_policy"] == "LEAST_REQUEST", "back to LEAST_REQUEST")


def test_consistent_hash_on_the_source_ip_keeps_tcp_connections_on_one_pod(world: World) -> None:
    """DestinationRule reference (ConsistentHashLB.useSourceIp): "Hash based on the source IP
    address. This is applicable for both TCP and HTTP connections." The client's connections to
    hash:9000 (a TCP port, three pods) all reach one pod once the rule is in place: the cluster is
    RING_HASH and the listener's tcp_proxy hashes on the source IP (istiod's
    buildOutboundNetworkFilters). Control: without the rule (LEAST_REQUEST) they spread."""
    def pods() -> Counter[str]:
        return Counter(r.reply.split(" ")[0] for r in world.client.tcp_many(world.hash_vip, 9000, 20, "x"))

    spread = pods()
    assert len(spread) > 1 and set(spread) <= {"h1", "h2", "h3"}, spread

    def tcp_proxies() -> list[dict[str, Any]]:
        listener = world.envoy.listeners()[f"{world.hash_vip}_9000"]
        return [f.get("typed_config", {}) for chain in listener.get("filter_chains", []) for f in chain["filters"]
                if f["name"] == "envoy.filters.network.tcp_proxy"]

    world.mesh.apply("dr-hash", destination_rule("hash", fqdn("hash"), {
        "loadBalancer": {"consistentHash": {"useSourceIp": True}}}))
    try:
        world.wait_cluster("hash", lambda c: c["lb_policy"] == "RING_HASH", "lb_policy RING_HASH", port=9000)
        wait_for(lambda: [p.get("hash_policy") for p in tcp_proxies()] == [[{"source_ip": {}}]], timeout=15,
                 what="the tcp_proxy hashing on the source IP", describe=lambda: f"tcp_proxy: {tcp_proxies()}")
        got = pods()
        assert len(got) == 1 and set(got) <= {"h1", "h2", "h3"}, got
    finally:
        world.mesh.delete("dr-hash")
    world.wait_cluster("hash", lambda c: c["lb_policy"] == "LEAST_REQUEST", "back to LEAST_REQUEST", port=9000)


def test_outlier_detection_ejects_the_failing_endpoint(world: World) -> None:
    """DestinationRule reference (OutlierDetection): "consecutive5xxErrors: Number of 5xx errors
    before a host is ejected from the connection pool"; "maxEjectionPercent: Maximum % of hosts in
    the load balancing pool for the upstream service that can be ejected." With 1 error, 1s
    interval, 30s ejection and 100%, the pod answering 500 is ejected after its first failure
    (the cluster's ejections_active gauge and the host's failed_outlier_check show it) and every
    later request is a 200 from the good pod. Control: without the rule the 500s keep coming."""
    url = f"http://{fqdn('flaky')}:8080/"
    statuses = [r.status for r in world.client.http_many(url, 30)]
    assert set(statuses) == {200, 500}, statuses
    assert 500 in statuses[15:], statuses  # still failing late: nothing ejects it

    world.mesh.apply("dr-flaky", destination_rule("flaky", fqdn("flaky"), {"outlierDetection": {
        "consecutive5xxErrors": 1, "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}}))
    try:
        world.wait_cluster("flaky", lambda c: c["outlier_detection"]["consecutive_5xx"] == 1
                           and c["outlier_detection"]["base_ejection_time"] == "30s"
                           and c["outlier_detection"]["max_ejection_percent"] == 100,
                           "outlier_detection configured")
        env = world.envoy
        active = env.cluster_stat_name(cluster_name("flaky"), "outlier_detection.ejections_active")
        bad = world.pod("bad")

        def ejected() -> bool:
            world.client.http(url)  # traffic is what makes a failure count
            return env.stat(active) == 1

        wait_for(ejected, timeout=15, what="the 500-answering endpoint ejected",
                 describe=lambda: f"{active} = {env.stat(active)}")
        assert world.host_health("flaky")[f"{bad.ip}:8080"].get("failed_outlier_check") is True
        results = world.client.http_many(url, 20)
        assert [(r.status, r.served_by) for r in results] == [(200, "good")] * 20, [str(r) for r in results]
        assert env.stat(active) == 1
    finally:
        world.mesh.delete("dr-flaky")
    world.wait_cluster("flaky", lambda c: "outlier_detection" not in c, "outlier_detection removed")


def test_connection_pool_overflow_answers_503(world: World) -> None:
    """DestinationRule reference (ConnectionPoolSettings): "maxConnections: Maximum number of HTTP1
    /TCP connections to a destination host"; "http1MaxPendingRequests: Maximum number of requests
    that will be queued while waiting for a ready connection pool connection." With 1 and 1, six
    parallel requests to a backend that takes 1 s get some 503s from the client's sidecar itself
    (x-envoy-overloaded; the cluster's upstream_rq_pending_overflow counts them) next to 200s.
    Control: without the rule all six are 200."""
    url = f"http://{fqdn('slow')}:8080/delay/1"
    results = world.client.http_many(url, 6, parallel=True, timeout=10)
    assert [r.status for r in results] == [200] * 6, [str(r) for r in results]

    world.mesh.apply("dr-slow", destination_rule("slow", fqdn("slow"), {"connectionPool": {
        "tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}}))
    try:
        def limited(c: dict[str, Any]) -> bool:
            t = c["circuit_breakers"]["thresholds"][0]
            return t.get("max_connections") == 1 and t.get("max_pending_requests") == 1

        world.wait_cluster("slow", limited, "circuit_breakers max_connections 1, max_pending_requests 1")
        env = world.envoy
        overflow = env.cluster_stat_name(cluster_name("slow"), "upstream_rq_pending_overflow")
        before = env.stat(overflow)
        results = world.client.http_many(url, 6, parallel=True, timeout=10)
        statuses = Counter(r.status for r in results)
        assert statuses[200] >= 1 and statuses[503] >= 1 and set(statuses) == {200, 503}, [str(r) for r in results]
        for r in results:
            if r.status == 503:  # answered by the client's sidecar, never by the backend
                assert r.headers.get("x-envoy-overloaded") == "true" and r.served_by is None, r
        env.wait_stat(overflow, before + statuses[503])
    finally:
        world.mesh.delete("dr-slow")
    world.wait_cluster("slow", lambda c: not limited(c), "limits removed")


def test_policy_precedence_subset_over_port_level_over_top_level(world: World) -> None:
    """DestinationRule reference (TrafficPolicy.portLevelSettings): "Traffic policies specific to
    individual ports. Note that port level settings will override the destination-level
    settings." and (Subset.trafficPolicy): "Traffic policies that apply to this subset. Subsets
    inherit the traffic policies specified at the DestinationRule level. Settings specified at
    the subset level will override the corresponding settings specified at the DestinationRule
    level." (istio MergeSubsetTrafficPolicy). A generous top-level pool, a strict port-level pool
    for 8080 and a generous pool on subset v1: requests the VirtualService sends to subset v1 are
    all answered, the others overflow (503) at the port-level limit."""
    url = f"http://{fqdn('slow')}:8080/delay/1"
    generous = {"tcp": {"maxConnections": 100}, "http": {"http1MaxPendingRequests": 100}}
    strict = {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}
    rule = destination_rule("slow", fqdn("slow"), {
        "connectionPool": generous, "portLevelSettings": [{"port": {"number": 8080}, "connectionPool": strict}]})
    rule["spec"]["subsets"] = [{"name": "v1", "labels": {"version": "v1"},
                                "trafficPolicy": {"connectionPool": generous}}]
    world.mesh.apply("dr-slow", rule)
    world.mesh.apply("vs-slow", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "slow", "namespace": "default"},
        "spec": {"hosts": [fqdn("slow")], "http": [
            {"match": [{"headers": {"x-subset": {"exact": "v1"}}}],
             "route": [{"destination": {"host": fqdn("slow"), "subset": "v1"}}]},
            {"route": [{"destination": {"host": fqdn("slow")}}]}]}})
    subset = f"outbound|8080|v1|{fqdn('slow')}"
    try:
        def limits(name: str) -> tuple[int, int]:
            t = world.envoy.clusters()[name]["circuit_breakers"]["thresholds"][0]
            return t.get("max_connections"), t.get("max_pending_requests")

        wait_for(lambda: limits(cluster_name("slow")) == (1, 1) and limits(subset) == (100, 100),
                 timeout=15, what="port-level limits on the service cluster, the subset's on the subset cluster",
                 describe=lambda: f"clusters: {[n for n in world.envoy.clusters() if 'slow' in n]}")
        world.envoy.wait_endpoints(subset, {f"{world.pod('slow1').ip}:8080"})
        vhost_name = f"{fqdn('slow')}:8080"
        wait_for(lambda: subset in {r.get("route", {}).get("cluster")
                                    for r in (vhost(world.envoy, "8080", vhost_name) or {}).get("routes", [])},
                 timeout=15, what="the route to subset v1",
                 describe=lambda: f"vhost: {vhost(world.envoy, '8080', vhost_name)}")
        results = world.client.http_many(url, 6, parallel=True, headers={"x-subset": "v1"}, timeout=10)
        assert [r.status for r in results] == [200] * 6, [str(r) for r in results]
        statuses = Counter(r.status for r in world.client.http_many(url, 6, parallel=True, timeout=10))
        assert statuses[503] >= 1 and statuses[200] >= 1 and set(statuses) == {200, 503}, statuses
    finally:
        world.mesh.delete("vs-slow")
        world.mesh.delete("dr-slow")
    wait_for(lambda: subset not in world.envoy.clusters(), timeout=15, what=f"{subset} removed")


def test_max_requests_per_connection_opens_a_connection_per_request(world: World) -> None:
    """DestinationRule reference (HTTPSettings.maxRequestsPerConnection): "Maximum number of
    requests per connection to a backend. Setting this parameter to 1 disables keep alive." With
    it, 5 requests open 5 upstream connections. Control: without it the client's sidecar keeps
    its upstream connection alive and reuses it (at most one new connection for 5 requests)."""
    env, url = world.envoy, f"http://{fqdn('pool')}:8080/"
    connections = env.cluster_stat_name(cluster_name("pool"), "upstream_cx_total")
    before = env.stat(connections)
    assert [r.status for r in world.client.http_many(url, 5)] == [200] * 5
    assert env.stat(connections) - before <= 1

    world.mesh.apply("dr-pool", destination_rule("pool", fqdn("pool"), {"connectionPool": {
        "http": {"maxRequestsPerConnection": 1}}}))
    try:
        world.wait_cluster("pool", lambda c: max_requests_per_connection(c) == 1,
                           "max_requests_per_connection 1")
        before = env.stat(connections)
        assert [r.status for r in world.client.http_many(url, 5)] == [200] * 5
        env.wait_stat(connections, before + 5)
    finally:
        world.mesh.delete("dr-pool")
    world.wait_cluster("pool", lambda c: max_requests_per_connection(c) is None, "limit removed")


def test_istio_mutual_stays_plaintext_and_keeps_the_rest_of_the_rule(world: World) -> None:
    """xds-server has no mesh mTLS (no Istio CA, no agent): a DestinationRule `tls: {mode:
    ISTIO_MUTUAL}` is accepted with a warning naming the field, the connection stays plaintext
    (never a half-built TLS context) and the rest of the rule applies: with it,
    maxRequestsPerConnection 1 opens a connection per request, and requests are answered."""
    env, url = world.envoy, f"http://{fqdn('pool')}:8080/mtls"
    world.mesh.apply("dr-pool", destination_rule("pool", fqdn("pool"), {
        "tls": {"mode": "ISTIO_MUTUAL"}, "connectionPool": {"http": {"maxRequestsPerConnection": 1}}}))
    try:
        world.wait_cluster("pool", lambda c: max_requests_per_connection(c) == 1, "the rule's pool settings")
        assert "transport_socket" not in world.cluster("pool")
        connections = env.cluster_stat_name(cluster_name("pool"), "upstream_cx_total")
        before = env.stat(connections)
        assert [(r.status, r.served_by) for r in world.client.http_many(url, 3)] == [(200, "pool1")] * 3
        env.wait_stat(connections, before + 3)
        assert world.mesh.server is not None
        log = world.mesh.server.proc.log
        assert "spec.trafficPolicy.tls.mode: ISTIO_MUTUAL needs Istio's mesh mTLS" in log.read_text(), \
            world.mesh.server.proc.log_tail()
    finally:
        world.mesh.delete("dr-pool")
    world.wait_cluster("pool", lambda c: max_requests_per_connection(c) is None, "rule removed")


def test_tls_simple_origination_on_an_http_port(world: World) -> None:
    """DestinationRule reference (ClientTLSSettings SIMPLE): "Originate a TLS connection to the
    upstream endpoint." The client app speaks plain HTTP to secure:8443; its sidecar wraps it in
    TLS trusting the harness CA, sending the request's host as SNI (istiod's auto_sni) and
    checking it against the certificate (auto_san_validation). A CA that did not sign the
    backend's certificate fails verification: 503. Control: without the rule the sidecar speaks
    plaintext to the HTTPS backend and gets no answer (503 as well, never a 200)."""
    url = f"http://{fqdn('secure')}:8443/tls"
    r = world.client.http(url)
    assert r.status == 503 and r.served_by is None, r

    env, ca = world.envoy, str(world.certs.ca)
    try:
        world.mesh.apply("dr-secure", destination_rule("secure", fqdn("secure"), {
            "tls": {"mode": "SIMPLE", "caCertificates": ca}}))
        world.wait_cluster("secure", lambda c: trusted_ca(c) == ca, f"TLS trusting {ca}", port=8443)
        r = world.client.http(url)
        assert r.status == 200 and r.served_by == "secure1", r
        assert r.json()["sni"] == fqdn("secure"), r.json()

        world.mesh.apply("dr-secure", destination_rule("secure", fqdn("secure"), {
            "tls": {"mode": "SIMPLE", "caCertificates": world.wrong_ca}}))
        world.wait_cluster("secure", lambda c: trusted_ca(c) == world.wrong_ca, "TLS trusting the wrong CA",
                           port=8443)
        failed = env.cluster_stat_name(cluster_name("secure", 8443), "ssl.fail_verify_error")
        before = env.stat(failed)
        r = world.client.http(url)
        assert r.status == 503 and r.served_by is None, r
        env.wait_stat(failed, before + 1)
    finally:
        world.mesh.delete("dr-secure")
    world.wait_cluster("secure", lambda c: "transport_socket" not in c, "plaintext again", port=8443)


def test_tls_simple_origination_with_sni_and_subject_alt_names(world: World) -> None:
    """ClientTLSSettings `sni` ("SNI string to present to the server during TLS handshake") and
    `subjectAltNames` ("A list of alternate names to verify the subject identity in the
    certificate"), on a TCP port: the plain line the client sends to secure:9443 reaches the TLS
    echo inside TLS the client's sidecar originated, with the rule's SNI. A subjectAltNames entry
    the certificate does not carry fails the handshake (ssl.fail_verify_san): no reply. Control:
    without the rule the echo gets plaintext and answers nothing."""
    # More than a TLS record header's 5 bytes, so the echo fails its handshake at once.
    r = world.client.tcp(world.secure_vip, 9443, "plaintext line", timeout=3)
    assert r.reply == "", r

    env, ca = world.envoy, str(world.certs.ca)

    def tls(sans: list[str]) -> dict[str, Any]:
        return destination_rule("secure", fqdn("secure"), {"tls": {
            "mode": "SIMPLE", "caCertificates": ca, "sni": "secure.e2e.example", "subjectAltNames": sans}})

    def has_sni(c: dict[str, Any]) -> bool:
        return (upstream_tls(c) or {}).get("sni") == "secure.e2e.example"

    try:
        world.mesh.apply("dr-secure", tls([fqdn("secure")]))
        world.wait_cluster("secure", has_sni, "TLS with sni secure.e2e.example", port=9443)
        assert world.client.tcp(world.secure_vip, 9443, "hi").reply == "secure1 sni=secure.e2e.example hi"

        world.mesh.apply("dr-secure", tls(["nobody.e2e.example"]))
        world.wait_cluster("secure", lambda c: has_sni(c) and "nobody.e2e.example" in json.dumps(c),
                           "TLS checking SAN nobody.e2e.example", port=9443)
        failed = env.cluster_stat_name(cluster_name("secure", 9443), "ssl.fail_verify_san")
        before = env.stat(failed)
        r = world.client.tcp(world.secure_vip, 9443, "hi", timeout=3)
        assert r.reply == "", r
        env.wait_stat(failed, before + 1)
    finally:
        world.mesh.delete("dr-secure")
    world.wait_cluster("secure", lambda c: "transport_socket" not in c, "plaintext again", port=9443)


def upstream_tls(cluster: dict[str, Any]) -> dict[str, Any] | None:
    """The cluster's UpstreamTlsContext (config-dump JSON), or None for a plaintext cluster."""
    socket = cluster.get("transport_socket")
    if not socket:
        return None
    assert socket["name"] == "envoy.transport_sockets.tls", socket
    tls: dict[str, Any] = socket["typed_config"]
    return tls


def trusted_ca(cluster: dict[str, Any]) -> str | None:
    common = (upstream_tls(cluster) or {}).get("common_tls_context", {})
    validation = common.get("validation_context") or (
        common.get("combined_validation_context", {}).get("default_validation_context", {}))
    ca: str | None = validation.get("trusted_ca", {}).get("filename")
    return ca


def max_requests_per_connection(cluster: dict[str, Any]) -> int | None:
    options = cluster.get("typed_extension_protocol_options", {}).get(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
    value = options.get("common_http_protocol_options", {}).get("max_requests_per_connection")
    return None if value is None else int(value)


def vhost(envoy: Envoy, route: str, name: str) -> dict[str, Any] | None:
    for v in envoy.route_configs().get(route, {}).get("virtual_hosts", []):
        if v["name"] == name:
            return v
    return None


def route_hash_headers(envoy: Envoy, route: str, vhost_name: str) -> list[str]:
    """The header names the vhost's routes hash on (every route's hash_policy, in order)."""
    v = vhost(envoy, route, vhost_name) or {}
    return [p["header"]["header_name"] for r in v.get("routes", []) for p in r.get("route", {}).get("hash_policy", [])
            if "header" in p]
