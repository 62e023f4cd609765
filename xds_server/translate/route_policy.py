"""Per-route policies of a VirtualService HTTP rule, as istiod builds them
(istio pilot/pkg/networking/core/route/route.go and route/retry/retry.go):

- `retry_policy`: `retry.ConvertPolicy` (Istio's default policy when `retries` is unset);
- `fault`: `TranslateFault` (HTTPFault for typed_per_filter_config);
- `mirror_policies`: `MirrorPercent`, `MirrorPercentByPolicy`, `TranslateRequestMirrorPolicy`;
- `cors`: `TranslateCORSPolicy`;
- `header_operations`: `TranslateHeadersOperations`;
- `hash_policy`: `consistentHashToHashPolicy`, and the DestinationRule lookups of
  `hashForHTTPDestination` / `hashForService` that choose the consistentHash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.validate_http import GO_HTTP_STATUSES
from xds_server.mesh.destination_rules import MergedDestinationRule
from xds_server.translate import envoy
from xds_server.translate.route_match import string_matcher

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
PREVIOUS_PRIORITIES = "envoy.retry_priorities.previous_priorities"
ConsistentHash = pb.LoadBalancerSettings.ConsistentHashLB

# grpc codes by name (istio pkg/util/grpc SupportedGRPCStatus).
GRPC_STATUS = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
    "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14,
    "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}


# ------------------------------------------------------------------ retries
def _previous_hosts() -> rc.RetryPolicy.RetryHostPredicate:
    return rc.RetryPolicy.RetryHostPredicate(
        name=PREVIOUS_HOSTS, typed_config=envoy.pack(previous_hosts_pb2.PreviousHostsPredicate()))


def default_retry_policy(consistent_hash: bool = False) -> rc.RetryPolicy:
    """Istio's default: 2 retries on connect failures / refused streams / gRPC unavailable or
    cancelled, preferring other hosts, except under a consistent hash (the retry would go to
    another host than the hash chose)."""
    out = rc.RetryPolicy(retry_on=DEFAULT_RETRY_ON, num_retries=envoy.u32(2), host_selection_retry_max_attempts=5)
    if not consistent_hash:
        out.retry_host_predicate.append(_previous_hosts())
    return out


def parse_retry_on(text: str) -> tuple[str, list[int]]:
    """istio parseRetryOn: comma-separated, trimmed; codes Go's http.StatusText knows go to the codes list."""
    conditions: list[str] = []
    codes: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit() and int(part) in GO_HTTP_STATUSES:
            codes.append(int(part))
        else:
            conditions.append(part)
    return ",".join(conditions), codes


def retry_policy(retries: pb.HTTPRetry | None, consistent_hash: bool = False) -> rc.RetryPolicy | None:
    """retry.ConvertPolicy; None (no retries at all) for `attempts: 0`."""
    if retries is None:
        return default_retry_policy(consistent_hash)
    if retries.attempts <= 0:
        return None
    out = default_retry_policy(consistent_hash)
    out.num_retries.value = retries.attempts
    if retries.retry_on:
        retry_on, codes = parse_retry_on(retries.retry_on)
        if codes and "retriable-status-codes" not in retry_on:
            retry_on += ",retriable-status-codes"
        out.retry_on = retry_on
        out.retriable_status_codes.extend(codes)
    if retries.HasField("per_try_timeout"):
        out.per_try_timeout.CopyFrom(retries.per_try_timeout)
    if retries.HasField("retry_remote_localities") and retries.retry_remote_localities:
        out.retry_priority.CopyFrom(rc.RetryPolicy.RetryPriority(
            name=PREVIOUS_PRIORITIES,
            typed_config=envoy.pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=2))))
    if retries.HasField("retry_ignore_previous_hosts"):
        del out.retry_host_predicate[:]
        if retries.retry_ignore_previous_hosts:
            out.retry_host_predicate.append(_previous_hosts())
    if retries.HasField("backoff"):
        out.retry_back_off.base_interval.CopyFrom(retries.backoff)
    return out


