"""Istio's VirtualService rules (istio/istio `pkg/config/validation/validation.go`
`ValidateVirtualService` and `virtualservice.go` `validateHTTPRoute`), with field paths.

Weights: istiod rejects a negative weight and, with several destinations, a total of 0; it does
not require a sum of 100 (Envoy splits by the sum), so neither does xds-server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import Message

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config import validate_common as common
from xds_server.config import validate_http as http_rules
from xds_server.config.hostname import matches, subset_of
from xds_server.config.validate_fields import Report
from xds_server.config.validate_names import (
    fqdn_error,
    ip_subnet_error,
    is_dns1123_label,
    is_ip,
    label_key_error,
    label_value_error,
    port_error,
    wildcard_domain_error,
)
from xds_server.config.validate_regex import regex_error

MESH_GATEWAY = "mesh"
MAX_DIRECT_RESPONSE = 1024 * 1024
WARN_DIRECT_RESPONSE = 100 * 1024


def validate_virtual_service(spec: pb.VirtualService, namespace: str, report: Report) -> None:
    delegate = not spec.hosts
    if delegate:
        if spec.gateways:
            report.error("spec.gateways", "delegate virtual service (no hosts) must have no gateways specified")
        if spec.tls:
            report.error("spec.tls", "delegate virtual service (no hosts) must have no tls route specified")
        if spec.tcp:
            report.error("spec.tcp", "delegate virtual service (no hosts) must have no tcp route specified")
    applies_to_gateway = bool(spec.gateways) and MESH_GATEWAY not in spec.gateways
    gateway_names(list(spec.gateways), "spec.gateways", report)
    if not applies_to_gateway:
        for i, route in enumerate(spec.http):
            for j, match in enumerate(route.match):
                for field, names in (("headers", match.headers), ("withoutHeaders", match.without_headers)):
                    for name in sorted(names):
                        if http_rules.is_jwt_claim(name):
                            report.error(
                                f"spec.http[{i}].match[{j}].{field}[{name}]",
                                "JWT claim based routing is only supported for gateways, not for the mesh",
                            )
    _hosts(spec, applies_to_gateway, report)
    if not (spec.http or spec.tcp or spec.tls):
        report.error("spec", "http, tcp or tls must be provided in virtual service")
    for i, route in enumerate(spec.http):
        _http_route(route, delegate, f"spec.http[{i}]", report)
    for i, tls in enumerate(spec.tls):
        _tls_route(tls, spec, applies_to_gateway, f"spec.tls[{i}]", report)
    for i, tcp in enumerate(spec.tcp):
        _tcp_route(tcp, f"spec.tcp[{i}]", report)
    common.export_to(list(spec.export_to), namespace, "spec.exportTo", report, service_entry=False)
    _unreachable(spec, report)


# ---------------------------------------------------------------- hosts and gateways
def _hosts(spec: pb.VirtualService, applies_to_gateway: bool, report: Report) -> None:
    all_valid = True
    for i, host in enumerate(spec.hosts):
        here = f"spec.hosts[{i}]"
        err = wildcard_domain_error(host)
        if err and not is_ip(host):
            report.error(here, err)
            all_valid = False
        elif not applies_to_gateway and host == "*":
            report.error(here, "wildcard host * is not allowed for virtual services bound to the mesh gateway")
            all_valid = False
    if all_valid:
        hosts = list(spec.hosts)
        for i, a in enumerate(hosts):
            for b in hosts[i + 1 :]:
                if matches(a, b):
                    report.error(f"spec.hosts[{i}]", f"duplicate hosts in virtual service: {a} & {b}")


def gateway_names(names: list[str], path: str, report: Report) -> None:
    """`namespace/name`, `mesh`, or a legacy `name.namespace` FQDN (a warning)."""
    for i, name in enumerate(names):
        here = f"{path}[{i}]"
        namespace, slash, gateway = name.partition("/")
        if not slash:
            if "." in name:
                parts = name.split(".")
                report.warn(here, f"legacy gateway name {name!r}; prefer the <namespace>/<name> form "
                            f"{parts[1]}/{parts[0]}")
            report.check(here, fqdn_error(name))
            continue
        if not namespace or not gateway:
            report.error(here, "gateway namespace and name cannot be empty")
            continue
        if not is_dns1123_label(namespace):
            report.error(here, f"invalid value for namespace: {namespace!r}")
        if not is_dns1123_label(gateway):
            report.error(here, f"invalid value for gateway name: {gateway!r}")


def _labels(labels: Mapping[str, str], path: str, report: Report) -> None:
    for key, value in sorted(labels.items()):
        report.check(f"{path}[{key}]", label_key_error(key) or label_value_error(value))


# ---------------------------------------------------------------- destinations
def destination(dest: pb.Destination, path: str, report: Report) -> None:
    if dest.host == "":
        report.error(f"{path}.host", "required")
    elif dest.host == "*":
        report.error(f"{path}.host", "invalid destination host *")
    else:
        report.check(f"{path}.host", wildcard_domain_error(dest.host))
    if dest.subset:
        report.check(f"{path}.subset", subset_name_error(dest.subset))
    if dest.HasField("port"):
        report.check(f"{path}.port.number", port_error(dest.port.number))


def subset_name_error(name: str) -> str | None:
    if not name:
        return "subset name cannot be empty"
    if not is_dns1123_label(name):
        return f"subset name {name!r} is invalid (must be a DNS-1123 label)"
    return None


def _weights(weights: list[int], path: str, report: Report) -> None:
    for i, weight in enumerate(weights):
        if weight < 0:
            report.error(f"{path}[{i}].weight", f"weight {weight} < 0")
    if len(weights) > 1 and sum(weights) == 0:
        report.error(path, "total destination weight = 0")


def _route_destinations(route: list[pb.RouteDestination], path: str, report: Report) -> None:
    for i, rd in enumerate(route):
        if not rd.HasField("destination"):
            report.error(f"{path}[{i}].destination", "required")
        else:
            destination(rd.destination, f"{path}[{i}].destination", report)
    _weights([rd.weight for rd in route], path, report)


# ---------------------------------------------------------------- HTTP
def _http_route(route: pb.HTTPRoute, in_delegate: bool, path: str, report: Report) -> None:
    _conflicts(route, in_delegate, path, report)
    for j, match in enumerate(route.match):
        _http_match(match, f"{path}.match[{j}]", report)
    if route.HasField("headers"):
        http_rules.headers(route.headers, f"{path}.headers", report)
    if route.HasField("cors_policy"):
        _cors(route.cors_policy, f"{path}.corsPolicy", report)
    if route.HasField("fault"):
        _fault(route.fault, f"{path}.fault", report)
    if route.HasField("mirror_percent"):
        if route.mirror_percent > 100:
            report.error(f"{path}.mirrorPercent", f"must have a max value of 100 (it has {route.mirror_percent})")
        report.warn(f"{path}.mirrorPercent", 'deprecated; use "mirrorPercentage" instead')
    if route.HasField("mirror_percentage"):
        _mirror_percentage(route.mirror_percentage.value, f"{path}.mirrorPercentage.value", report)
    if route.HasField("mirror"):
        destination(route.mirror, f"{path}.mirror", report)
    for i, mirror in enumerate(route.mirrors):
        here = f"{path}.mirrors[{i}]"
        if not mirror.HasField("destination"):
            report.error(f"{here}.destination", "required for mirrors")
            continue
        destination(mirror.destination, f"{here}.destination", report)
        if mirror.HasField("percentage"):
            _mirror_percentage(mirror.percentage.value, f"{here}.percentage.value", report)
    if route.HasField("redirect"):
        _redirect(route.redirect, f"{path}.redirect", report)
    if route.HasField("direct_response"):
        _direct_response(route.direct_response, f"{path}.directResponse", report)
    if route.HasField("retries"):
        _retries(route.retries, f"{path}.retries", report)
    if route.HasField("rewrite"):
        _rewrite(route.rewrite, f"{path}.rewrite", report)
    _authority_rewrite(route, path, report)
    for i, rd in enumerate(route.route):
        here = f"{path}.route[{i}]"
        if not rd.HasField("destination"):
            report.error(f"{here}.destination", "required")
        else:
            destination(rd.destination, f"{here}.destination", report)
        if rd.HasField("headers"):
            http_rules.headers(rd.headers, f"{here}.headers", report)
    _weights([rd.weight for rd in route.route], f"{path}.route", report)
    if route.HasField("timeout"):
        common.duration(route.timeout, f"{path}.timeout", report)
    if route.HasField("delegate"):
        _delegate(route.delegate, f"{path}.delegate", report)


def _conflicts(route: pb.HTTPRoute, in_delegate: bool, path: str, report: Report) -> None:
    """`validateHTTPRouteConflict`: one action per rule; a root rule with `delegate` has no action."""
    if not in_delegate and route.HasField("delegate"):
        if route.HasField("redirect"):
            report.error(f"{path}.redirect", "a root HTTP route with delegate must not specify redirect")
        if route.route:
            report.error(f"{path}.route", "a root HTTP route with delegate must not specify route")
        return
    if in_delegate and route.HasField("delegate"):
        report.error(f"{path}.delegate", "delegate HTTP route cannot contain delegate")
    has = {name: route.HasField(field) for name, field in (
        ("redirect", "redirect"), ("fault", "fault"), ("rewrite", "rewrite"), ("directResponse", "direct_response"))}
    if has["redirect"]:
        if route.route:
            report.error(f"{path}.route", "HTTP route cannot contain both route and redirect")
        for other in ("fault", "rewrite", "directResponse"):
            if has[other]:
                report.error(f"{path}.{other}", f"HTTP route cannot contain both {other} and redirect")
    elif has["directResponse"]:
        if route.route:
            report.error(f"{path}.route", "HTTP route cannot contain both route and directResponse")
        for other in ("fault", "rewrite"):
            if has[other]:
                report.error(f"{path}.{other}", f"HTTP route cannot contain both {other} and directResponse")
    elif not route.route:
        report.error(f"{path}.route", "HTTP route, redirect or directResponse is required")
    if route.HasField("mirror") and route.mirrors:
        report.error(f"{path}.mirrors", "HTTP route cannot contain both mirror and mirrors")


def _http_match(match: pb.HTTPMatchRequest, path: str, report: Report) -> None:
    for name in sorted(match.headers):
        here = f"{path}.headers[{name}]"
        report.check(here, http_rules.header_name_error(name, allow_jwt_claim=True))
        http_rules.string_match(match.headers[name], here, report)
    for name in sorted(match.without_headers):
        here = f"{path}.withoutHeaders[{name}]"
        report.check(here, http_rules.header_name_error(name, allow_jwt_claim=True))
        sm = match.without_headers[name]
        if sm.regex != "*":  # `*` means "present", it is not a regex
            http_rules.string_match(sm, here, report)
    if match.HasField("uri"):
        http_rules.string_match(match.uri, f"{path}.uri", report, allow_empty_prefix=True)
    for field in ("scheme", "method", "authority"):
        if match.HasField(field):
            http_rules.string_match(getattr(match, field), f"{path}.{field}", report)
    for name in sorted(match.query_params):
        http_rules.string_match(match.query_params[name], f"{path}.queryParams[{name}]", report)
    _static_filters(match, path, report)


def _static_filters(match: pb.HTTPMatchRequest | pb.TLSMatchAttributes | pb.L4MatchAttributes, path: str,
                    report: Report) -> None:
    """The match fields every route kind shares: port, sourceLabels, gateways, sourceNamespace."""
    if match.port:
        report.check(f"{path}.port", port_error(match.port))
    _labels(match.source_labels, f"{path}.sourceLabels", report)
    gateway_names(list(match.gateways), f"{path}.gateways", report)
    if match.source_namespace and not is_dns1123_label(match.source_namespace):
        report.error(f"{path}.sourceNamespace", f"sourceNamespace match {match.source_namespace!r} is invalid")


def _percentage(value: float, path: str, report: Report) -> None:
    if value < 0.0 or value > 100.0 or 0.0 < value < 0.0001:
        report.error(path, f"percentage {value:g} is neither 0.0, nor in range [0.0001, 100.0]")


def _mirror_percentage(value: float, path: str, report: Report) -> None:
    if value > 100:
        report.error(path, f"mirror percentage must have a max value of 100 (it has {value:g})")
    if value < 0:
        report.error(path, f"mirror percentage must have a min value of 0 (it has {value:g})")


def _fault(fault: pb.HTTPFaultInjection, path: str, report: Report) -> None:
    if not fault.HasField("abort") and not fault.HasField("delay"):
        report.error(path, "HTTP fault injection must have an abort and/or a delay")
    if fault.HasField("abort"):
        abort, here = fault.abort, f"{path}.abort"
        if abort.HasField("percentage"):
            _percentage(abort.percentage.value, f"{here}.percentage.value", report)
        kind = abort.WhichOneof("error_type")
        if kind == "grpc_status":
            if abort.grpc_status not in http_rules.GRPC_STATUSES:
                report.error(f"{here}.grpcStatus", f"gRPC status {abort.grpc_status!r} is not supported "
                             f"(one of {', '.join(sorted(http_rules.GRPC_STATUSES))})")
        elif kind == "http2_error":
            report.error(f"{here}.http2Error", "HTTP/2 abort fault injection is not supported")
        elif kind == "http_status":
            if not 200 <= abort.http_status <= 600:
                report.error(f"{here}.httpStatus", f"HTTP status {abort.http_status} is not in range 200-599")
        else:
            report.warn(here, "abort configured, but error type not set")
    if fault.HasField("delay"):
        delay, here = fault.delay, f"{path}.delay"
        if delay.HasField("percentage"):
            _percentage(delay.percentage.value, f"{here}.percentage.value", report)
        if delay.percent and not 0 <= delay.percent <= 100:
            report.error(f"{here}.percent", f"percentage {delay.percent} is not in range 0..100")
        kind = delay.WhichOneof("http_delay_type")
        if kind == "fixed_delay":
            common.duration(delay.fixed_delay, f"{here}.fixedDelay", report)
        elif kind == "exponential_delay":
            common.duration(delay.exponential_delay, f"{here}.exponentialDelay", report)
            report.error(f"{here}.exponentialDelay", "exponentialDelay is not supported")


def _cors(cors: pb.CorsPolicy, path: str, report: Report) -> None:
    for i, origin in enumerate(cors.allow_origins):
        here = f"{path}.allowOrigins[{i}]"
        kind = origin.WhichOneof("match_type")
        if kind is None or getattr(origin, kind) == "":
            report.error(here, "not a valid match for CORS allow origins (exact, prefix or regex, non-empty)")
        elif kind == "regex":
            report.check(f"{here}.regex", regex_error(origin.regex))
    for i, method in enumerate(cors.allow_methods):
        if method not in http_rules.HTTP_METHODS:
            report.error(f"{path}.allowMethods[{i}]", f"{method!r} is not a supported HTTP method")
    for field, names in (("allowHeaders", cors.allow_headers), ("exposeHeaders", cors.expose_headers)):
        for i, name in enumerate(names):
            report.check(f"{path}.{field}[{i}]", http_rules.header_name_error(name, allow_star=True))
    if cors.HasField("max_age"):
        common.duration(cors.max_age, f"{path}.maxAge", report)
        if cors.max_age.nanos > 0:
            report.error(f"{path}.maxAge", "max_age duration is accurate only to seconds precision")
    if cors.allow_origin:
        report.warn(f"{path}.allowOrigin", 'deprecated; use "allowOrigins" instead')


def _redirect(redirect: pb.HTTPRedirect, path: str, report: Report) -> None:
    if not (redirect.uri or redirect.authority or redirect.WhichOneof("redirect_port") or redirect.scheme):
        report.error(path, "redirect must specify uri, authority, scheme, or port")
        return
    if redirect.redirect_code and not 300 <= redirect.redirect_code <= 399:
        report.error(f"{path}.redirectCode", f"{redirect.redirect_code} is not a valid redirect code, must be 3xx")
    if redirect.scheme and redirect.scheme not in ("http", "https"):
        report.error(f"{path}.scheme", 'invalid redirect scheme, must be "http" or "https"')
    if redirect.WhichOneof("redirect_port") == "port":
        report.check(f"{path}.port", port_error(redirect.port))


def _direct_response(response: pb.HTTPDirectResponse, path: str, report: Report) -> None:
    if response.HasField("body"):
        body = response.body
        size = len(body.bytes) if body.WhichOneof("specifier") == "bytes" else len(body.string.encode())
        if size > MAX_DIRECT_RESPONSE:
            report.error(f"{path}.body", "large direct_responses may impact control plane performance, "
                         "must be less than 1MB")
        elif size > WARN_DIRECT_RESPONSE:
            report.warn(f"{path}.body", "large direct_responses may impact control plane performance")
    if not 200 <= response.status <= 600:
        report.error(f"{path}.status", f"HTTP status {response.status} is not in range 200-599")


def _retries(retries: pb.HTTPRetry, path: str, report: Report) -> None:
    if retries.attempts < 0:
        report.error(f"{path}.attempts", "attempts cannot be negative")
    if retries.attempts == 0 and (
        retries.HasField("per_try_timeout") or retries.retry_on or retries.HasField("retry_remote_localities")
    ):
        report.error(f"{path}.attempts", "http retry policy configured when attempts are set to 0 (disabled)")
    if retries.HasField("per_try_timeout"):
        common.duration(retries.per_try_timeout, f"{path}.perTryTimeout", report)
    if retries.HasField("backoff"):
        common.duration(retries.backoff, f"{path}.backoff", report)
    if retries.retry_on:
        report.check(f"{path}.retryOn", http_rules.retry_on_error(retries.retry_on))


def _rewrite(rewrite: pb.HTTPRewrite, path: str, report: Report) -> None:
    regex = rewrite.HasField("uri_regex_rewrite")
    if rewrite.uri and regex:
        report.error(path, "rewrite may only contain one of uri or uriRegexRewrite")
        return
    if not rewrite.uri and not regex and not rewrite.authority:
        report.error(path, "rewrite must specify at least one of uri, uriRegexRewrite, or authority")
        return
    if regex:
        rr = rewrite.uri_regex_rewrite
        if not rr.match or not rr.rewrite:
            report.error(f"{path}.uriRegexRewrite", "requires both match and rewrite")
        else:
            report.check(f"{path}.uriRegexRewrite.match", regex_error(rr.match))


def _authority_rewrite(route: pb.HTTPRoute, path: str, report: Report) -> None:
    """The authority may be rewritten in one place only (`rewrite.authority` or a Host header op)."""
    current = route.rewrite.authority
    request = route.headers.request
    for field in ("set", "add"):
        for name in sorted(getattr(request, field)):
            if not http_rules.is_authority(name):
                continue
            value = getattr(request, field)[name]
            if current:
                report.error(f"{path}.headers.request.{field}[{name}]",
                             f"authority header cannot be set multiple times: have {current!r}, "
                             f"attempting to set {value!r}")
                return
            current = value


def _delegate(delegate: pb.Delegate, path: str, report: Report) -> None:
    if not delegate.name:
        report.warn(f"{path}.name", "not set: this rule refers to no VirtualService and is dropped")
    if delegate.namespace and not is_dns1123_label(delegate.namespace):
        report.error(f"{path}.namespace", f"invalid namespace {delegate.namespace!r}")


# ---------------------------------------------------------------- TLS and TCP
def _tls_route(route: pb.TLSRoute, spec: pb.VirtualService, to_gateway: bool, path: str, report: Report) -> None:
    if not route.match:
        report.error(f"{path}.match", "TLS route must have at least one match condition")
    for j, match in enumerate(route.match):
        here = f"{path}.match[{j}]"
        if not match.sni_hosts:
            report.error(f"{here}.sniHosts", "TLS match must have at least one SNI host")
        for k, sni in enumerate(match.sni_hosts):
            _sni_host(sni, spec, to_gateway, f"{here}.sniHosts[{k}]", report)
        _l4_common(match, here, report)
    if not route.route:
        report.error(f"{path}.route", "TLS route is required")
    _route_destinations(list(route.route), f"{path}.route", report)


def _sni_host(sni: str, spec: pb.VirtualService, to_gateway: bool, path: str, report: Report) -> None:
    err = wildcard_domain_error(sni)
    if err:
        if is_ip(sni):
            report.warn(path, f"using an IP address ({sni!r}) goes against the SNI spec; "
                        "most clients do not support it")
        else:
            report.error(path, err)
        return
    if not any(subset_of(sni, host) for host in spec.hosts):
        report.error(path, f"SNI host {sni!r} is not a compatible subset of any of the virtual service hosts: "
                     f"[{', '.join(spec.hosts)}]")


def _l4_common(match: pb.TLSMatchAttributes | pb.L4MatchAttributes, path: str, report: Report) -> None:
    for k, subnet in enumerate(match.destination_subnets):
        report.check(f"{path}.destinationSubnets[{k}]", ip_subnet_error(subnet))
    _static_filters(match, path, report)


def _tcp_route(route: pb.TCPRoute, path: str, report: Report) -> None:
    for j, match in enumerate(route.match):
        _l4_common(match, f"{path}.match[{j}]", report)
    if not route.route:
        report.error(f"{path}.route", "TCP route is required")
    _route_destinations(list(route.route), f"{path}.route", report)


# ---------------------------------------------------------------- unreachable rules (warnings)
def _unreachable(spec: pb.VirtualService, report: Report) -> None:
    """`analyzeUnreachable*Rules`: a rule after a match-less one, matches repeated verbatim, and
    HTTP prefix matches covered by an earlier one."""
    _unreachable_rules("http", [list(rule.match) for rule in spec.http], report)
    _unreachable_rules("tcp", [list(rule.match) for rule in spec.tcp], report)
    _unreachable_rules("tls", [list(rule.match) for rule in spec.tls], report)
    _covered_prefixes(spec, report)


def _unreachable_rules(field: str, rules: list[list[Message]], report: Report) -> None:
    seen: dict[bytes, int] = {}
    catch_all = -1
    for i, rule_matches in enumerate(rules):
        here = f"spec.{field}[{i}]"
        if not rule_matches:
            if catch_all >= 0:
                report.warn(here, "rule not used (only the last rule can have no matches; "
                            f"spec.{field}[{catch_all}] has none)")
            catch_all = i
            continue
        duplicates = 0
        for j, match in enumerate(rule_matches):
            key = _match_key(match)
            if key in seen:
                report.warn(f"{here}.match[{j}]",
                            f"match not used (duplicate of a match in spec.{field}[{seen[key]}])")
                duplicates += 1
            else:
                seen[key] = i
        if duplicates == len(rule_matches):
            report.warn(here, "rule not used (all matches used by prior rules)")


def _match_key(match: Message) -> bytes:
    """The match in canonical form (deterministic serialization sorts map entries), without its
    name: names do not change what a match selects. istiod compares JSON; the result is the same."""
    if isinstance(match, pb.HTTPMatchRequest) and match.name:
        copy = pb.HTTPMatchRequest()
        copy.CopyFrom(match)
        copy.name = ""
        match = copy
    return match.SerializeToString(deterministic=True)


@dataclass(frozen=True, slots=True)
class _PrefixMatch:
    """istio `OverlappingMatchValidationForHTTPRoute`: a prefix match and what else it requires."""

    path: str
    prefix: str
    port: int
    method: str
    authority: str
    headers: Mapping[str, str]
    query_params: Mapping[str, str]
    without_headers: Mapping[str, str]


def _exact_or_prefix(sm: pb.StringMatch) -> str:
    """istio `assignExactOrPrefix`: `exact:v`, `prefix:v`, or "" (regexes are not compared)."""
    if sm.WhichOneof("match_type") == "exact" and sm.exact:
        return f"exact:{sm.exact}"
    if sm.WhichOneof("match_type") == "prefix" and sm.prefix:
        return f"prefix:{sm.prefix}"
    return ""


def _covered_prefixes(spec: pb.VirtualService, report: Report) -> None:
    """istio `genMatchHTTPRoutes` + `coveredValidation`: a later prefix match that an earlier,
    shorter prefix with the same or looser other conditions already catches is never used."""
    seen: set[bytes] = set()
    found: list[_PrefixMatch] = []
    for i, rule in enumerate(spec.http):
        for j, match in enumerate(rule.match):
            key = _match_key(match)
            if key in seen:
                continue  # reported as a duplicate
            seen.add(key)
            if match.uri.WhichOneof("match_type") != "prefix" or not match.uri.prefix:
                continue
            found.append(_PrefixMatch(
                f"spec.http[{i}].match[{j}]", match.uri.prefix, match.port,
                _exact_or_prefix(match.method) or "exact:GET",  # istiod's default when unset
                _exact_or_prefix(match.authority),
                {k: _exact_or_prefix(v) for k, v in match.headers.items()},
                {k: _exact_or_prefix(v) for k, v in match.query_params.items()},
                {k: _exact_or_prefix(v) for k, v in match.without_headers.items()},
            ))
    for a_index, a in enumerate(found):
        for b in found[a_index + 1 :]:
            if b.prefix != a.prefix and _covers(a, b):
                report.warn(b.path, f"match not used (its prefix {b.prefix!r} is covered by {a.path}, "
                                    f"prefix {a.prefix!r})")


def _covers(a: _PrefixMatch, b: _PrefixMatch) -> bool:
    """istio `coveredValidation`, including its comparisons as written (`HasPrefix(a, b)`)."""
    if not b.prefix.startswith(a.prefix) or a.port != b.port:
        return False
    for a_value, b_value in ((a.method, b.method), (a.authority, b.authority)):
        if a_value != b_value and not a_value.startswith(b_value):
            return False
    for a_map, b_map in ((a.headers, b.headers), (a.query_params, b.query_params),
                         (a.without_headers, b.without_headers)):
        if len(a_map) != len(b_map):
            return False
        for key, a_value in a_map.items():
            if key not in b_map or (a_value != b_map[key] and not a_value.startswith(b_map[key])):
                return False
    return True
