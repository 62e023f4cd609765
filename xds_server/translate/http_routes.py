"""One VirtualService's HTTP rules -> the Envoy routes of one outbound route "P", as istiod builds
them for sidecars (istio pilot/pkg/networking/core/route/route.go
`BuildHTTPRoutesForVirtualService`, `TranslateRoute`, `applyHTTPRouteDestination`,
`GetDestinationCluster`, `ApplyRedirect`, `ApplyDirectResponse`, `GetRouteOperation`).

- rules in order, one route per match entry (one route for a rule without `match`); a match for
  another port, or whose source tests fail for this proxy, yields nothing; emission stops after
  the first catch-all route;
- destinations are `outbound|<port>|<subset>|<host>`, the port being the destination's, else the
  route's port P (istiod's sidecar lookup map holds services trimmed to P);
- a single destination sets `cluster`, several set `weighted_clusters` (weight 0 dropped, no
  total_weight, Envoy splits by the sum).

Pure: the caller passes the proxy facts the routes depend on (its namespace and the labels some
rule tests) and the DestinationRule consistent hash of each destination.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc

from xds_server._proto import istio_config_pb2 as pb
from xds_server.mesh import names
from xds_server.mesh.virtual_services import ResolvedVirtualService
from xds_server.translate import envoy, route_policy
from xds_server.translate.route_match import is_catch_all, route_match, source_matches

UNKNOWN_SERVICE = "UnknownService"  # istiod's cluster name for a destination without a host
_REDIRECT_CODES = {
    0: rc.RedirectAction.MOVED_PERMANENTLY,
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}
# The DestinationRule consistent hash of a destination (istio hashForHTTPDestination).
HashOf = Callable[[pb.Destination], route_policy.ConsistentHash | None]


def http_destinations(vs: ResolvedVirtualService) -> Iterable[pb.Destination]:
    """Every route destination of the VirtualService's HTTP rules (what hash policies key on)."""
    for rule in vs.spec.http:
        for rd in rule.route:
            if rd.HasField("destination"):
                yield rd.destination


def mirror_destinations(vs: ResolvedVirtualService) -> Iterable[pb.Destination]:
    for rule in vs.spec.http:
        if rule.HasField("mirror"):
            yield rule.mirror
        yield from (m.destination for m in rule.mirrors if m.HasField("destination"))


def destination_cluster(destination: pb.Destination, port: int, service_port: int | None) -> str:
    """istio GetDestinationCluster for a sidecar: the destination's port, else `service_port`
    (the port of a single-port service, as the caller's lookup of the host finds it), else the
    port being built."""
    if not destination.host:
        return UNKNOWN_SERVICE
    if destination.HasField("port"):
        number = destination.port.number
    else:
        number = service_port if service_port is not None else port
    return names.outbound_cluster(number, destination.host, destination.subset)


def _route_cluster(destination: pb.Destination, port: int, single_ports: Mapping[str, int]) -> str:
    """GetDestinationCluster on route port P: istiod's lookup map holds services trimmed to P, so
    P itself; on merged routes (P = 0) the port of a single-port service, else 0."""
    return destination_cluster(destination, port, single_ports.get(destination.host) if port == 0 else None)


def config_path(vs: ResolvedVirtualService) -> str:
    """The route metadata `istio.config` (istio `util.BuildConfigInfoMetadata`): the
    VirtualService's path in istiod's internal API version, v1."""
    meta = vs.source.meta
    return f"/apis/networking.istio.io/v1/namespaces/{meta.namespace}/virtual-service/{meta.name}"


def operation(route: rc.Route, vs_name: str, port: int) -> str:
    """istio GetRouteOperation: `host:port<path>` for one outbound cluster, else `<vs>:<P><path>`."""
    match = route.match
    kind = match.WhichOneof("path_specifier")
    path = "/*"
    if kind == "prefix":
        path = match.prefix + "*"
    elif kind == "path":
        path = match.path
    elif kind == "safe_regex":
        path = match.safe_regex.regex
    parsed = names.parse_cluster(route.route.cluster) if route.HasField("route") else None
    if parsed is not None:
        return f"{parsed.host}:{parsed.port}{path}"
    return f"{vs_name}:{port}{path}"


