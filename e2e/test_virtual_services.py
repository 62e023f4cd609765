"""VirtualService HTTP routes (with DestinationRule subsets) at traffic level, through a real
client sidecar: Istio's egress-task timeout on httpbin.org, canary weights shifted at run time,
header, URI, query, method and source-label matches, the missing catch-all (404), delegates, the
destination port, `gateways` and `exportTo`, retries, fault injection, mirroring, rewrites,
redirects, direct responses, header operations and CORS. Each behaviour is shown next to a
control: the same request without the rule, or another request the rule must not touch.

Pods (all but `sleep` without a sidecar, so what they receive is what the client's sidecar sent):
`sleep` (the client, captured); `httpbin` (HTTP on 80, `httpbin.org` in the node DNS);
`reviews-v1`/`reviews-v2` (app=reviews, version v1/v2, HTTP 9080); `echo` (HTTP 8080, behind the
services `echo`, `flaky` and `faults`); `mirror` (HTTP 8080); `alive` and `dead` (app=halfdead,
port 8080; nothing listens in `dead`, so connecting to it is refused).
The http app's httpbin-like paths (/delay/N, /fail/<code>/<n>/<key>, /_seen/...) are described in
e2e/harness/appserver.py.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from e2e.harness import Envoy, Mesh, Pod, views, wait_for

NS = "default"
REVIEWS = f"reviews.{NS}.svc.cluster.local"
ECHO = f"echo.{NS}.svc.cluster.local"
FLAKY = f"flaky.{NS}.svc.cluster.local"
FAULTS = f"faults.{NS}.svc.cluster.local"
HALFDEAD = f"halfdead.{NS}.svc.cluster.local"
HTTPBIN_CLUSTER = "outbound|80||httpbin.org"

# Istio's "Manage traffic to external services" task (egress-control, v1.23), verbatim.
SEED_SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin-ext
spec:
  hosts:
  - httpbin.org
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
"""
SEED_VIRTUAL_SERVICE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin-ext
spec:
  hosts:
  - httpbin.org
  http:
  - timeout: 3s
    route:
    - destination:
        host: httpbin.org
      weight: 100