# ------------------------------------------------------------------ percentages
def percent_of(value: pb.Percent) -> percent_pb2.FractionalPercent:
    """istio translatePercentToFractionalPercent: per million."""
    return percent_pb2.FractionalPercent(numerator=int(value.value * 10000),
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def integer_percent(value: int) -> percent_pb2.FractionalPercent:
    return percent_pb2.FractionalPercent(numerator=value, denominator=percent_pb2.FractionalPercent.HUNDRED)


# ------------------------------------------------------------------ fault
def fault(spec: pb.HTTPFaultInjection) -> fault_pb2.HTTPFault | None:
    """TranslateFault; None when neither a fixed delay nor an HTTP/gRPC abort is left."""
    out = fault_pb2.HTTPFault()
    has_delay = has_abort = False
    if spec.HasField("delay") and spec.delay.WhichOneof("http_delay_type") == "fixed_delay":
        delay = common_fault_pb2.FaultDelay(fixed_delay=spec.delay.fixed_delay)
        delay.percentage.CopyFrom(percent_of(spec.delay.percentage) if spec.delay.HasField("percentage")
                                  else integer_percent(spec.delay.percent))
        out.delay.CopyFrom(delay)
        has_delay = True
    if spec.HasField("abort"):
        kind = spec.abort.WhichOneof("error_type")
        abort = fault_pb2.FaultAbort()
        if spec.abort.HasField("percentage"):
            # Without a percentage Envoy aborts nothing, as the Istio API documents.
            abort.percentage.CopyFrom(percent_of(spec.abort.percentage))
        if kind == "http_status":
            abort.http_status = spec.abort.http_status
            has_abort = True
        elif kind == "grpc_status" and spec.abort.grpc_status in GRPC_STATUS:
            abort.grpc_status = GRPC_STATUS[spec.abort.grpc_status]
            has_abort = True
        if has_abort:
            out.abort.CopyFrom(abort)
    return out if has_delay or has_abort else None


# ------------------------------------------------------------------ mirrors
def mirror_fraction(percentage: pb.Percent | None, percent: int | None) -> base_pb2.RuntimeFractionalPercent | None:
    """istio MirrorPercent: explicit percentage (0 means off), else the deprecated integer
    percent (0 means off), else 100%."""
    if percentage is not None:
        if percentage.value <= 0:
            return None
        return base_pb2.RuntimeFractionalPercent(default_value=percent_of(percentage))
    if percent is not None:
        if percent <= 0:
            return None
        return base_pb2.RuntimeFractionalPercent(default_value=integer_percent(percent))
    return base_pb2.RuntimeFractionalPercent(default_value=integer_percent(100))


def mirror_policy(cluster: str, fraction: base_pb2.RuntimeFractionalPercent) -> rc.RouteAction.RequestMirrorPolicy:
    """TranslateRequestMirrorPolicy; the Host stays the original (DISABLE_SHADOW_HOST_SUFFIX,
    on by default in istiod: no `-shadow` suffix)."""
    return rc.RouteAction.RequestMirrorPolicy(cluster=cluster, runtime_fraction=fraction,
                                              trace_sampled=wrappers_pb2.BoolValue(value=False),
                                              disable_shadow_host_suffix_append=True)


def mirror_policies(rule: pb.HTTPRoute, cluster_of: Callable[[pb.Destination], str],
                    ) -> list[rc.RouteAction.RequestMirrorPolicy]:
    out = []
    if rule.HasField("mirror"):
        fraction = mirror_fraction(rule.mirror_percentage if rule.HasField("mirror_percentage") else None,
                                   rule.mirror_percent if rule.HasField("mirror_percent") else None)
        if fraction is not None:
            out.append(mirror_policy(cluster_of(rule.mirror), fraction))
    for mirror in rule.mirrors:
        if not mirror.HasField("destination"):
            continue
        fraction = mirror_fraction(mirror.percentage if mirror.HasField("percentage") else None, None)
        if fraction is not None:
            out.append(mirror_policy(cluster_of(mirror.destination), fraction))
    return out


# ------------------------------------------------------------------ CORS
def cors(spec: pb.CorsPolicy) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_methods=",".join(spec.allow_methods),
        allow_headers=",".join(spec.allow_headers),
        expose_headers=",".join(spec.expose_headers),
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=integer_percent(100)),
    )
    if spec.allow_origins:
        for match in spec.allow_origins:
            matcher = string_matcher(match)
            if matcher is not None:
                out.allow_origin_string_match.append(matcher)
    else:  # the deprecated exact origins, only when allowOrigins is absent
        out.allow_origin_string_match.extend(string_pb2.StringMatcher(exact=o) for o in spec.allow_origin)
    if spec.HasField("max_age"):
        out.max_age = str(spec.max_age.seconds)
    if spec.HasField("allow_credentials"):
        out.allow_credentials.value = spec.allow_credentials
    # Envoy's behaviour before 1.30 (forward preflights no policy matched) unless told to IGNORE.
    out.forward_not_matching_preflights.value = spec.unmatched_preflights != pb.CorsPolicy.IGNORE
    return out


# ------------------------------------------------------------------ headers
@dataclass(slots=True)
class HeaderOperations:
    request_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    request_remove: list[str] = field(default_factory=list)
    response_add: list[base_pb2.HeaderValueOption] = field(default_factory=list)
    response_remove: list[str] = field(default_factory=list)
    authority: str = ""  # a request `set`/`add` of `:authority` or `host` (set wins)


