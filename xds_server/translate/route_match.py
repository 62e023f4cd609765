"""A VirtualService HTTP match -> Envoy RouteMatch (istio pilot/pkg/networking/core/route/route.go
`TranslateRouteMatch`, `translateHeaderMatch`, `translateQueryParamMatch`, `IsCatchAllRoute`).

Map-valued fields (headers, withoutHeaders, queryParams) come out sorted by name so the bytes do
not depend on map order; method, authority and scheme matchers follow the sorted headers.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from xds_server._proto import istio_config_pb2 as pb

HEADER_METHOD = ":method"
HEADER_AUTHORITY = ":authority"
HEADER_SCHEME = ":scheme"


def string_matcher(match: pb.StringMatch) -> string_pb2.StringMatcher | None:
    """istio util.ConvertToEnvoyMatch: exact / prefix / safe_regex; None when no kind is set."""
    kind = match.WhichOneof("match_type")
    if kind == "exact":
        return string_pb2.StringMatcher(exact=match.exact)
    if kind == "prefix":
        return string_pb2.StringMatcher(prefix=match.prefix)
    if kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.regex))
    return None


def _is_presence(match: pb.StringMatch) -> bool:
    """istio isCatchAllHeaderMatch: `{}` or regex `*` only tests that the header is there."""
    kind = match.WhichOneof("match_type")
    return kind is None or (kind == "regex" and match.regex == "*")


def header_matcher(name: str, match: pb.StringMatch, *, invert: bool = False) -> rc.HeaderMatcher:
    out = rc.HeaderMatcher(name=name)
    if _is_presence(match):
        out.present_match = True
    else:
        matcher = string_matcher(match)
        if matcher is not None:
            out.string_match.CopyFrom(matcher)
        # A missing header must count as "" so that withoutHeaders{x: exact v} matches requests
        # lacking x (istio translateRouteMatch for WithoutHeaders).
        if invert:
            out.treat_missing_header_as_empty = True
    if invert:
        out.invert_match = True
    return out


def query_matcher(name: str, match: pb.StringMatch) -> rc.QueryParameterMatcher:
    out = rc.QueryParameterMatcher(name=name)
    if _is_presence(match):
        out.present_match = True
    else:
        matcher = string_matcher(match)
        if matcher is not None:
            out.string_match.CopyFrom(matcher)
    return out


def route_match(match: pb.HTTPMatchRequest | None) -> rc.RouteMatch:
    """The Envoy match of one VirtualService match entry (None: a rule without `match`)."""
    out = rc.RouteMatch(prefix="/")
    if match is None:
        return out
    headers = [header_matcher(name, match.headers[name]) for name in sorted(match.headers)]
    headers += [header_matcher(name, match.without_headers[name], invert=True)
                for name in sorted(match.without_headers)]
    headers.sort(key=lambda h: h.name)
    if match.HasField("uri"):
        kind = match.uri.WhichOneof("match_type")
        if kind == "exact":
            out.path = match.uri.exact
        elif kind == "prefix":
            out.prefix = match.uri.prefix
        elif kind == "regex":
            out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=match.uri.regex))
    out.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=not match.ignore_uri_case))
    for field, pseudo in (("method", HEADER_METHOD), ("authority", HEADER_AUTHORITY), ("scheme", HEADER_SCHEME)):
        if match.HasField(field):
            headers.append(header_matcher(pseudo, getattr(match, field)))
    out.headers.extend(headers)
    out.query_parameters.extend(query_matcher(name, match.query_params[name]) for name in sorted(match.query_params))
    return out


def is_catch_all(match: rc.RouteMatch) -> bool:
    """istio IsCatchAllRoute: prefix `/` or regex `.*`, and nothing else tested."""
    kind = match.WhichOneof("path_specifier")
    if kind == "prefix":
        catch_all = match.prefix == "/"
    elif kind == "safe_regex":
        catch_all = match.safe_regex.regex == ".*"
    else:
        catch_all = False
    return catch_all and not match.headers and not match.query_parameters and not match.dynamic_metadata


def source_matches(match: pb.HTTPMatchRequest, proxy_labels: dict[str, str], proxy_namespace: str) -> bool:
    """istio sourceMatchHTTP: `gateways` (sidecars: must name `mesh`) overrides the source tests;
    otherwise sourceLabels must be a subset of the proxy's labels and sourceNamespace empty or
    the proxy's namespace."""
    if match.gateways:
        return "mesh" in match.gateways
    if any(proxy_labels.get(k) != v for k, v in match.source_labels.items()):
        return False
    return not match.source_namespace or match.source_namespace == proxy_namespace