"""


def virtual_service(name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def to(host: str, subset: str | None = None, weight: int | None = None, *, port: int | None = None) -> dict[str, Any]:
    """One `route[]` entry: a destination (short host name, as Istio's docs write them). Without
    `port` the destination's port is the listener's (istiod's GetDestinationCluster)."""
    destination: dict[str, Any] = {"host": host}
    if subset:
        destination["subset"] = subset
    if port:
        destination["port"] = {"number": port}
    return {"destination": destination, **({"weight": weight} if weight is not None else {})}


def prefix(path: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"uri": {"prefix": path}, **extra}]


@dataclass
class World:
    mesh: Mesh
    client: Pod
    envoy: Envoy
    pods: dict[str, Pod]

    def url(self, host: str, port: int, path: str) -> str:
        return f"http://{host}:{port}{path}"

    def served(self, url: str, count: int, **kw: Any) -> Counter[str | None]:
        """Which pod answered each of `count` requests (None: not our app, e.g. an error), sent on
        one connection: the sidecar routes and balances each request on its own."""
        return Counter(r.served_by for r in self.client.http_many(url, count, keep_alive=True, **kw))

    def routes(self, route_name: str, vhost: str) -> list[dict[str, Any]]:
        return views.vhost_routes(self.envoy.route_configs().get(route_name, {}), vhost)

    def wait_routes(self, route_name: str, vhost: str, ok: Callable[[list[dict[str, Any]]], bool],
                    what: str, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Until the client's Envoy holds routes for `vhost` that satisfy `ok` (the config the
        test then proves with traffic); on timeout, says what it has and what the server refused."""
        server = self.mesh.server
        assert server is not None
        return wait_for(lambda: (r := self.routes(route_name, vhost)) and ok(r) and r, timeout=timeout,
                        what=f"{vhost} in route {route_name!r}: {what}",
                        describe=lambda: f"routes {self.routes(route_name, vhost)}; "
                                         f"server rejected {server.rejected_inputs()}")

    def wait_default_route(self, route_name: str, vhost: str, cluster: str) -> None:
        """Until the vhost is back to the plain service route (its VirtualService deleted)."""
        self.wait_routes(route_name, vhost, lambda rs: len(rs) == 1 and views.route_clusters(rs[0]) == {cluster: 1}
                         and rs[0]["route"].get("timeout", "0s") == "0s", "default route again")


@pytest.fixture(scope="module")
def world(xds_mesh: Mesh) -> World:
    m = xds_mesh
    pods: dict[str, Pod] = {}

    def backend(name: str, port: int, labels: dict[str, str] | None = None, *, listen: bool = True) -> Pod:
        pods[name] = p = m.add_pod(name, labels=labels or {"app": name})
        if listen:
            p.serve_http(port)
        else:
            p.ports.append(port)  # declared in the Pod, nothing listening: connections are refused
        return p

    httpbin = backend("httpbin", 80)
    m.dns.set("httpbin.org", httpbin.ip)
    m.apply("se-httpbin-ext", SEED_SERVICE_ENTRY)

    backend("reviews-v1", 9080, {"app": "reviews", "version": "v1"})
    backend("reviews-v2", 9080, {"app": "reviews", "version": "v2"})
    backend("echo", 8080)
    backend("mirror", 8080)
    backend("alive", 8080, {"app": "halfdead"})
    backend("dead", 8080, {"app": "halfdead"}, listen=False)
    for name in ("reviews-v1", "reviews-v2", "echo", "mirror", "alive", "dead"):
        m.register(pods[name])
    m.service("reviews", ports=[9080])
    for name in ("echo", "flaky", "faults"):
        m.service(name, selector={"app": "echo"})
    m.service("mirror")
    m.service("halfdead")
    # Subsets by the version label (Istio's bookinfo destination-rule-reviews, without v3).
    m.apply("dr-reviews", {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": NS},
        "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                {"name": "v2", "labels": {"version": "v2"}}]},
    })

    client = m.add_pod("sleep", labels={"app": "sleep"})
    envoy = m.inject(client)
    envoy.wait_endpoints(f"outbound|9080||{REVIEWS}",
                         {f"{pods['reviews-v1'].ip}:9080", f"{pods['reviews-v2'].ip}:9080"})
    envoy.wait_endpoints(f"outbound|8080||{HALFDEAD}", {f"{pods['alive'].ip}:8080", f"{pods['dead'].ip}:8080"})
    for cluster in (f"outbound|8080||{ECHO}", f"outbound|8080||{FLAKY}", f"outbound|8080||{FAULTS}"):
        envoy.wait_endpoints(cluster, {f"{pods['echo'].ip}:8080"})
    envoy.wait_endpoints(f"outbound|8080||mirror.{NS}.svc.cluster.local", {f"{pods['mirror'].ip}:8080"})
    wait_for(lambda: envoy.endpoints().get(HTTPBIN_CLUSTER), timeout=15, what="httpbin.org resolved")
    return World(m, client, envoy, pods)


@pytest.fixture(autouse=True)
def _no_rejections(world: World) -> Iterator[None]:
    yield
    assert world.mesh.rejected_updates() == {}


def key() -> str:
    """A path component no other request uses, so a backend's hit count for it is this test's."""
    return uuid.uuid4().hex[:12]


# ---------------------------------------------------------------------------- seed 004: timeout


def test_seed_004_timeout_on_an_external_service(world: World) -> None:
    """Istio egress task, "Manage traffic to external services": "The request should return 200
    (OK) in approximately 5 seconds" without a rule; with the VirtualService's 3 s timeout "a 504
    (Gateway Timeout) appears after 3 seconds. Although httpbin.org was waiting 5 seconds, Istio
    cut off the request at 3 seconds." (httpbin.org is the `httpbin` pod in the node DNS.)"""
    env, url = world.envoy, "http://httpbin.org/delay/5"
    r = world.client.http(url, timeout=15)
    assert r.status == 200 and r.served_by == "httpbin", r
    assert 4.9 <= r.elapsed < 8, r.elapsed

    timeouts = env.cluster_stat(HTTPBIN_CLUSTER, "upstream_rq_timeout")
    world.mesh.apply("vs-httpbin-ext", SEED_VIRTUAL_SERVICE)
    try:
        routes = world.wait_routes("80", "httpbin.org:80", lambda rs: rs[0]["route"].get("timeout") == "3s",
                                   "timeout 3s")
        # One destination: a plain cluster (its weight 100 is not a weighted_clusters entry).
        assert [views.route_clusters(rt) for rt in routes] == [{HTTPBIN_CLUSTER: 1}]
        r = world.client.http(url, timeout=15)
        assert r.status == 504, (r, world.routes("80", "httpbin.org:80"))
        assert r.body == "upstream request timeout", r
        assert 2.5 <= r.elapsed <= 4.5, r.elapsed
        # Response flag UT: the request timed out upstream (counted per cluster).
        env.wait_stat(env.cluster_stat_name(HTTPBIN_CLUSTER, "upstream_rq_timeout"), timeouts + 1)
    finally:
        world.mesh.delete("vs-httpbin-ext")
    world.wait_default_route("80", "httpbin.org:80", HTTPBIN_CLUSTER)


# ---------------------------------------------------------------------------- subsets and weights


def reviews_split(v1: int, v2: int) -> dict[str, Any]:
    return virtual_service("reviews", {"hosts": ["reviews"], "http": [{"route": [
        to("reviews", "v1", v1), to("reviews", "v2", v2)]}]})


def test_subset_weights_shift_at_runtime(world: World) -> None:
    """Canary: a route to subsets v1 and v2 of reviews weighted 100/0 sends everything to the v1
    pod; the same VirtualService changed to 50/50 while the client runs splits requests between
    both, and 1/3 (weights need not sum to 100) a quarter to v1. Control: without the
    VirtualService both pods answer."""
    url = world.url(REVIEWS, 9080, "/")
    subset = {v: f"outbound|9080|{v}|{REVIEWS}" for v in ("v1", "v2")}
    for v in ("v1", "v2"):
        world.envoy.wait_endpoints(subset[v], {f"{world.pods[f'reviews-{v}'].ip}:9080"})
    wait_for(lambda: set(world.served(url, 20)) == {"reviews-v1", "reviews-v2"}, timeout=10,
             what="both reviews pods answer without a VirtualService")

    world.mesh.apply("vs-reviews", reviews_split(100, 0))
    try:
        world.wait_routes("9080", f"{REVIEWS}:9080",
                          lambda rs: views.route_clusters(rs[0]).keys() == {subset["v1"]}, "all to v1")
        assert world.served(url, 100) == {"reviews-v1": 100}

        world.mesh.apply("vs-reviews", reviews_split(50, 50))
        routes = world.wait_routes("9080", f"{REVIEWS}:9080",
                                   lambda rs: views.route_clusters(rs[0]).keys() == set(subset.values()), "50/50")
        assert views.route_clusters(routes[0]) == {subset["v1"]: 50, subset["v2"]: 50}
        got = world.served(url, 200)
        # Binomial(200, 0.5): 60..140 is more than 5 standard deviations either side.
        assert set(got) == {"reviews-v1", "reviews-v2"} and 60 <= got["reviews-v1"] <= 140, got

        # Weights need not sum to 100: Envoy splits by their sum, 1/3 is a quarter to v1.
        world.mesh.apply("vs-reviews", reviews_split(1, 3))
        world.wait_routes("9080", f"{REVIEWS}:9080",
                          lambda rs: views.route_clusters(rs[0]) == {subset["v1"]: 1, subset["v2"]: 3}, "1/3")
        got = world.served(url, 400)
        # Binomial(400, 0.25): mean 100, sd 8.7; 60..140 is more than 4.5 sd either side.
        assert set(got) == {"reviews-v1", "reviews-v2"} and 60 <= got["reviews-v1"] <= 140, got
    finally:
        world.mesh.delete("vs-reviews")
    world.wait_default_route("9080", f"{REVIEWS}:9080", f"outbound|9080||{REVIEWS}")


# ---------------------------------------------------------------------------- matches


def test_header_and_uri_matches(world: World) -> None:
    """Istio's request-routing task (`end-user: jason` goes to v2, everyone else to v1), with URI
    exact and prefix matches, `ignoreUriCase`, and a case-sensitive prefix as its control."""
    world.mesh.apply("vs-reviews", virtual_service("reviews", {"hosts": ["reviews"], "http": [
        {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [to("reviews", "v2")]},
        {"name": "exact", "match": [{"uri": {"exact": "/exact"}}], "route": [to("reviews", "v2")]},
        {"name": "nocase", "match": prefix("/nocase", ignoreUriCase=True), "route": [to("reviews", "v2")]},
        {"name": "case", "match": prefix("/Case"), "route": [to("reviews", "v2")]},
        {"name": "rest", "route": [to("reviews", "v1")]},
    ]}))
    try:
        world.wait_routes("9080", f"{REVIEWS}:9080", lambda rs: len(rs) == 5, "five routes")

        def answered(path: str, **headers: str) -> set[str | None]:
            return set(world.served(world.url(REVIEWS, 9080, path), 6, headers=headers or None))

        assert answered("/") == {"reviews-v1"}
        assert answered("/", **{"end-user": "jason"}) == {"reviews-v2"}
        assert answered("/", **{"end-user": "bob"}) == {"reviews-v1"}
        assert answered("/exact") == {"reviews-v2"}
        assert answered("/exact/more") == {"reviews-v1"}
        for path in ("/nocase/a", "/NoCase/b", "/NOCASE"):
            assert answered(path) == {"reviews-v2"}, path
        assert answered("/Case/a") == {"reviews-v2"}
        assert answered("/case/a") == {"reviews-v1"}
    finally:
        world.mesh.delete("vs-reviews")
    world.wait_default_route("9080", f"{REVIEWS}:9080", f"outbound|9080||{REVIEWS}")


def test_query_method_without_headers_and_no_catch_all(world: World) -> None:
    """`queryParams`, `method` and `withoutHeaders` matches; a VirtualService without a catch-all
    rule leaves other requests without a route: 404 (response flag NR)."""
    world.mesh.apply("vs-reviews", virtual_service("reviews", {"hosts": ["reviews"], "http": [
        {"name": "query", "match": [{"queryParams": {"q": {"exact": "1"}}}], "route": [to("reviews", "v2")]},
        {"name": "post", "match": [{"method": {"exact": "POST"}}], "route": [to("reviews", "v2")]},
        {"name": "without", "match": prefix("/w", withoutHeaders={"x-skip": {}}), "route": [to("reviews", "v2")]},
        {"name": "v1", "match": prefix("/v1"), "route": [to("reviews", "v1")]},
    ]}))
    try:
        world.wait_routes("9080", f"{REVIEWS}:9080", lambda rs: len(rs) == 4, "four routes")

        def answered(path: str, count: int = 4, **headers: str) -> set[tuple[int | None, str | None]]:
            results = world.client.http_many(world.url(REVIEWS, 9080, path), count, headers=headers or None)
            return {(r.status, r.served_by) for r in results}

        assert answered("/v1/x?q=1") == {(200, "reviews-v2")}
        assert answered("/v1/x?q=2") == {(200, "reviews-v1")}
        r = world.client.http(world.url(REVIEWS, 9080, "/v1/x"), method="POST")
        assert r.served_by == "reviews-v2", r
        assert answered("/w/x") == {(200, "reviews-v2")}
        no_route = sum(v for k, v in world.envoy.stats("no_route").items() if k.endswith(".no_route"))
        assert answered("/w/x", 2, **{"x-skip": "1"}) == {(404, None)}
        assert answered("/other", 2) == {(404, None)}
        wait_for(lambda: sum(v for k, v in world.envoy.stats("no_route").items()
                             if k.endswith(".no_route")) >= no_route + 4, timeout=5, what="4 more no_route (NR)")
    finally:
        world.mesh.delete("vs-reviews")
    world.wait_default_route("9080", f"{REVIEWS}:9080", f"outbound|9080||{REVIEWS}")


def test_regex_header_authority_scheme_port_and_source_namespace_matches(world: World) -> None:
    """The other match fields: a URI regex (whole path), header prefix and regex, authority,
    scheme; `port` and `sourceNamespace` decide per proxy whether a rule exists at all, so rules
    naming another port or namespace are left out and their requests fall to the catch-all."""
    v2 = [to("reviews", "v2")]
    world.mesh.apply("vs-reviews", virtual_service("reviews", {"hosts": ["reviews"], "http": [
        {"name": "regex", "match": [{"uri": {"regex": "/r[0-9]+"}}], "route": v2},
        {"name": "header-prefix", "match": [{"headers": {"x-user": {"prefix": "ja"}}}], "route": v2},
        {"name": "header-regex", "match": [{"headers": {"x-tier": {"regex": "gold|silver"}}}], "route": v2},
        {"name": "authority", "match": [{"authority": {"prefix": "reviews:"}}], "route": v2},
        {"name": "scheme", "match": prefix("/scheme", scheme={"exact": "http"}), "route": v2},
        {"name": "other-port", "match": prefix("/p", port=9999), "route": v2},
        {"name": "this-port", "match": prefix("/q", port=9080), "route": v2},
        {"name": "other-ns", "match": prefix("/ons", sourceNamespace="other"), "route": v2},
        {"name": "this-ns", "match": prefix("/ns", sourceNamespace=NS), "route": v2},
        {"name": "rest", "route": [to("reviews", "v1")]},
    ]}))
    try:
        routes = world.wait_routes("9080", f"{REVIEWS}:9080", lambda rs: len(rs) == 8, "eight routes")
        assert [r.get("name") for r in routes] == ["regex", "header-prefix", "header-regex", "authority",
                                                   "scheme", "this-port", "this-ns", "rest"]

        def answered(path: str, host: str = REVIEWS, **headers: str) -> set[str | None]:
            return set(world.served(world.url(host, 9080, path), 4, headers=headers or None))

        v1, v2_pod = {"reviews-v1"}, {"reviews-v2"}
        assert answered("/r12") == v2_pod
        assert answered("/r12x") == v1 and answered("/rx") == v1  # the regex matches whole paths
        assert answered("/", **{"x-user": "jason"}) == v2_pod and answered("/", **{"x-user": "bob"}) == v1
        assert answered("/", **{"x-tier": "gold"}) == v2_pod and answered("/", **{"x-tier": "goldx"}) == v1
        assert answered("/", host="reviews") == v2_pod  # Host "reviews:9080", same vhost
        assert answered("/scheme") == v2_pod
        assert answered("/p") == v1 and answered("/q") == v2_pod
        assert answered("/ons") == v1 and answered("/ns") == v2_pod
    finally:
        world.mesh.delete("vs-reviews")
    world.wait_default_route("9080", f"{REVIEWS}:9080", f"outbound|9080||{REVIEWS}")


def test_source_labels_select_routes_per_client(world: World) -> None:
    """`sourceLabels` is decided per proxy when its routes are built: the client (app=sleep)
    gets the rule for its labels; a VirtualService all of whose rules name other clients gives
    this client no routes at all, so the service keeps its default route (both pods answer)."""
    url = world.url(REVIEWS, 9080, "/")
    world.mesh.apply("vs-reviews", virtual_service("reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"sourceLabels": {"app": "sleep"}}], "route": [to("reviews", "v2")]},
        {"route": [to("reviews", "v1")]},
    ]}))
    try:
        world.wait_routes("9080", f"{REVIEWS}:9080",
                          lambda rs: views.route_clusters(rs[0]).keys() == {f"outbound|9080|v2|{REVIEWS}"},
                          "the sleep rule first")
        assert world.served(url, 6) == {"reviews-v2": 6}

        world.mesh.apply("vs-reviews", virtual_service("reviews", {"hosts": ["reviews"], "http": [
            {"match": [{"sourceLabels": {"app": "someone-else"}}], "route": [to("reviews", "v2")]}]}))
        world.wait_default_route("9080", f"{REVIEWS}:9080", f"outbound|9080||{REVIEWS}")
        wait_for(lambda: set(world.served(url, 20)) == {"reviews-v1", "reviews-v2"}, timeout=10,
                 what="both reviews pods answer through the default route")
    finally:
        world.mesh.delete("vs-reviews")
    world.wait_default_route("9080", f"{REVIEWS}:9080", f"outbound|9080||{REVIEWS}")