def _set_timeout(action: rc.RouteAction, rule: pb.HTTPRoute) -> None:
    """istio setTimeout: the rule's timeout, else 0s (none), and the same as max_grpc_timeout.

    Not MaxStreamDuration, the field's documented replacement: a route with any
    max_stream_duration block makes Envoy ignore `timeout` (envoy source/common/router/
    config_impl.cc `using_new_timeouts_`), so a VirtualService timeout would never fire."""
    timeout = rule.timeout if rule.HasField("timeout") else envoy.duration(0)
    action.timeout.CopyFrom(timeout)
    action.max_grpc_timeout.CopyFrom(timeout)


def _apply_redirect(route: rc.Route, redirect: pb.HTTPRedirect, port: int) -> bool:
    """istio ApplyRedirect; False for a code Envoy cannot send (the route is left out)."""
    code = _REDIRECT_CODES.get(redirect.redirect_code)
    if code is None:
        return False
    action = rc.RedirectAction(host_redirect=redirect.authority, path_redirect=redirect.uri, response_code=code)
    if redirect.scheme:
        action.scheme_redirect = redirect.scheme
    which = redirect.WhichOneof("redirect_port")
    if which is not None:
        if which == "derive_port":
            if redirect.derive_port == pb.HTTPRedirect.FROM_REQUEST_PORT:
                action.port_redirect = port  # routes are built per listener port
        else:
            action.port_redirect = redirect.port
        scheme = redirect.scheme or "http"
        if (action.port_redirect, scheme) in ((80, "http"), (443, "https")):
            action.port_redirect = 0
    route.redirect.CopyFrom(action)
    return True


def _apply_direct_response(route: rc.Route, direct: pb.HTTPDirectResponse) -> None:
    action = rc.DirectResponseAction(status=direct.status)
    kind = direct.body.WhichOneof("specifier") if direct.HasField("body") else None
    if kind == "string":
        action.body.inline_string = direct.body.string
    elif kind == "bytes":
        action.body.inline_bytes = direct.body.bytes
    route.direct_response.CopyFrom(action)


def _add_header_ops(target: rc.Route | rc.WeightedCluster.ClusterWeight,
                    ops: route_policy.HeaderOperations) -> None:
    target.request_headers_to_add.extend(ops.request_add)
    target.request_headers_to_remove.extend(ops.request_remove)
    target.response_headers_to_add.extend(ops.response_add)
    target.response_headers_to_remove.extend(ops.response_remove)


def _apply_destinations(route: rc.Route, rule: pb.HTTPRoute, port: int, authority: str, hash_of: HashOf,
                        single_ports: Mapping[str, int]) -> None:
    """istio applyHTTPRouteDestination."""
    single = len(rule.route) == 1
    single_hash = hash_of(rule.route[0].destination) if single else None
    consistent = single_hash is not None
    action = route.route
    retry = route_policy.retry_policy(rule.retries if rule.HasField("retries") else None, consistent)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    _set_timeout(action, rule)
    if rule.HasField("rewrite"):
        rewrite = rule.rewrite
        if rewrite.HasField("uri_regex_rewrite"):
            action.regex_rewrite.pattern.regex = rewrite.uri_regex_rewrite.match
            action.regex_rewrite.substitution = rewrite.uri_regex_rewrite.rewrite
        elif rewrite.uri:
            action.prefix_rewrite = rewrite.uri
        if rewrite.authority:
            authority = rewrite.authority
    if authority:
        action.host_rewrite_literal = authority
    mirrors = route_policy.mirror_policies(rule, lambda d: _route_cluster(d, port, single_ports))
    action.request_mirror_policies.extend(mirrors)
    policies: list[rc.RouteAction.HashPolicy] = []
    if single:
        dest = rule.route[0]
        action.cluster = _route_cluster(dest.destination, port, single_ports)
        if dest.HasField("headers"):
            ops = route_policy.header_operations(dest.headers)
            _add_header_ops(route, ops)
            if ops.authority and action.WhichOneof("host_rewrite_specifier") is None:
                action.host_rewrite_literal = ops.authority
        policies.append(route_policy.hash_policy(single_hash))
    else:
        for dest in rule.route:
            if dest.weight == 0:
                continue
            weight = rc.WeightedCluster.ClusterWeight(name=_route_cluster(dest.destination, port, single_ports),
                                                      weight=envoy.u32(dest.weight))
            if dest.HasField("headers"):
                ops = route_policy.header_operations(dest.headers)
                _add_header_ops(weight, ops)
                if ops.authority:
                    weight.host_rewrite_literal = ops.authority
            action.weighted_clusters.clusters.append(weight)
            policies.append(route_policy.hash_policy(hash_of(dest.destination)))
    action.hash_policy.extend(p for p in policies if p is not None)


