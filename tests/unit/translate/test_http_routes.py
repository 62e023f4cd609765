"""VirtualService HTTP routes in RDS, decoded from the generated RouteConfiguration: one test per
feature of istiod's sidecar route translation (route.go, httproute.go, retry.go)."""

from __future__ import annotations

from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3 import percent_pb2

from tests.unit.translate.outbound_support import (
    destination_rule,
    listener,
    outbound_clusters,
    pod,
    proxy,
    route,
    service_entry,
    sidecar,
    snap,
    svc,
    vhost_domains,
    view_of,
    virtual_service,
)
from xds_server.resources import TypeUrl
from xds_server.translate import Memo

REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
MILLION = percent_pb2.FractionalPercent.MILLION
HUNDRED = percent_pb2.FractionalPercent.HUNDRED


def vs(spec: str, *, name: str = "reviews", ns: str = "default", created: int = 10) -> str:
    return virtual_service(spec, name=name, ns=ns, created=created)


def dr(spec: str, *, name: str = "reviews", ns: str = "default", created: int = 10) -> str:
    return destination_rule(spec, name=name, ns=ns, created=created)


BASE = (svc("reviews", created=1) + svc("ratings", created=2) + svc("client", created=3)
        + pod("client-1", ip="10.244.0.100", labels="{app: client, version: v1}"))


def vhost(config: object, name: str) -> rc.VirtualHost:
    found = [v for v in config.virtual_hosts if v.name == name]  # type: ignore[attr-defined]
    assert len(found) == 1, [v.name for v in config.virtual_hosts]  # type: ignore[attr-defined]
    return found[0]


def routes_for(*texts: str, port: str = "9080", host: str = REVIEWS, p: object = None) -> list[rc.Route]:
    config = route(snap(view_of(BASE, *texts), p), port)
    return list(vhost(config, f"{host}:{port}").routes)


def paths(routes: list[rc.Route]) -> list[str]:
    out = []
    for r in routes:
        kind = r.match.WhichOneof("path_specifier")
        out.append(f"{kind}:{getattr(r.match, kind) if kind != 'safe_regex' else r.match.safe_regex.regex}")
    return out


# ------------------------------------------------------------------ virtual hosts
def test_service_bound_to_a_virtual_service_gets_its_routes_instead_of_the_default() -> None:
    config = route(snap(view_of(BASE, vs("hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews}}]}]"))),
                   "9080")
    routes = vhost(config, f"{REVIEWS}:9080").routes
    assert len(routes) == 1 and routes[0].name == ""
    assert routes[0].route.cluster == f"outbound|9080||{REVIEWS}"
    assert routes[0].decorator.operation == f"{REVIEWS}:9080/*"
    assert routes[0].metadata.filter_metadata["istio"]["config"] == (
        "/apis/networking.istio.io/v1/namespaces/default/virtual-service/reviews")
    # Domains as without a VirtualService; other services keep their default route.
    assert vhost_domains(config)[f"{REVIEWS}:9080"][:3] == [REVIEWS, REVIEWS + ".", "reviews"]
    assert vhost(config, f"{RATINGS}:9080").routes[0].name == "default"


def test_seed_egress_timeout_on_an_external_host() -> None:
    se = service_entry("hosts: [httpbin.org]\nports: [{number: 80, name: http, protocol: HTTP}]\n"
                       "resolution: DNS\nlocation: MESH_EXTERNAL", name="httpbin-ext")
    v = vs("hosts: [httpbin.org]\nhttp:\n- timeout: 3s\n  route: [{destination: {host: httpbin.org}, weight: 100}]",
           name="httpbin-ext")
    routes = routes_for(se, v, port="80", host="httpbin.org")
    action = routes[0].route
    assert action.cluster == "outbound|80||httpbin.org"
    assert action.timeout.seconds == 3 and action.max_grpc_timeout.seconds == 3
    assert not action.HasField("max_stream_duration")  # it would make Envoy ignore `timeout`
    assert action.retry_policy.num_retries.value == 2
    assert not routes[0].match.HasField("case_sensitive")  # no match: prefix "/" only