def test_delegate_virtual_service(world: World) -> None:
    """A root rule with `delegate` is replaced by the delegate's routes, each of which must fit
    inside the root's match: /d/v2 goes where the delegate says (reviews v2); the delegate's
    /other route conflicts with the root's /d prefix and is dropped, so /other falls to the
    root's catch-all (echo), as does /d/else, which no delegate route matches."""
    delegate = virtual_service("faults-delegate", {"http": [
        {"match": prefix("/d/v2"), "route": [to("reviews", "v2", port=9080)]},
        {"match": prefix("/other"), "route": [to("reviews", "v2", port=9080)]},
    ]})
    root = virtual_service("faults", {"hosts": ["faults"], "http": [
        {"match": prefix("/d"), "delegate": {"name": "faults-delegate", "namespace": NS}},
        {"route": [to("faults")]},
    ]})
    world.mesh.apply("vs-faults", delegate, root)
    try:
        world.wait_routes("8080", f"{FAULTS}:8080",
                          lambda rs: any(f"outbound|9080|v2|{REVIEWS}" in views.route_clusters(r) for r in rs),
                          "the delegate's route to reviews v2")
        for path, pod in (("/d/v2/x", "reviews-v2"), ("/other", "echo"), ("/d/else", "echo")):
            r = world.client.http(world.url(FAULTS, 8080, path))
            assert r.status == 200 and r.served_by == pod, (path, r)
    finally:
        world.mesh.delete("vs-faults")
    world.wait_default_route("8080", f"{FAULTS}:8080", f"outbound|8080||{FAULTS}")