def translate_route(vs: ResolvedVirtualService, rule: pb.HTTPRoute, match: pb.HTTPMatchRequest | None,
                    port: int, hash_of: HashOf, single_ports: Mapping[str, int],
                    metadata: base_pb2.Metadata) -> rc.Route | None:
    """istio TranslateRoute for one (rule, match) on route port `port` (0: every port);
    `metadata` is the VirtualService's (config_path)."""
    name = rule.name
    if match is not None and match.name:
        name = f"{name}.{match.name}"
    out = rc.Route(name=name, match=route_match(match), metadata=metadata)
    if match is not None and match.stat_prefix:
        out.stat_prefix = match.stat_prefix
    authority = ""
    if rule.HasField("headers"):
        ops = route_policy.header_operations(rule.headers)
        _add_header_ops(out, ops)
        authority = ops.authority
    if rule.HasField("redirect"):
        if not _apply_redirect(out, rule.redirect, port):
            return None
    elif rule.HasField("direct_response"):
        _apply_direct_response(out, rule.direct_response)
    else:
        _apply_destinations(out, rule, port, authority, hash_of, single_ports)
    out.decorator.operation = operation(out, vs.source.meta.name, port)
    if rule.HasField("fault"):
        fault = route_policy.fault(rule.fault)
        if fault is not None:
            out.typed_per_filter_config[envoy.FAULT].CopyFrom(envoy.pack(fault))
    if rule.HasField("cors_policy"):
        out.typed_per_filter_config[envoy.CORS].CopyFrom(envoy.pack(route_policy.cors(rule.cors_policy)))
    return out


def virtual_service_routes(vs: ResolvedVirtualService, port: int, proxy_namespace: str,
                           proxy_labels: Mapping[str, str], hash_of: HashOf,
                           single_ports: Mapping[str, int]) -> tuple[rc.Route, ...]:
    """istio BuildHTTPRoutesForVirtualService: the routes `vs` gives route port `port`; empty
    when every rule is filtered out (the VirtualService then binds nothing on this port)."""
    labels = dict(proxy_labels)
    metadata = envoy.config_metadata(config_path(vs))
    out: list[rc.Route] = []
    for rule in vs.spec.http:
        for match in rule.match or (None,):
            if match is not None and ((match.port and match.port != port)
                                      or not source_matches(match, labels, proxy_namespace)):
                continue  # an entry for another port, or for other clients
            route = translate_route(vs, rule, match, port, hash_of, single_ports, metadata)
            if route is not None:
                out.append(route)
            # A rule without match is a catch-all even when its route is left out: later rules
            # are unreachable, as they are after the first catch-all route.
            if match is None or (route is not None and is_catch_all(route.match)):
                return tuple(out)
    return tuple(out)


def serialized_routes(vs: ResolvedVirtualService, port: int, proxy_namespace: str,
                      proxy_labels: tuple[tuple[str, str], ...],
                      hash_of: HashOf, single_ports: tuple[tuple[str, int], ...]) -> tuple[bytes, ...]:
    """`virtual_service_routes`, each route serialized once (what route configs are assembled from)."""
    routes = virtual_service_routes(vs, port, proxy_namespace, dict(proxy_labels), hash_of, dict(single_ports))
    return tuple(r.SerializeToString(deterministic=True) for r in routes)