def _internal(key: str) -> bool:
    return key.startswith(":") or key.lower() == "host"


def _authority(key: str) -> bool:
    return key.lower() in (":authority", "host")


def _append(values: dict[str, str], append: bool) -> tuple[list[base_pb2.HeaderValueOption], str]:
    action = (base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD if append
              else base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
    authority = ""
    out = []
    for key in sorted(values):
        if _authority(key):
            authority = values[key]
        if _internal(key):
            continue
        out.append(base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=values[key]),
                                              append_action=action))
    return out, authority


def header_operations(headers: pb.Headers) -> HeaderOperations:
    """TranslateHeadersOperations: `set` overwrites, `add` appends (each group sorted by key,
    set first); pseudo-headers and `host` are never emitted, an authority becomes a host rewrite."""
    req_set, set_authority = _append(dict(headers.request.set), False)
    req_add, add_authority = _append(dict(headers.request.add), True)
    resp_set, _ = _append(dict(headers.response.set), False)
    resp_add, _ = _append(dict(headers.response.add), True)
    return HeaderOperations(
        request_add=req_set + req_add,
        request_remove=[h for h in headers.request.remove if not _internal(h)],
        response_add=resp_set + resp_add,
        response_remove=[h for h in headers.response.remove if not _internal(h)],
        authority=set_authority or add_authority,
    )


# ------------------------------------------------------------------ consistent hash
def hash_policy(consistent: ConsistentHash | None) -> rc.RouteAction.HashPolicy | None:
    """consistentHashToHashPolicy: the request property the DestinationRule hashes on."""
    if consistent is None:
        return None
    kind = consistent.WhichOneof("hash_key")
    if kind == "http_header_name":
        return rc.RouteAction.HashPolicy(header=rc.RouteAction.HashPolicy.Header(
            header_name=consistent.http_header_name))
    if kind == "http_cookie":
        cookie = consistent.http_cookie
        out = rc.RouteAction.HashPolicy.Cookie(name=cookie.name, path=cookie.path)
        if cookie.HasField("ttl"):
            out.ttl.CopyFrom(cookie.ttl)
        out.attributes.extend(rc.RouteAction.HashPolicy.CookieAttribute(name=a.name, value=a.value)
                              for a in cookie.attributes)
        return rc.RouteAction.HashPolicy(cookie=out)
    if kind == "use_source_ip":
        return rc.RouteAction.HashPolicy(connection_properties=rc.RouteAction.HashPolicy.ConnectionProperties(
            source_ip=consistent.use_source_ip))
    if kind == "http_query_parameter_name":
        return rc.RouteAction.HashPolicy(query_parameter=rc.RouteAction.HashPolicy.QueryParameter(
            name=consistent.http_query_parameter_name))
    return None


def _consistent(policy: pb.TrafficPolicy | None) -> ConsistentHash | None:
    if policy is None or not policy.HasField("load_balancer"):
        return None
    lb = policy.load_balancer
    return lb.consistent_hash if lb.HasField("consistent_hash") else None


def _port_level(policy: pb.TrafficPolicy | None, port: int) -> ConsistentHash | None:
    if policy is None:
        return None
    for entry in policy.port_level_settings:
        if entry.port.number == port:
            lb = entry.load_balancer
            return lb.consistent_hash if entry.HasField("load_balancer") and lb.HasField("consistent_hash") else None
    return None


def destination_hash(rule: MergedDestinationRule | None, destination: pb.Destination) -> ConsistentHash | None:
    """hashForHTTPDestination: subset port-level > subset > DR port-level > DR, each level
    deciding only by its own consistentHash (port levels only for an explicit destination port)."""
    if rule is None:
        return None
    spec = rule.spec
    top = spec.traffic_policy if spec.HasField("traffic_policy") else None
    port = destination.port.number if destination.HasField("port") else 0
    chosen = _consistent(top)
    port_hash = _port_level(top, port) if port else None
    subset_hash = subset_port_hash = None
    for subset in spec.subsets:
        if subset.name == destination.subset:
            own = subset.traffic_policy if subset.HasField("traffic_policy") else None
            subset_hash = _consistent(own)
            subset_port_hash = _port_level(own, port) if port else None
            break
    for candidate in (subset_port_hash, subset_hash, port_hash):
        if candidate is not None:
            return candidate
    return chosen


def service_hash(rule: MergedDestinationRule | None, port: int) -> ConsistentHash | None:
    """hashForService (a service without a VirtualService): the DR's consistentHash, a
    port-level one for this port taking precedence."""
    if rule is None or not rule.spec.HasField("traffic_policy"):
        return None
    top = rule.spec.traffic_policy
    return _port_level(top, port) or _consistent(top)