def test_destination_port_defaults_to_the_listener_port(world: World) -> None:
    """A destination without `port` uses the port the request came in on: a rule on flaky:8080
    sending to reviews (which has only 9080) names a cluster that does not exist, so 503 (NC);
    with `port: 9080` the same rule reaches reviews."""
    url = world.url(FLAKY, 8080, "/")
    for port, expected in ((None, {(503, None)}), (9080, {(200, "reviews-v1"), (200, "reviews-v2")})):
        world.mesh.apply("vs-flaky", virtual_service("flaky", {"hosts": ["flaky"], "http": [
            {"route": [to("reviews", port=port)]}]}))
        cluster = f"outbound|{port or 8080}||{REVIEWS}"
        world.wait_routes("8080", f"{FLAKY}:8080", lambda rs, c=cluster: views.route_clusters(rs[0]) == {c: 1},
                          f"a route to {cluster}")
        got = wait_for(lambda e=expected: (g := {(r.status, r.served_by) for r in
                                                 world.client.http_many(url, 12, keep_alive=True)}) == e and g,
                       timeout=10, what=f"flaky answered by {expected}")
        assert got == expected
    world.mesh.delete("vs-flaky")
    world.wait_default_route("8080", f"{FLAKY}:8080", f"outbound|8080||{FLAKY}")