def test_virtual_service_host_naming_no_service_gets_its_own_vhost_on_the_bound_ports_only() -> None:
    v = vs("hosts: [reviews, bookinfo.com]\nhttp: [{route: [{destination: {host: reviews}}]}]")
    config = route(snap(view_of(BASE, v)), "9080")
    assert vhost_domains(config)["bookinfo.com:9080"] == ["bookinfo.com"]
    # A VirtualService binding no service is used on port 80 only (istiod's legacy rule).
    alone = vs("hosts: [foo.example.com]\nhttp: [{route: [{destination: {host: reviews}}]}]", name="foo")
    web = svc("web", created=5, ports="[{name: http, port: 80}]")
    s = snap(view_of(BASE, web, alone))
    assert vhost_domains(route(s, "80"))["foo.example.com:80"] == ["foo.example.com"]
    assert "foo.example.com:9080" not in vhost_domains(route(s, "9080"))


def test_first_virtual_service_wins_and_one_with_no_routes_for_the_port_binds_nothing() -> None:
    first = vs("hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, subset: v1}}]}]", name="a", created=1)
    second = vs("hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, subset: v2}}]}]", name="b",
                created=2)
    assert routes_for(first, second)[0].route.cluster == f"outbound|9080|v1|{REVIEWS}"
    # The older one has routes only for another port: the next one binds the service.
    other_port = vs("hosts: [reviews]\nhttp: [{match: [{port: 8080}], route: [{destination: {host: reviews}}]}]",
                    name="a", created=1)
    assert routes_for(other_port, second)[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"
    # Nothing left for the port at all: the default route stays.
    assert routes_for(other_port)[0].name == "default"


def test_wildcard_host_binds_services_for_which_it_is_the_most_specific() -> None:
    wide = vs("hosts: ['*.svc.cluster.local']\nhttp: [{route: [{destination: {host: ratings}}]}]", name="wide",
              created=1)
    exact = vs("hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, subset: v3}}]}]", name="exact",
               created=2)
    config = route(snap(view_of(BASE, wide, exact)), "9080")
    assert vhost(config, f"{REVIEWS}:9080").routes[0].route.cluster == f"outbound|9080|v3|{REVIEWS}"
    assert vhost(config, f"{RATINGS}:9080").routes[0].route.cluster == f"outbound|9080||{RATINGS}"
    assert "*.svc.cluster.local:9080" not in vhost_domains(config)


def test_http_routes_do_not_apply_to_tcp_ports() -> None:
    db = svc("db", created=6, ports="[{name: tcp, port: 9080, protocol: TCP}, {name: http-x, port: 9000}]")
    v = vs("hosts: [db]\nhttp: [{route: [{destination: {host: db, subset: s}}]}]", name="db")
    s = snap(view_of(BASE, db, v))
    assert vhost(route(s, "9000"), "db.default.svc.cluster.local:9000").routes[0].route.cluster == (
        "outbound|9000|s|db.default.svc.cluster.local")


def test_sniffed_port_route_carries_the_virtual_service_routes() -> None:
    auto = svc("auto", created=7, ports="[{name: web, port: 7070}]", ip="10.96.7.7")
    v = vs("hosts: [auto]\nhttp: [{route: [{destination: {host: auto, subset: blue}}]}]", name="auto")
    s = snap(view_of(BASE, auto, v))
    name = "auto.default.svc.cluster.local:7070"
    config = route(s, name)
    assert [(vh.name, list(vh.domains)) for vh in config.virtual_hosts] == [(name, ["*"])]
    assert config.virtual_hosts[0].routes[0].route.cluster == "outbound|7070|blue|auto.default.svc.cluster.local"


# ------------------------------------------------------------------ route list
def test_rules_in_order_one_route_per_match_stopping_at_the_first_catch_all() -> None:
    v = vs("""
hosts: [reviews]
http:
- match: [{uri: {prefix: /a}}, {uri: {exact: /b}}]
  route: [{destination: {host: reviews, subset: v1}}]
- match: [{uri: {prefix: /}}, {uri: {prefix: /never}}]
  route: [{destination: {host: reviews, subset: v2}}]
- route: [{destination: {host: reviews, subset: v3}}]
""")
    routes = routes_for(v)
    assert paths(routes) == ["prefix:/a", "path:/b", "prefix:/"]
    assert routes[2].route.cluster == f"outbound|9080|v2|{REVIEWS}"


def test_rules_after_a_rule_without_match_are_discarded() -> None:
    v = vs("hosts: [reviews]\nhttp:\n- route: [{destination: {host: reviews}}]\n"
           "- match: [{uri: {prefix: /x}}]\n  route: [{destination: {host: ratings}}]")
    assert paths(routes_for(v)) == ["prefix:/"]


def test_static_filters_port_source_labels_source_namespace_and_gateways() -> None:
    v = vs("""
hosts: [reviews]
http:
- match: [{port: 8080, uri: {prefix: /port}}]
  route: [{destination: {host: reviews}}]
- match: [{sourceLabels: {app: client}, uri: {prefix: /mine}}]
  route: [{destination: {host: reviews}}]
- match: [{sourceLabels: {app: other}, uri: {prefix: /theirs}}]
  route: [{destination: {host: reviews}}]
- match: [{sourceNamespace: default, uri: {prefix: /ns}}, {sourceNamespace: prod, uri: {prefix: /prod}}]
  route: [{destination: {host: reviews}}]
- match: [{gateways: [mesh], sourceLabels: {app: other}, uri: {prefix: /gw}}]
  route: [{destination: {host: reviews}}]
- match: [{gateways: [istio-system/ingress], uri: {prefix: /ingress}}]
  route: [{destination: {host: reviews}}]
""")
    assert paths(routes_for(v, p=proxy("client-1"))) == ["prefix:/mine", "prefix:/ns", "prefix:/gw"]


def test_source_labels_give_labelled_clients_their_own_routes() -> None:
    v = vs("hosts: [reviews]\nhttp:\n- match: [{sourceLabels: {version: v2}}]\n"
           "  route: [{destination: {host: reviews, subset: v2}}]\n- route: [{destination: {host: reviews}}]")
    extra = pod("client-2", ip="10.244.0.101", labels="{app: client, version: v2}")
    view = view_of(BASE, extra, v)
    memo = Memo()
    v1 = route(snap(view, proxy("client-1", ip="10.244.0.100"), memo), "9080")
    v2 = route(snap(view, proxy("client-2", ip="10.244.0.101"), memo), "9080")
    assert vhost(v1, f"{REVIEWS}:9080").routes[0].route.cluster == f"outbound|9080||{REVIEWS}"
    assert vhost(v2, f"{REVIEWS}:9080").routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"


# ------------------------------------------------------------------ matches
def test_every_match_field() -> None:
    v = vs("""
hosts: [reviews]
http:
- name: canary
  match:
  - name: jason
    statPrefix: jason-stats
    uri: {prefix: /api/}
    ignoreUriCase: true
    headers:
      x-b: {exact: one}
      x-a: {prefix: pre}
      x-c: {regex: "v[0-9]+"}
      x-present: {}
    withoutHeaders:
      x-skip: {exact: "yes"}
      x-absent: {}
    queryParams:
      q: {exact: "1"}
      p: {regex: "a.*"}
    method: {exact: GET}
    authority: {prefix: reviews}
    scheme: {exact: http}
  - uri: {regex: "/v[0-9]+/.*"}
  route: [{destination: {host: reviews}}]
""")
    first, second = routes_for(v)
    assert first.name == "canary.jason" and first.stat_prefix == "jason-stats"
    m = first.match
    assert m.prefix == "/api/" and m.case_sensitive.value is False
    by_name = [(h.name, h.WhichOneof("header_match_specifier"), h.invert_match, h.treat_missing_header_as_empty)
               for h in m.headers]
    assert by_name == [
        ("x-a", "string_match", False, False), ("x-absent", "present_match", True, False),
        ("x-b", "string_match", False, False), ("x-c", "string_match", False, False),
        ("x-present", "present_match", False, False), ("x-skip", "string_match", True, True),
        (":method", "string_match", False, False), (":authority", "string_match", False, False),
        (":scheme", "string_match", False, False),
    ]
    assert m.headers[0].string_match.prefix == "pre" and m.headers[3].string_match.safe_regex.regex == "v[0-9]+"
    assert m.headers[7].string_match.prefix == "reviews"
    assert [(q.name, q.string_match.WhichOneof("match_pattern")) for q in m.query_parameters] == [
        ("p", "safe_regex"), ("q", "exact")]
    assert second.name == "canary" and second.match.safe_regex.regex == "/v[0-9]+/.*"
    assert second.match.case_sensitive.value is True
    assert first.decorator.operation == f"{REVIEWS}:9080/api/*"
    assert second.decorator.operation == f"{REVIEWS}:9080/v[0-9]+/.*"


# ------------------------------------------------------------------ destinations
def test_weighted_destinations_subsets_ports_and_zero_weight() -> None:
    v = vs("""
hosts: [reviews]
http:
- route:
  - {destination: {host: reviews, subset: v1}, weight: 25}
  - {destination: {host: reviews, subset: v2, port: {number: 9090}}, weight: 75,
     headers: {request: {set: {x-canary: "yes", host: canary.local}}, response: {remove: [x-debug]}}}
  - {destination: {host: ratings}, weight: 0}
""")
    r = routes_for(v)[0]
    weighted = r.route.weighted_clusters
    assert [(c.name, c.weight.value) for c in weighted.clusters] == [
        (f"outbound|9080|v1|{REVIEWS}", 25), (f"outbound|9090|v2|{REVIEWS}", 75)]
    assert not weighted.HasField("total_weight")
    canary = weighted.clusters[1]
    assert [h.header.key for h in canary.request_headers_to_add] == ["x-canary"]
    assert canary.host_rewrite_literal == "canary.local" and list(canary.response_headers_to_remove) == ["x-debug"]
    assert r.decorator.operation == "reviews:9080/*"  # several clusters: the VirtualService's name


def test_single_destination_ignores_its_weight_and_appends_its_headers_to_the_route() -> None:
    v = vs("""
hosts: [reviews]
http:
- headers: {request: {add: {x-rule: r}}}
  route:
  - {destination: {host: reviews}, weight: 0, headers: {request: {add: {x-dest: d, ':authority': dest.local}}}}
""")
    r = routes_for(v)[0]
    assert r.route.cluster == f"outbound|9080||{REVIEWS}"
    assert [h.header.key for h in r.request_headers_to_add] == ["x-rule", "x-dest"]
    assert r.route.host_rewrite_literal == "dest.local"


# ------------------------------------------------------------------ timeout and retries
def test_timeout_default_and_set() -> None:
    v = vs("hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /slow}}]\n  timeout: 2.5s\n"
           "  route: [{destination: {host: reviews}}]\n- route: [{destination: {host: reviews}}]")
    slow, rest = routes_for(v)
    assert (slow.route.timeout.seconds, slow.route.timeout.nanos) == (2, 500000000)
    assert slow.route.max_grpc_timeout.nanos == 500000000
    assert rest.route.timeout.seconds == 0 and rest.route.HasField("timeout")


def test_retry_policies() -> None:
    v = vs("""
hosts: [reviews]
http:
- match: [{uri: {prefix: /none}}]
  retries: {attempts: 0}
  route: [{destination: {host: reviews}}]
- match: [{uri: {prefix: /codes}}]
  retries: {attempts: 3, retryOn: "503,gateway-error,429", perTryTimeout: 1s, backoff: 25ms,
            retryRemoteLocalities: true, retryIgnorePreviousHosts: false}
  route: [{destination: {host: reviews}}]
- match: [{uri: {prefix: /only-codes}}]
  retries: {attempts: 2, retryOn: "503"}
  route: [{destination: {host: reviews}}]
- route: [{destination: {host: reviews}}]
""")
    none, codes, only, default = routes_for(v)
    assert not none.route.HasField("retry_policy")
    p = codes.route.retry_policy
    assert p.num_retries.value == 3 and p.retry_on == "gateway-error,retriable-status-codes"
    assert list(p.retriable_status_codes) == [503, 429]
    assert p.per_try_timeout.seconds == 1 and p.retry_back_off.base_interval.nanos == 25000000
    assert p.retry_priority.name == "envoy.retry_priorities.previous_priorities"
    assert not p.retry_host_predicate and p.host_selection_retry_max_attempts == 5
    assert only.route.retry_policy.retry_on == ",retriable-status-codes"
    d = default.route.retry_policy
    assert d.retry_on == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert d.num_retries.value == 2 and [h.name for h in d.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"]


# ------------------------------------------------------------------ fault, mirror, CORS
def _fault(r: rc.Route) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    r.typed_per_filter_config["envoy.filters.http.fault"].Unpack(out)
    return out


def test_fault_delay_and_abort() -> None:
    v = vs("""
hosts: [reviews]
http:
- match: [{uri: {prefix: /delay}}]
  fault: {delay: {fixedDelay: 2s, percentage: {value: 12.5}}}
  route: [{destination: {host: reviews}}]
- match: [{uri: {prefix: /abort}}]
  fault: {abort: {httpStatus: 418, percentage: {value: 100}}, delay: {fixedDelay: 1s, percent: 30}}
  timeout: 5s
  route: [{destination: {host: reviews}}]
- match: [{uri: {prefix: /grpc}}]
  fault: {abort: {grpcStatus: UNAVAILABLE}}
  route: [{destination: {host: reviews}}]
""")
    delay, abort, grpc = routes_for(v)
    f = _fault(delay)
    assert f.delay.fixed_delay.seconds == 2 and (f.delay.percentage.numerator, f.delay.percentage.denominator) == (
        125000, MILLION)
    assert not f.HasField("abort")
    f = _fault(abort)
    assert f.abort.http_status == 418 and f.abort.percentage.numerator == 1000000
    assert (f.delay.percentage.numerator, f.delay.percentage.denominator) == (30, HUNDRED)
    assert abort.route.timeout.seconds == 5 and abort.route.HasField("retry_policy")
    f = _fault(grpc)
    assert f.abort.grpc_status == 14 and not f.abort.HasField("percentage")


def test_outbound_http_connection_manager_has_fault_and_cors_before_the_router() -> None:
    s = snap(view_of(BASE))
    chain = listener(s, "0.0.0.0_9080").filter_chains[0]
    hcm = hcm_pb2.HttpConnectionManager()
    chain.filters[-1].typed_config.Unpack(hcm)
    names = [f.name for f in hcm.http_filters]
    assert names[-3:] == ["envoy.filters.http.fault", "envoy.filters.http.cors", "envoy.filters.http.router"]


def test_mirror_and_mirrors_with_percentages() -> None:
    v = vs("""
hosts: [reviews]
http:
- match: [{uri: {prefix: /one}}]
  mirror: {host: ratings}
  mirrorPercentage: {value: 5}
  route: [{destination: {host: reviews}}]
- match: [{uri: {prefix: /many}}]
  mirrors:
  - {destination: {host: ratings, subset: v2}, percentage: {value: 50}}
  - {destination: {host: ratings, subset: dark}, percentage: {value: 0}}
  - {destination: {host: ratings, port: {number: 7000}}}
  route: [{destination: {host: reviews}}]
- match: [{uri: {prefix: /zero}}]
  mirror: {host: ratings}
  mirrorPercentage: {value: 0}
  route: [{destination: {host: reviews}}]
""")
    one, many, zero = routes_for(v)

    def got(r: rc.Route) -> list[tuple[str, int, int, bool, bool]]:
        return [(m.cluster, m.runtime_fraction.default_value.numerator, m.runtime_fraction.default_value.denominator,
                 m.disable_shadow_host_suffix_append, m.trace_sampled.value) for m in r.route.request_mirror_policies]

    assert got(one) == [(f"outbound|9080||{RATINGS}", 50000, MILLION, True, False)]
    assert got(many) == [
        (f"outbound|9080|v2|{RATINGS}", 500000, MILLION, True, False),
        (f"outbound|7000||{RATINGS}", 100, HUNDRED, True, False),
    ]
    assert not zero.route.request_mirror_policies


def test_cors_policy() -> None:
    v = vs("""
hosts: [reviews]
http:
- corsPolicy:
    allowOrigins: [{exact: "https://a.example"}, {regex: "https://.*\\\\.b\\\\.example"}]
    allowMethods: [GET, POST]
    allowHeaders: [x-a, x-b]
    exposeHeaders: [x-id]
    maxAge: 24h
    allowCredentials: true
    unmatchedPreflights: IGNORE
  route: [{destination: {host: reviews}}]
""")
    r = routes_for(v)[0]
    cors = cors_pb2.CorsPolicy()
    r.typed_per_filter_config["envoy.filters.http.cors"].Unpack(cors)
    assert [o.WhichOneof("match_pattern") for o in cors.allow_origin_string_match] == ["exact", "safe_regex"]
    assert (cors.allow_methods, cors.allow_headers, cors.expose_headers, cors.max_age) == (
        "GET,POST", "x-a,x-b", "x-id", "86400")
    assert cors.allow_credentials.value is True and cors.forward_not_matching_preflights.value is False
    assert cors.filter_enabled.default_value.numerator == 100


# ------------------------------------------------------------------ rewrite, headers, redirect, direct response
def test_rewrites_and_header_operations() -> None:
    v = vs("""
hosts: [reviews]
http:
- match: [{uri: {prefix: /old}}]
  rewrite: {uri: /new, authority: new.local}
  headers:
    request: {set: {x-s: "1"}, add: {x-a: "2"}, remove: [x-r]}
    response: {set: {cache-control: no-store}, add: {x-b: "3"}, remove: [server]}
  route: [{destination: {host: reviews}}]
- match: [{uri: {regex: "^/v([0-9]+)/(.*)$"}}]
  rewrite: {uriRegexRewrite: {match: "^/v([0-9]+)/(.*)$", rewrite: "/\\\\2?version=\\\\1"}}
  headers: {request: {set: {":authority": from-headers.local}}}
  route: [{destination: {host: reviews}}]
""")
    old, regex = routes_for(v)
    assert old.route.prefix_rewrite == "/new" and old.route.host_rewrite_literal == "new.local"
    assert [(h.header.key, h.append_action) for h in old.request_headers_to_add] == [
        ("x-s", HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD), ("x-a", HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)]
    assert list(old.request_headers_to_remove) == ["x-r"]
    assert [h.header.key for h in old.response_headers_to_add] == ["cache-control", "x-b"]
    assert list(old.response_headers_to_remove) == ["server"]
    assert regex.route.regex_rewrite.pattern.regex == "^/v([0-9]+)/(.*)$"
    assert regex.route.regex_rewrite.substitution == "/\\2?version=\\1"
    assert regex.route.host_rewrite_literal == "from-headers.local" and not regex.request_headers_to_add


def test_redirect_and_direct_response() -> None:
    v = vs("""
hosts: [reviews]
http:
- match: [{uri: {prefix: /moved}}]
  redirect: {uri: /here, authority: new.example.com, derivePort: FROM_REQUEST_PORT, scheme: https, redirectCode: 308}
- match: [{uri: {prefix: /plain}}]
  redirect: {authority: other.example.com, port: 80}
- match: [{uri: {prefix: /teapot}}]
  directResponse: {status: 418, body: {string: short and stout}}
- match: [{uri: {prefix: /blob}}]
  directResponse: {status: 200, body: {bytes: aGVsbG8=}}
""")
    moved, plain, teapot, blob = routes_for(v)
    r = moved.redirect
    assert (r.path_redirect, r.host_redirect, r.scheme_redirect, r.port_redirect, r.response_code) == (
        "/here", "new.example.com", "https", 9080, rc.RedirectAction.PERMANENT_REDIRECT)
    assert not moved.HasField("route")
    assert plain.redirect.port_redirect == 0 and plain.redirect.response_code == rc.RedirectAction.MOVED_PERMANENTLY
    assert plain.redirect.WhichOneof("path_rewrite_specifier") == "path_redirect"
    assert teapot.direct_response.status == 418 and teapot.direct_response.body.inline_string == "short and stout"
    assert blob.direct_response.body.inline_bytes == b"hello"
    assert teapot.decorator.operation == "reviews:9080/teapot*"


# ------------------------------------------------------------------ consistent hash
def test_destination_rule_consistent_hash_on_virtual_service_and_default_routes() -> None:
    v = vs("""
hosts: [reviews]
http:
- match: [{uri: {prefix: /single}}]
  route: [{destination: {host: reviews, subset: v1}}]
- route:
  - {destination: {host: reviews, subset: v1}, weight: 50}
  - {destination: {host: reviews, subset: v2}, weight: 50}
""")
    rule = dr("""
host: reviews
trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: sticky, path: /, ttl: 10s, attributes: [{name: SameSite, value: Lax}]}}
""")
    ratings_rule = dr("host: ratings\ntrafficPolicy:\n  portLevelSettings:\n"
                      "  - port: {number: 9080}\n    loadBalancer: {consistentHash: {useSourceIp: true}}",
                      name="ratings")
    s = snap(view_of(BASE, v, rule, ratings_rule))
    config = route(s, "9080")
    single, weighted = vhost(config, f"{REVIEWS}:9080").routes
    assert [h.header.header_name for h in single.route.hash_policy] == ["x-user"]
    assert not single.route.retry_policy.retry_host_predicate  # a hashed single destination keeps its host
    assert [h.WhichOneof("policy_specifier") for h in weighted.route.hash_policy] == ["header", "cookie"]
    cookie = weighted.route.hash_policy[1].cookie
    assert (cookie.name, cookie.path, cookie.ttl.seconds, cookie.attributes[0].name) == ("sticky", "/", 10, "SameSite")
    assert weighted.route.retry_policy.retry_host_predicate  # several destinations: predicate kept
    default = vhost(config, f"{RATINGS}:9080").routes[0]
    assert default.name == "default" and default.route.hash_policy[0].connection_properties.source_ip
    assert default.route.retry_policy.retry_host_predicate  # istiod's default route keeps it


# ------------------------------------------------------------------ delegates
def test_delegate_routes_translate_inside_the_root() -> None:
    root = vs("""
hosts: [reviews]
http:
- name: root
  match: [{uri: {prefix: /team}}]
  timeout: 4s
  delegate: {name: team, namespace: default}
- route: [{destination: {host: reviews}}]
""", created=1)
    leaf = vs("http:\n- name: a\n  match: [{uri: {prefix: /team/a}}]\n  route: [{destination: {host: ratings}}]",
              name="team", created=2)
    routes = routes_for(root, leaf)
    assert paths(routes) == ["prefix:/team/a", "prefix:/"]
    assert routes[0].name == "root-a" and routes[0].route.cluster == f"outbound|9080||{RATINGS}"
    assert routes[0].route.timeout.seconds == 4


# ------------------------------------------------------------------ CDS
def test_virtual_service_destinations_join_the_clusters_but_not_listeners_or_vhosts() -> None:
    other = svc("backend", "other", created=8, ports="[{name: http, port: 9080}, {name: grpc, port: 9090}]")
    only_reviews = sidecar("egress: [{hosts: ['./reviews.default.svc.cluster.local']}]")
    v = vs("hosts: [reviews]\nhttp: [{route: [{destination: {host: backend.other.svc.cluster.local,"
           " port: {number: 9090}}}]}]")
    s = snap(view_of(BASE, other, only_reviews, v))
    assert outbound_clusters(s) == ["outbound|9080||reviews.default.svc.cluster.local",
                                    "outbound|9090||backend.other.svc.cluster.local"]
    assert "outbound|9090||backend.other.svc.cluster.local" in s.get(TypeUrl.ENDPOINT)
    assert sorted(vhost_domains(route(s, "9080"))) == ["allow_any", f"{REVIEWS}:9080"]
    assert not [n for n in s.get(TypeUrl.LISTENER) if "9090" in n]


def test_virtual_service_destinations_follow_the_egress_port_and_source_namespace() -> None:
    other = svc("backend", "other", created=8, ports="[{name: http, port: 9080}, {name: grpc, port: 9090}]")
    ported = sidecar("egress: [{port: {number: 9080, protocol: HTTP, name: h}, hosts: ['./*']}]")
    v = vs("hosts: [reviews]\nhttp:\n- match: [{sourceNamespace: prod}]\n"
           "  route: [{destination: {host: ratings.prod.svc.cluster.local}}]\n"
           "- route: [{destination: {host: backend.other.svc.cluster.local}}]")
    prod = svc("ratings", "prod", created=9)
    s = snap(view_of(BASE, other, prod, ported, v))
    clusters = outbound_clusters(s)
    assert "outbound|9080||backend.other.svc.cluster.local" in clusters
    assert "outbound|9090||backend.other.svc.cluster.local" not in clusters  # trimmed to the listener port
    assert not [c for c in clusters if "ratings.prod" in c]  # its only rule is for another source namespace


def test_routes_are_shared_by_proxies_with_equal_traits() -> None:
    v = vs("hosts: [reviews]\nhttp: [{route: [{destination: {host: reviews, subset: v1}}]}]")
    extra = pod("client-2", ip="10.244.0.101", labels="{app: client, version: v9}")
    view = view_of(BASE, extra, v)
    memo = Memo()
    a = snap(view, proxy("client-1", ip="10.244.0.100"), memo).get(TypeUrl.ROUTE)["9080"]
    b = snap(view, proxy("client-2", ip="10.244.0.101"), memo).get(TypeUrl.ROUTE)["9080"]
    assert a is b


def test_http_proxy_route_uses_each_bound_port_and_single_port_destinations() -> None:
    proxy_port = sidecar("egress:\n- port: {number: 15080, protocol: HTTP_PROXY, name: proxy}\n  bind: 127.0.0.1\n"
                         "  hosts: ['./*']")
    multi = svc("multi", created=9, ports="[{name: http-a, port: 7001}, {name: http-b, port: 7002}]")
    v = vs("hosts: [reviews]\nhttp:\n- match: [{port: 9080}]\n  route: [{destination: {host: ratings}}]\n"
           "- route: [{destination: {host: ratings}}]\n  mirror: {host: multi}")
    config = route(snap(view_of(BASE, multi, proxy_port, v)), "15080")
    routes = vhost(config, f"{REVIEWS}:9080").routes
    # Merged routes are built for port 0: a `port` match never applies, a single-port service's
    # port is used, a multi-port one without an explicit port gets 0 (istiod GetDestinationCluster).
    assert [r.route.cluster for r in routes] == [f"outbound|9080||{RATINGS}"]
    assert routes[0].route.request_mirror_policies[0].cluster == "outbound|0||multi.default.svc.cluster.local"
    assert vhost_domains(config)[f"{REVIEWS}:9080"][0] == f"{REVIEWS}:9080"


def test_cors_defaults_forward_unmatched_preflights_and_take_deprecated_origins_alone() -> None:
    v = vs("hosts: [reviews]\nhttp:\n- corsPolicy: {allowOrigin: [https://old.example]}\n"
           "  route: [{destination: {host: reviews}}]")
    cors = cors_pb2.CorsPolicy()
    routes_for(v)[0].typed_per_filter_config["envoy.filters.http.cors"].Unpack(cors)
    assert [o.exact for o in cors.allow_origin_string_match] == ["https://old.example"]
    assert cors.forward_not_matching_preflights.value is True and not cors.HasField("allow_credentials")


def test_only_prefix_slash_or_regex_dot_star_ends_the_route_list() -> None:
    v = vs("hosts: [reviews]\nhttp:\n- match: [{uri: {regex: '.*'}}, {uri: {prefix: /x}}]\n"
           "  route: [{destination: {host: reviews}}]\n- route: [{destination: {host: ratings}}]")
    assert paths(routes_for(v)) == ["safe_regex:.*"]
    h = vs("hosts: [reviews]\nhttp:\n- match: [{uri: {prefix: /}, headers: {x: {exact: y}}}]\n"
           "  route: [{destination: {host: reviews}}]\n- route: [{destination: {host: ratings}}]")
    assert paths(routes_for(h)) == ["prefix:/", "prefix:/"]


def test_a_service_host_on_another_protocol_or_bound_elsewhere_is_not_a_host_of_its_own() -> None:
    tcp80 = svc("db", created=6, ports="[{name: tcp, port: 80, protocol: TCP}]")
    web = svc("web", created=5, ports="[{name: http, port: 80}]")
    v = vs("hosts: [db, ext.example.com]\nhttp: [{route: [{destination: {host: web}}]}]", name="db")
    config = route(snap(view_of(BASE, tcp80, web, v)), "80")
    assert sorted(vhost_domains(config)) == ["allow_any", "ext.example.com:80", "web.default.svc.cluster.local:80"]
    # A wildcard host matching a service another VirtualService binds more specifically.
    wide = vs("hosts: ['*.default.svc.cluster.local', wide.example.com]\nhttp: [{route: [{destination: {host: web}}]}]",
              name="wide", created=1)
    exact = vs("hosts: [web]\nhttp: [{route: [{destination: {host: web, subset: a}}]}]", name="exact", created=2)
    config = route(snap(view_of(BASE, web, wide, exact)), "80")
    names = sorted(vhost_domains(config))
    assert "*.default.svc.cluster.local:80" not in names and "wide.example.com:80" in names
    assert vhost(config, "web.default.svc.cluster.local:80").routes[0].route.cluster == (
        "outbound|80|a|web.default.svc.cluster.local")


def test_virtual_service_destination_naming_no_port_of_the_service_adds_no_cluster() -> None:
    only_reviews = sidecar("egress: [{hosts: ['./reviews.default.svc.cluster.local']}]")
    v = vs("hosts: [reviews]\nhttp: [{route: [{destination: {host: ratings, port: {number: 7777}}}]}]")
    s = snap(view_of(BASE, only_reviews, v))
    assert outbound_clusters(s) == [f"outbound|9080||{REVIEWS}"]


def test_hash_policy_needs_the_destination_to_be_a_service_of_the_scope() -> None:
    v = vs("hosts: [reviews]\nhttp: [{route: [{destination: {host: nowhere.example.com}}]}]")
    rule = dr("host: nowhere.example.com\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x}}}",
              name="nowhere")
    r = routes_for(v, rule)[0]
    assert not r.route.hash_policy and r.route.retry_policy.retry_host_predicate
