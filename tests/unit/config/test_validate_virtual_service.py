"""istiod's VirtualService rules with field paths (istio ValidateVirtualService, validateHTTPRoute)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.config.util import errors_of, istio, warnings_of
from xds_server.config import IstioVirtualService
from xds_server.config.parse import parse

TRAFFIC = Path(__file__).parents[2] / "fixtures" / "manifests" / "traffic"


def vs(*http: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"hosts": ["reviews"], "http": list(http), **spec}


def route(*hosts: str, **rule: Any) -> dict[str, Any]:
    return {"route": [{"destination": {"host": h}} for h in hosts], **rule}


def errors(spec: dict[str, Any]) -> list[str]:
    return errors_of("VirtualService", spec)


def test_every_field_of_the_reference_parses_in_every_api_version() -> None:
    docs = list(yaml.safe_load_all((TRAFFIC / "virtualservice-every-field.yaml").read_text()))
    for version in ("v1", "v1beta1", "v1alpha3"):
        for doc in docs:
            obj, problems = parse({**doc, "apiVersion": f"networking.istio.io/{version}"}, "f.yaml:0")
            assert problems == [], (version, problems)
            assert isinstance(obj, IstioVirtualService) and obj.api_version.endswith(version)
    obj, _ = parse(docs[0])
    assert isinstance(obj, IstioVirtualService)
    first = obj.spec.http[0]
    assert first.match[0].headers["end-user"].exact == "jason"
    assert first.match[0].without_headers["x-skip"].regex == "*"
    assert first.match[0].ignore_uri_case and first.match[0].port == 9080
    assert [(r.destination.subset, r.weight) for r in first.route] == [("v2", 75), ("v1", 25)]
    assert first.route[0].destination.port.number == 9080
    assert first.retries.HasField("retry_ignore_previous_hosts") and not first.retries.retry_ignore_previous_hosts
    assert first.fault.abort.http_status == 418 and first.fault.delay.fixed_delay.seconds == 1
    assert first.mirror_percentage.value == 5 and first.cors_policy.allow_credentials
    assert obj.spec.http[4].direct_response.body.string == "short and stout"
    assert obj.spec.http[5].direct_response.body.bytes == b"hello"
    assert obj.spec.http[6].delegate.namespace == "team"
    assert obj.spec.tcp[0].route[0].destination.port.number == 5555
    assert list(obj.spec.tls[0].match[0].sni_hosts) == ["reviews.example.com"]


def test_unknown_fields_and_wrong_types_name_their_path() -> None:
    assert errors(vs(route("a", timout="1s"))) == ["spec.http[0].timout: unknown field"]
    assert errors(vs({"route": [{"destination": {"host": "a"}, "weight": "50"}]})) == [
        "spec.http[0].route[0].weight: expected an integer, got string"]
    assert errors(vs({"directResponse": {"status": 200, "body": {"bytes": "not base64!"}}})) == [
        "spec.http[0].directResponse.body.bytes: invalid base64 text"]


# ---------------------------------------------------------------- hosts, gateways, exportTo
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"hosts": ["*"], "http": [route("a")]},
         "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"),
        ({"hosts": ["a.example.com", "*.example.com"], "http": [route("a")]},
         "spec.hosts[0]: duplicate hosts in virtual service: a.example.com & *.example.com"),
        ({"hosts": ["bad_host"], "http": [route("a")]},
         "spec.hosts[0]: domain name 'bad_host' invalid (label 'bad_host' invalid)"),
        ({"hosts": ["a"]}, "spec: http, tcp or tls must be provided in virtual service"),
        ({"hosts": ["a"], "gateways": ["ns/"], "http": [route("a")]},
         "spec.gateways[0]: gateway namespace and name cannot be empty"),
        ({"hosts": ["a"], "http": [route("a")], "exportTo": ["~"]},
         "spec.exportTo[0]: invalid exportTo value '~' (one of *, . or a namespace)"),
        ({"hosts": ["a"], "http": [route("a")], "exportTo": ["*", "ns"]},
         "spec.exportTo: cannot have both public (*) and non-public exportTo values"),
    ],
)
def test_host_gateway_and_export_rules(spec: dict[str, Any], message: str) -> None:
    assert errors(spec) == [message]


def test_a_wildcard_host_is_allowed_when_the_vs_is_bound_to_gateways_only() -> None:
    assert errors({"hosts": ["*"], "gateways": ["istio-system/ingress"], "http": [route("a")]}) == []


def test_delegates_have_no_hosts_gateways_tcp_or_tls() -> None:
    assert errors({"http": [route("a")]}) == []
    assert errors({"gateways": ["mesh"], "tcp": [route("a")]}) == [
        "spec.gateways: delegate virtual service (no hosts) must have no gateways specified",
        "spec.tcp: delegate virtual service (no hosts) must have no tcp route specified",
    ]
    nested = {"http": [{"delegate": {"name": "other"}}]}
    assert "spec.http[0].delegate: delegate HTTP route cannot contain delegate" in errors(nested)


def test_a_root_rule_with_delegate_has_no_route_or_redirect() -> None:
    spec = vs({"delegate": {"name": "d"}, "redirect": {"uri": "/x"}, **route("a")})
    assert errors(spec) == [
        "spec.http[0].redirect: a root HTTP route with delegate must not specify redirect",
        "spec.http[0].route: a root HTTP route with delegate must not specify route",
    ]


# ---------------------------------------------------------------- destinations and weights
def test_weights_are_non_negative_and_not_all_zero_but_need_not_sum_to_100() -> None:
    two = {"route": [{"destination": {"host": "a"}, "weight": 30}, {"destination": {"host": "b"}, "weight": 30}]}
    assert errors(vs(two)) == []  # istiod dropped the sum-to-100 rule; Envoy splits by the sum
    negative = {"route": [{"destination": {"host": "a"}, "weight": -1}, {"destination": {"host": "b"}, "weight": 2}]}
    assert errors(vs(negative)) == ["spec.http[0].route[0].weight: weight -1 < 0"]
    zero = {"route": [{"destination": {"host": "a"}, "weight": 0}, {"destination": {"host": "b"}}]}
    assert errors(vs(zero)) == ["spec.http[0].route: total destination weight = 0"]
    assert errors(vs({"route": [{"destination": {"host": "a"}, "weight": 0}]})) == []  # one destination


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ({"host": "*"}, "spec.http[0].route[0].destination.host: invalid destination host *"),
        ({"host": "a", "subset": "V1.x"},
         "spec.http[0].route[0].destination.subset: subset name 'V1.x' is invalid (must be a DNS-1123 label)"),
        ({"host": "a", "port": {"number": 70000}},
         "spec.http[0].route[0].destination.port.number: port number 70000 must be in the range 1..65535"),
        ({"subset": "v1"}, "spec.http[0].route[0].destination.host: required"),
    ],
)
def test_destination_rules(destination: dict[str, Any], message: str) -> None:
    assert errors(vs({"route": [{"destination": destination}]})) == [message]


# ---------------------------------------------------------------- HTTP rule actions
@pytest.mark.parametrize(
    ("rule", "messages"),
    [
        ({}, ["spec.http[0].route: HTTP route, redirect or directResponse is required"]),
        ({"redirect": {"uri": "/x"}, "fault": {"abort": {"httpStatus": 500}}, **route("a")},
         ["spec.http[0].route: HTTP route cannot contain both route and redirect",
          "spec.http[0].fault: HTTP route cannot contain both fault and redirect"]),
        ({"directResponse": {"status": 200}, "rewrite": {"uri": "/"}, **route("a")},
         ["spec.http[0].route: HTTP route cannot contain both route and directResponse",
          "spec.http[0].rewrite: HTTP route cannot contain both rewrite and directResponse"]),
        ({"mirror": {"host": "m"}, "mirrors": [{"destination": {"host": "n"}}], **route("a")},
         ["spec.http[0].mirrors: HTTP route cannot contain both mirror and mirrors"]),
        ({"redirect": {}}, ["spec.http[0].redirect: redirect must specify uri, authority, scheme, or port"]),
        ({"redirect": {"uri": "/x", "redirectCode": 200}},
         ["spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx"]),
        ({"redirect": {"scheme": "ftp"}},
         ['spec.http[0].redirect.scheme: invalid redirect scheme, must be "http" or "https"']),
        ({"directResponse": {"status": 99}},
         ["spec.http[0].directResponse.status: HTTP status 99 is not in range 200-599"]),
        ({"directResponse": {"status": 200, "body": {"string": "x" * (1024 * 1024 + 1)}}},
         ["spec.http[0].directResponse.body: large direct_responses may impact control plane performance, "
          "must be less than 1MB"]),
        ({"rewrite": {"uri": "/a", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}, **route("a")},
         ["spec.http[0].rewrite: rewrite may only contain one of uri or uriRegexRewrite"]),
        ({"rewrite": {}, **route("a")},
         ["spec.http[0].rewrite: rewrite must specify at least one of uri, uriRegexRewrite, or authority"]),
        ({"rewrite": {"uriRegexRewrite": {"match": "a("}}, **route("a")},
         ["spec.http[0].rewrite.uriRegexRewrite: requires both match and rewrite"]),
        ({"rewrite": {"authority": "x"}, "headers": {"request": {"set": {"Host": "y"}}}, **route("a")},
         ["spec.http[0].headers.request.set[Host]: authority header cannot be set multiple times: have 'x', "
          "attempting to set 'y'"]),
    ],
)
def test_http_actions(rule: dict[str, Any], messages: list[str]) -> None:
    assert errors(vs(rule)) == messages


# ---------------------------------------------------------------- durations, retries, fault, mirror
@pytest.mark.parametrize(
    ("rule", "messages"),
    [
        (route("a", timeout="0.5ms"), ["spec.http[0].timeout: duration must be at least 1ms"]),
        (route("a", timeout="1500us"), ["spec.http[0].timeout: only durations to ms precision are supported"]),
        (route("a", timeout="soon"),
         ["spec.http[0].timeout: invalid duration 'soon' (expected e.g. \"1s\", \"30ms\", \"1m30s\")"]),
        (route("a", retries={"attempts": -1}), ["spec.http[0].retries.attempts: attempts cannot be negative"]),
        (route("a", retries={"attempts": 0, "perTryTimeout": "1s"}),
         ["spec.http[0].retries.attempts: http retry policy configured when attempts are set to 0 (disabled)"]),
        (route("a", retries={"attempts": 2, "retryOn": "5xx, reset"}),
         ["spec.http[0].retries.retryOn: ' reset' is not a valid retryOn policy (an HTTP status code or one of "
          "5xx, cancelled, connect-failure, deadline-exceeded, envoy-ratelimited, gateway-error, "
          "http3-post-connect-failure, internal, refused-stream, reset, reset-before-request, resource-exhausted, "
          "retriable-4xx, retriable-headers, retriable-status-codes, unavailable)"]),
        (route("a", retries={"attempts": 2, "retryOn": "599"}),
         ["spec.http[0].retries.retryOn: '599' is not a valid retryOn policy (an HTTP status code or one of "
          "5xx, cancelled, connect-failure, deadline-exceeded, envoy-ratelimited, gateway-error, "
          "http3-post-connect-failure, internal, refused-stream, reset, reset-before-request, resource-exhausted, "
          "retriable-4xx, retriable-headers, retriable-status-codes, unavailable)"]),
        (route("a", fault={}), ["spec.http[0].fault: HTTP fault injection must have an abort and/or a delay"]),
        (route("a", fault={"abort": {"httpStatus": 700}}),
         ["spec.http[0].fault.abort.httpStatus: HTTP status 700 is not in range 200-599"]),
        (route("a", fault={"abort": {"grpcStatus": "NOPE"}}),
         ["spec.http[0].fault.abort.grpcStatus: gRPC status 'NOPE' is not supported (one of ABORTED, "
          "ALREADY_EXISTS, CANCELLED, DATA_LOSS, DEADLINE_EXCEEDED, FAILED_PRECONDITION, INTERNAL, "
          "INVALID_ARGUMENT, NOT_FOUND, OK, OUT_OF_RANGE, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAUTHENTICATED, "
          "UNAVAILABLE, UNIMPLEMENTED, UNKNOWN)"]),
        (route("a", fault={"abort": {"http2Error": "x"}}),
         ["spec.http[0].fault.abort.http2Error: HTTP/2 abort fault injection is not supported"]),
        (route("a", fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 100.5}}}),
         ["spec.http[0].fault.delay.percentage.value: percentage 100.5 is neither 0.0, nor in range [0.0001, 100.0]"]),
        (route("a", fault={"delay": {"fixedDelay": "1s", "percentage": {"value": 0.00001}}}),
         ["spec.http[0].fault.delay.percentage.value: percentage 1e-05 is neither 0.0, nor in range [0.0001, 100.0]"]),
        (route("a", fault={"delay": {"exponentialDelay": "1s"}}),
         ["spec.http[0].fault.delay.exponentialDelay: exponentialDelay is not supported"]),
        (route("a", mirror={"host": "m"}, mirrorPercentage={"value": -1}),
         ["spec.http[0].mirrorPercentage.value: mirror percentage must have a min value of 0 (it has -1)"]),
        (route("a", mirrors=[{"destination": {"host": "m"}, "percentage": {"value": 101}}]),
         ["spec.http[0].mirrors[0].percentage.value: mirror percentage must have a max value of 100 (it has 101)"]),
        (route("a", mirrors=[{"percentage": {"value": 1}}]),
         ["spec.http[0].mirrors[0].destination: required for mirrors"]),
        (route("a", mirrorPercent=101), ["spec.http[0].mirrorPercent: must have a max value of 100 (it has 101)"]),
    ],
)
def test_durations_retries_faults_and_mirrors(rule: dict[str, Any], messages: list[str]) -> None:
    assert errors(vs(rule)) == messages


def test_abort_without_a_type_and_deprecated_fields_are_warnings() -> None:
    assert "spec.http[0].fault.abort: abort configured, but error type not set" in warnings_of(
        "VirtualService", vs(route("a", fault={"abort": {}})))
    assert 'spec.http[0].mirrorPercent: deprecated; use "mirrorPercentage" instead' in warnings_of(
        "VirtualService", vs(route("a", mirror={"host": "m"}, mirrorPercent=5)))


# ---------------------------------------------------------------- matches, regexes (RE2), headers
@pytest.mark.parametrize(
    ("match", "message"),
    [
        ({"uri": {"regex": "(?=lookahead)"}},
         "spec.http[0].match[0].uri.regex: invalid regex '(?=lookahead)': invalid perl operator: (?= "
         "(Envoy uses RE2 syntax, https://github.com/google/re2/wiki/Syntax)"),
        ({"uri": {"regex": r"(a)\1"}},
         "spec.http[0].match[0].uri.regex: invalid regex '(a)\\\\1': invalid escape sequence: \\1 "
         "(Envoy uses RE2 syntax, https://github.com/google/re2/wiki/Syntax)"),
        ({"headers": {"x": {"regex": ""}}},
         "spec.http[0].match[0].headers[x].regex: regex string match should not be empty"),
        ({"queryParams": {"q": {"regex": "a" * 1025}}},
         "spec.http[0].match[0].queryParams[q].regex: regex is too large, max length allowed is 1024"),
        ({"method": {"prefix": ""}}, "spec.http[0].match[0].method.prefix: prefix string match should not be empty"),
        ({"headers": {"bad name": {"exact": "x"}}},
         "spec.http[0].match[0].headers[bad name]: header name 'bad name' is not a valid header name"),
        ({"headers": {"@request.auth.claims.sub": {"exact": "x"}}},
         "spec.http[0].match[0].headers[@request.auth.claims.sub]: JWT claim based routing is only supported "
         "for gateways, not for the mesh"),
        ({"port": 0, "sourceNamespace": "Bad_NS"},
         "spec.http[0].match[0].sourceNamespace: sourceNamespace match 'Bad_NS' is invalid"),
        ({"sourceLabels": {"app": "a b"}}, "spec.http[0].match[0].sourceLabels[app]: invalid label value 'a b'"),
        ({"gateways": ["a/b/c"]}, "spec.http[0].match[0].gateways[0]: invalid value for gateway name: 'b/c'"),
    ],
)
def test_match_rules(match: dict[str, Any], message: str) -> None:
    assert errors(vs(route("a", match=[match]))) == [message]


def test_regexes_python_accepts_but_re2_rejects_are_errors_and_re2_syntax_is_accepted() -> None:
    ok = [r"^/api/v[0-9]+/.*$", r"(?i)reviews", r"\d+", r"[[:alpha:]]+", r"\pL+"]
    for pattern in ok:
        assert errors(vs(route("a", match=[{"uri": {"regex": pattern}}]))) == [], pattern
    assert errors(vs(route("a", match=[{"uri": {"prefix": ""}}]))) == []  # an empty uri prefix is allowed
    assert errors(vs(route("a", match=[{"withoutHeaders": {"x": {"regex": "*"}}}]))) == []  # `*` means present


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"request": {"set": {":path": "/x"}}}, "spec.http[0].headers.request.set[:path]: invalid header ':path': "
                                                  "header cannot have ':' prefix"),
        ({"request": {"remove": ["Host"]}}, "spec.http[0].headers.request.remove[0]: invalid header 'Host': "
                                             "cannot remove the Host header"),
        ({"response": {"set": {"host": "x"}}}, "spec.http[0].headers.response.set[host]: invalid header 'host': "
                                               "cannot set Host header"),
        ({"request": {"add": {"x": "50%"}}}, "spec.http[0].headers.request.add[x]: header value '50%': "
                                              "unterminated % (write %% for a literal %)"),
        ({"request": {"add": {"x": "a\nb"}}}, "spec.http[0].headers.request.add[x]: header value 'a\\nb' contains "
                                               "control characters"),
    ],
)
def test_header_operations(headers: dict[str, Any], message: str) -> None:
    assert errors(vs(route("a", headers=headers))) == [message]
    per_destination = {"route": [{"destination": {"host": "a"}, "headers": headers}]}
    assert errors(vs(per_destination)) == [message.replace("spec.http[0].", "spec.http[0].route[0].")]


def test_cors_rules() -> None:
    cors = {"allowOrigins": [{"exact": ""}, {"regex": "(?!x)"}], "allowMethods": ["GET", "FETCH"],
            "allowHeaders": ["*", "bad header"], "maxAge": "1500ms"}
    assert errors(vs(route("a", corsPolicy=cors))) == [
        "spec.http[0].corsPolicy.allowOrigins[0]: not a valid match for CORS allow origins (exact, prefix or "
        "regex, non-empty)",
        "spec.http[0].corsPolicy.allowOrigins[1].regex: invalid regex '(?!x)': invalid perl operator: (?! "
        "(Envoy uses RE2 syntax, https://github.com/google/re2/wiki/Syntax)",
        "spec.http[0].corsPolicy.allowMethods[1]: 'FETCH' is not a supported HTTP method",
        "spec.http[0].corsPolicy.allowHeaders[1]: header name 'bad header' is not a valid header name",
        "spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision",
    ]


# ---------------------------------------------------------------- TCP and TLS routes
def test_tls_routes_need_sni_hosts_within_the_vs_hosts() -> None:
    spec = {"hosts": ["*.example.com"], "tls": [
        {"match": [{"sniHosts": ["a.example.com", "a.other.com"]}], "route": [{"destination": {"host": "a"}}]},
        {"match": [{}], "route": []},
        {"route": [{"destination": {"host": "a"}}]},
    ]}
    assert errors(spec) == [
        "spec.tls[0].match[0].sniHosts[1]: SNI host 'a.other.com' is not a compatible subset of any of the virtual "
        "service hosts: [*.example.com]",
        "spec.tls[1].match[0].sniHosts: TLS match must have at least one SNI host",
        "spec.tls[1].route: TLS route is required",
        "spec.tls[2].match: TLS route must have at least one match condition",
    ]


def test_tcp_routes() -> None:
    spec = {"hosts": ["db"], "tcp": [
        {"match": [{"destinationSubnets": ["10.0.0.0/33"], "port": 70000}], "route": [{"destination": {"host": "a"}}]},
        {"route": []},
    ]}
    assert errors(spec) == [
        "spec.tcp[0].match[0].destinationSubnets[0]: '10.0.0.0/33' is not a valid CIDR block",
        "spec.tcp[0].match[0].port: port number 70000 must be in the range 1..65535",
        "spec.tcp[1].route: TCP route is required",
    ]


def test_unreachable_rules_are_warnings() -> None:
    spec = vs(route("a"), route("b"), route("c", match=[{"uri": {"prefix": "/x"}}]),
              route("d", match=[{"uri": {"prefix": "/x"}, "name": "again"}]))
    assert errors(spec) == []
    assert warnings_of("VirtualService", spec) == [
        "spec.http[1]: rule not used (only the last rule can have no matches; spec.http[0] has none)",
        "spec.http[3].match[0]: match not used (duplicate of a match in spec.http[2])",
        "spec.http[3]: rule not used (all matches used by prior rules)",
    ]


def test_an_invalid_object_is_rejected_with_its_kind_namespace_and_name() -> None:
    obj, problems = parse(istio("VirtualService", vs(route("a", timeout="0s")), name="r", namespace="shop"), "f.yaml:3")
    assert obj is None
    assert [str(p) for p in problems] == [
        "f.yaml:3: VirtualService/shop/r: spec.http[0].timeout: duration must be at least 1ms"]


def test_a_prefix_covered_by_an_earlier_one_is_a_warning() -> None:
    spec = vs(route("a", match=[{"uri": {"prefix": "/debug"}}]),
              route("b", match=[{"uri": {"prefix": "/debugs"}}]),
              route("c", match=[{"uri": {"prefix": "/debug/x"}, "headers": {"h": {"exact": "1"}}}]),
              route("d", match=[{"uri": {"prefix": "/debugz"}, "port": 8080}]),
              route("e", match=[{"uri": {"exact": "/debug/exact"}}]))
    assert errors(spec) == []
    assert warnings_of("VirtualService", spec) == [
        "spec.http[1].match[0]: match not used (its prefix '/debugs' is covered by spec.http[0].match[0], "
        "prefix '/debug')"]