def pushed(world: World) -> None:
    """Until the client has every change made before this call: a marker route on another
    service, applied now, arrives after them (for a change that may rightly alter nothing)."""
    marker = key()
    world.mesh.apply("vs-marker", virtual_service("marker", {"hosts": ["faults"], "http": [
        {"match": prefix(f"/{marker}"), "route": [to("faults")]}, {"route": [to("faults")]}]}))
    world.wait_routes("8080", f"{FAULTS}:8080",
                      lambda rs: rs[0].get("match", {}).get("prefix") == f"/{marker}", "the marker")


def test_oldest_virtual_service_wins_a_host(world: World) -> None:
    """Two VirtualServices for one host are not merged for sidecars: the oldest one's routes
    are used (creation time first, before the names, which would pick the other)."""
    def answering(name: str, created: str) -> dict[str, Any]:
        doc = virtual_service(name, {"hosts": ["flaky"], "http": [
            {"directResponse": {"status": 200, "body": {"string": name}}}]})
        doc["metadata"]["creationTimestamp"] = created
        return doc

    url = world.url(FLAKY, 8080, "/")
    world.mesh.apply("vs-flaky-older", answering("z-older", "2024-01-01T00:00:00Z"))
    try:
        world.wait_routes("8080", f"{FLAKY}:8080", lambda rs: "direct_response" in rs[0], "the older rule")
        assert world.client.http(url).body == "z-older"
        world.mesh.apply("vs-flaky-newer", answering("a-newer", "2025-01-01T00:00:00Z"))
        pushed(world)
        assert {r.body for r in world.client.http_many(url, 4, keep_alive=True)} == {"z-older"}
        world.mesh.delete("vs-flaky-older")
        world.wait_routes("8080", f"{FLAKY}:8080",
                          lambda rs: rs[0].get("direct_response", {}).get("body", {}).get("inline_string") == "a-newer",
                          "the newer rule once the older is gone")
        assert world.client.http(url).body == "a-newer"
    finally:
        world.mesh.delete("vs-flaky-older")
        world.mesh.delete("vs-flaky-newer")
        world.mesh.delete("vs-marker")
    world.wait_default_route("8080", f"{FLAKY}:8080", f"outbound|8080||{FLAKY}")
    world.wait_default_route("8080", f"{FAULTS}:8080", f"outbound|8080||{FAULTS}")


def test_gateways_and_export_to_decide_who_sees_a_rule(world: World) -> None:
    """A VirtualService in another namespace for the short host `reviews` is about reviews.other,
    not reviews.default. One bound only to a gateway does not reach sidecars; adding `mesh` does.
    One in another namespace for reviews.default with `exportTo: ["."]` is visible only there,
    not to this client in `default`; `exportTo: ["*"]` reaches it."""
    url = world.url(REVIEWS, 9080, "/")
    all_v2 = {"hosts": ["reviews"], "http": [{"route": [to("reviews", "v2")]}]}
    v2_cluster = f"outbound|9080|v2|{REVIEWS}"

    def to_v2() -> bool:
        return views.route_clusters(world.routes("9080", f"{REVIEWS}:9080")[0]) == {v2_cluster: 1}

    def rule_applies(spec: dict[str, Any], namespace: str = NS) -> bool:
        world.mesh.apply("vs-reviews", virtual_service("reviews", spec, namespace))
        pushed(world)
        applies = to_v2()
        assert set(world.served(url, 12)) == ({"reviews-v2"} if applies else {"reviews-v1", "reviews-v2"})
        return applies

    try:
        # A short host names the service in the VirtualService's own namespace: reviews.other.
        assert not rule_applies(all_v2, "other")
        assert not rule_applies({**all_v2, "gateways": ["istio-system/ingress"]})
        assert rule_applies({**all_v2, "gateways": ["istio-system/ingress", "mesh"]})
        world.mesh.delete("vs-reviews")
        world.wait_default_route("9080", f"{REVIEWS}:9080", f"outbound|9080||{REVIEWS}")
        # From another namespace the names are written in full (short ones resolve there).
        full = {"hosts": [REVIEWS], "http": [{"route": [{"destination": {"host": REVIEWS, "subset": "v2"}}]}]}
        assert not rule_applies({**full, "exportTo": ["."]}, "other")
        assert rule_applies({**full, "exportTo": ["*"]}, "other")
    finally:
        world.mesh.delete("vs-reviews")
        world.mesh.delete("vs-marker")
    world.wait_default_route("9080", f"{REVIEWS}:9080", f"outbound|9080||{REVIEWS}")
    world.wait_default_route("8080", f"{FAULTS}:8080", f"outbound|8080||{FAULTS}")


# ---------------------------------------------------------------------------- retries


def test_retries_on_5xx_reach_a_backend_that_fails_once(world: World) -> None:
    """`retries {attempts: 2, retryOn: 5xx}`: a backend answering 503 once, then 200, gives the
    client 200 after two upstream tries; one that fails five times is tried three times (the
    first try and two retries) and its 503 reaches the client. `retryOn: "503"` retries that
    status (three tries) and not a 500 (one)."""
    echo = world.pods["echo"]
    world.mesh.apply("vs-flaky", virtual_service("flaky", {"hosts": ["flaky"], "http": [
        {"route": [to("flaky")], "retries": {"attempts": 2, "retryOn": "5xx"}}]}))
    try:
        world.wait_routes("8080", f"{FLAKY}:8080",
                          lambda rs: "5xx" in rs[0]["route"].get("retry_policy", {}).get("retry_on", ""),
                          "retry_on 5xx")
        once = f"/fail/503/1/{key()}"
        r = world.client.http(world.url(FLAKY, 8080, once))
        assert r.status == 200 and r.served_by == "echo", r
        assert echo.seen(once)["hits"] == 2

        always = f"/fail/503/5/{key()}"
        r = world.client.http(world.url(FLAKY, 8080, always))
        assert r.status == 503, r
        assert echo.seen(always)["hits"] == 3

        # Status codes in retryOn: retriable_status_codes; a code not listed is not retried.
        world.mesh.apply("vs-flaky", virtual_service("flaky", {"hosts": ["flaky"], "http": [
            {"route": [to("flaky")], "retries": {"attempts": 2, "retryOn": "503"}}]}))
        world.wait_routes("8080", f"{FLAKY}:8080",
                          lambda rs: rs[0]["route"].get("retry_policy", {}).get("retriable_status_codes") == [503],
                          "retriable_status_codes [503]")
        for code, hits in (("503", 3), ("500", 1)):
            path = f"/fail/{code}/5/{key()}"
            r = world.client.http(world.url(FLAKY, 8080, path))
            assert r.status == int(code) and echo.seen(path)["hits"] == hits, (code, r)
    finally:
        world.mesh.delete("vs-flaky")
    world.wait_default_route("8080", f"{FLAKY}:8080", f"outbound|8080||{FLAKY}")


def test_default_retry_policy_does_not_retry_503(world: World) -> None:
    """Istio's default retry policy (no `retries`): connect-failure, refused-stream, unavailable,
    cancelled, retriable-status-codes with no status codes listed, so an upstream 503 is returned
    after one try, with and without a VirtualService. Control: the backend answers 200 on the
    next request (it fails once)."""
    echo = world.pods["echo"]
    once = f"/fail/503/1/{key()}"
    r = world.client.http(world.url(FLAKY, 8080, once))
    assert r.status == 503 and echo.seen(once)["hits"] == 1, r

    world.mesh.apply("vs-flaky", virtual_service("flaky", {"hosts": ["flaky"], "http": [
        {"route": [to("flaky")], "timeout": "10s"}]}))
    try:
        routes = world.wait_routes("8080", f"{FLAKY}:8080", lambda rs: rs[0]["route"].get("timeout") == "10s",
                                   "the VirtualService's route (timeout 10s)")
        policy = routes[0]["route"]["retry_policy"]
        assert policy["retry_on"] == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
        assert policy["num_retries"] == 2 and not policy.get("retriable_status_codes")
        once = f"/fail/503/1/{key()}"
        r = world.client.http(world.url(FLAKY, 8080, once))
        assert r.status == 503 and echo.seen(once)["hits"] == 1, r
        r = world.client.http(world.url(FLAKY, 8080, once))
        assert r.status == 200 and echo.seen(once)["hits"] == 2, r
    finally:
        world.mesh.delete("vs-flaky")
    world.wait_default_route("8080", f"{FLAKY}:8080", f"outbound|8080||{FLAKY}")


def test_zero_attempts_disable_retries(world: World) -> None:
    """`retries {attempts: 0}` removes the retry policy. halfdead has a live and a refusing
    endpoint: with the default policy every request succeeds (a connect failure is retried on
    the other host); with retries disabled the requests that pick the dead endpoint fail (503)."""
    env, url = world.envoy, world.url(HALFDEAD, 8080, "/")
    retried = env.cluster_stat_name(f"outbound|8080||{HALFDEAD}", "upstream_rq_retry")
    before = env.stat(retried)
    results = world.client.http_many(url, 20)
    assert [r.served_by for r in results] == ["alive"] * 20, [str(r) for r in results]
    env.wait_stat(retried, before + 1)  # the control did meet the dead endpoint, and retried

    world.mesh.apply("vs-halfdead", virtual_service("halfdead", {"hosts": ["halfdead"], "http": [
        {"route": [to("halfdead")], "retries": {"attempts": 0}}]}))
    try:
        routes = world.wait_routes("8080", f"{HALFDEAD}:8080", lambda rs: "retry_policy" not in rs[0]["route"],
                                   "no retry policy")
        assert views.route_clusters(routes[0]) == {f"outbound|8080||{HALFDEAD}": 1}
        before = env.stat(retried)
        statuses = Counter(r.status for r in world.client.http_many(url, 20))
        # Each request picks the dead endpoint with probability 1/2: all 20 avoiding it is ~1e-6.
        assert statuses[503] >= 1 and statuses[503] + statuses[200] == 20, statuses
        assert env.stat(retried) == before
    finally:
        world.mesh.delete("vs-halfdead")
    world.wait_default_route("8080", f"{HALFDEAD}:8080", f"outbound|8080||{HALFDEAD}")


# ---------------------------------------------------------------------------- fault injection


def test_fault_abort_and_delay(world: World) -> None:
    """HTTPFaultInjection: a 100 % abort answers 418 without reaching the backend; an abort
    without `percentage` aborts nothing (as Envoy applies it); a 100 % fixed delay of 2 s holds
    the request at least 2 s before it is served. Control: the unfaulted route answers at once."""
    echo = world.pods["echo"]
    world.mesh.apply("vs-faults", virtual_service("faults", {"hosts": ["faults"], "http": [
        {"match": prefix("/abort"), "route": [to("faults")],
         "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 100}}}},
        {"match": prefix("/unset-abort"), "route": [to("faults")], "fault": {"abort": {"httpStatus": 418}}},
        {"match": prefix("/slow"), "route": [to("faults")],
         "fault": {"delay": {"fixedDelay": "2s", "percentage": {"value": 100}}}},
        {"route": [to("faults")]},
    ]}))
    try:
        world.wait_routes("8080", f"{FAULTS}:8080", lambda rs: len(rs) == 4, "four routes")
        k = key()
        r = world.client.http(world.url(FAULTS, 8080, f"/abort/{k}"))
        assert r.status == 418 and r.body == "fault filter abort", r
        assert echo.seen(f"/abort/{k}")["hits"] == 0

        r = world.client.http(world.url(FAULTS, 8080, f"/unset-abort/{k}"))
        assert r.status == 200 and r.served_by == "echo", r

        r = world.client.http(world.url(FAULTS, 8080, f"/slow/{k}"), timeout=10)
        assert r.status == 200 and r.served_by == "echo", r
        assert 2.0 <= r.elapsed < 4.5, r.elapsed

        r = world.client.http(world.url(FAULTS, 8080, f"/plain/{k}"))
        assert r.status == 200 and r.elapsed < 1.5, (r, r.elapsed)
    finally:
        world.mesh.delete("vs-faults")
    world.wait_default_route("8080", f"{FAULTS}:8080", f"outbound|8080||{FAULTS}")


# ---------------------------------------------------------------------------- the other actions

ALLOWED_ORIGIN = "http://ok.example"
ECHO_RULES: list[dict[str, Any]] = [
    {"name": "mirror", "match": prefix("/mirror"), "route": [to("echo")],
     "mirror": {"host": "mirror"}, "mirrorPercentage": {"value": 100}},
    {"name": "no-mirror", "match": prefix("/unmirrored"), "route": [to("echo")],
     "mirror": {"host": "mirror"}, "mirrorPercentage": {"value": 0}},
    {"name": "rewrite", "match": prefix("/old"), "route": [to("echo")],
     "rewrite": {"uri": "/new", "authority": "rewritten.example"}},
    {"name": "regex-rewrite", "match": [{"uri": {"regex": "/rx/([a-z]+)/([0-9]+)"}}], "route": [to("echo")],
     "rewrite": {"uriRegexRewrite": {"match": "/rx/([a-z]+)/([0-9]+)", "rewrite": "/\\2/\\1"}}},
    {"name": "redirect", "match": prefix("/moved"),
     "redirect": {"uri": "/elsewhere", "authority": "other.example"}},
    {"name": "direct", "match": prefix("/direct"),
     "directResponse": {"status": 203, "body": {"string": "direct hello"}}},
    {"name": "headers", "match": prefix("/headers"), "route": [to("echo")],
     "headers": {"request": {"set": {"x-set": "yes"}, "add": {"x-add": "a"}, "remove": ["x-remove"]},
                 "response": {"set": {"x-resp": "set"}, "remove": ["x-served-by"]}}},
    {"name": "destination-headers", "match": prefix("/dest-headers"),
     "route": [{**to("echo"), "headers": {"request": {"set": {"x-dest": "echo"}},
                                          "response": {"set": {"x-dest-resp": "echo"}}}}]},
    {"name": "cors", "match": prefix("/cors"), "route": [to("echo")],
     "corsPolicy": {"allowOrigins": [{"exact": ALLOWED_ORIGIN}], "allowMethods": ["GET", "POST"],
                    "allowHeaders": ["x-custom"], "maxAge": "60s"}},
    {"name": "rest", "route": [to("echo")]},
]


@pytest.fixture(scope="module")
def echo_rules(world: World) -> Iterator[World]:
    """One VirtualService on `echo` with a rule per action, matched by path prefix."""
    world.mesh.apply("vs-echo", virtual_service("echo", {"hosts": ["echo"], "http": ECHO_RULES}))
    try:
        world.wait_routes("8080", f"{ECHO}:8080", lambda rs: len(rs) == len(ECHO_RULES),
                          f"{len(ECHO_RULES)} routes")
        yield world
    finally:
        world.mesh.delete("vs-echo")


def test_mirror_sends_a_copy(echo_rules: World) -> None:
    """`mirror` with `mirrorPercentage: 100`: the echo pod answers, and the mirror pod receives a
    copy with the original Host (Istio disables Envoy's `-shadow` host suffix). Controls: a
    request on another rule, and one on a rule mirroring 0 %, are not copied."""
    w, echo, mirror = echo_rules, echo_rules.pods["echo"], echo_rules.pods["mirror"]
    k = key()
    for path in (f"/plain/{k}", f"/unmirrored/{k}"):
        r = w.client.http(w.url(ECHO, 8080, path))
        assert r.served_by == "echo", r
    r = w.client.http(w.url(ECHO, 8080, f"/mirror/{k}"))
    assert r.served_by == "echo", r
    seen = wait_for(lambda: (s := mirror.seen(f"/mirror/{k}"))["hits"] and s, timeout=5,
                    what="the mirror receives the copy")
    assert seen["hits"] == 1 and seen["last"]["host"] == f"{ECHO}:8080", seen
    assert echo.seen(f"/mirror/{k}")["hits"] == 1
    assert mirror.seen(f"/plain/{k}")["hits"] == 0
    # mirrorPercentage 0: no copy (sent before the /mirror request, whose copy has arrived).
    assert mirror.seen(f"/unmirrored/{k}")["hits"] == 0


def test_rewrite_uri_and_authority(echo_rules: World) -> None:
    """`rewrite {uri: /new, authority: rewritten.example}`: the matched prefix /old is replaced
    (the rest of the path and the query kept) and the backend sees the new Host;
    `uriRegexRewrite` substitutes the regex's capture groups."""
    w = echo_rules
    r = w.client.http(w.url(ECHO, 8080, "/old/page?q=1"))
    assert r.served_by == "echo", r
    assert (r.json()["path"], r.json()["host"]) == ("/new/page?q=1", "rewritten.example"), r
    r = w.client.http(w.url(ECHO, 8080, "/rx/abc/12"))  # uriRegexRewrite: capture groups swapped
    assert r.served_by == "echo" and r.json()["path"] == "/12/abc", r
    r = w.client.http(w.url(ECHO, 8080, "/other/page"))  # control: another rule, untouched
    assert (r.json()["path"], r.json()["host"]) == ("/other/page", f"{ECHO}:8080"), r


def test_redirect_and_direct_response(echo_rules: World) -> None:
    """`redirect {uri, authority}` answers 301 with the new Location; `directResponse` answers
    its status and body; neither reaches the backend."""
    w, echo = echo_rules, echo_rules.pods["echo"]
    k = key()
    r = w.client.http(w.url(ECHO, 8080, f"/moved/{k}"))
    assert r.status == 301 and r.headers.get("location") == "http://other.example/elsewhere", r
    r = w.client.http(w.url(ECHO, 8080, f"/direct/{k}"))
    assert (r.status, r.body) == (203, "direct hello"), r
    assert echo.seen(f"/moved/{k}")["hits"] == 0 and echo.seen(f"/direct/{k}")["hits"] == 0


def test_header_operations(echo_rules: World) -> None:
    """`headers.request` set/add/remove reach the backend as written; `headers.response` set
    and remove reach the client; so do a destination's own `headers`. Control: another rule
    passes the same headers untouched."""
    w = echo_rules
    sent = {"x-remove": "gone", "x-keep": "kept"}
    r = w.client.http(w.url(ECHO, 8080, "/headers"), headers=sent)
    assert r.status == 200, r
    got = r.json()["headers"]
    assert (got.get("x-set"), got.get("x-add"), got.get("x-keep")) == ("yes", "a", "kept"), got
    assert "x-remove" not in got, got
    assert r.headers.get("x-resp") == "set" and "x-served-by" not in r.headers, r.headers

    r = w.client.http(w.url(ECHO, 8080, "/dest-headers"))  # a destination's own header operations
    assert r.json()["headers"].get("x-dest") == "echo" and r.headers.get("x-dest-resp") == "echo", r

    r = w.client.http(w.url(ECHO, 8080, "/plain"), headers=sent)
    got = r.json()["headers"]
    assert got.get("x-remove") == "gone" and "x-set" not in got and "x-dest" not in got, got
    assert r.served_by == "echo" and "x-resp" not in r.headers, r.headers


def test_cors_preflight(echo_rules: World) -> None:
    """`corsPolicy`: a preflight from an allowed origin is answered with the allow headers; one
    from another origin gets no Access-Control-Allow-Origin."""
    w = echo_rules
    url = w.url(ECHO, 8080, "/cors")

    def preflight(origin: str) -> dict[str, str]:
        r = w.client.http(url, method="OPTIONS", headers={
            "origin": origin, "access-control-request-method": "POST"})
        assert r.status == 200, r
        return r.headers

    allowed = preflight(ALLOWED_ORIGIN)
    assert allowed.get("access-control-allow-origin") == ALLOWED_ORIGIN, allowed
    assert "POST" in allowed.get("access-control-allow-methods", ""), allowed
    assert allowed.get("access-control-max-age") == "60", allowed
    other = preflight("http://evil.example")
    assert "access-control-allow-origin" not in other, other

