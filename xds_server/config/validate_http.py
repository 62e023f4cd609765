"""HTTP vocabulary rules shared by VirtualService checks: header names and values, retry
conditions, status codes, methods (istio/istio `pkg/config/validation/validation.go`:
`ValidateHTTPHeaderName*`, `ValidateHTTPHeaderValue`, `supportedRetryOnPolicies`,
`supportedMethods`, `validateHTTPStatus`, `validateGRPCStatus`; header_value_validator.go).
"""

from __future__ import annotations

import re

from xds_server._proto import istio_config_pb2 as pb
from xds_server.config.validate_fields import Report
from xds_server.config.validate_regex import regex_error

_HEADER_NAME = re.compile(r"[-_A-Za-z0-9]+")
_HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Envoy's custom header formatters: %NAME%, %NAME(args)%, %NAME(args):len%; %% is a literal %.
_FORMATTER = re.compile(r"[A-Z][A-Z0-9_]*(?:\(.*\))?(?::[0-9]+)?")
JWT_CLAIM_PREFIX = "@request.auth.claims"

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on conditions, as istiod accepts them.
RETRY_ON = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable",
})
# Go's net/http StatusText table: istiod accepts a retryOn integer iff it has a text there.
GO_HTTP_STATUSES = frozenset({
    100, 101, 102, 103,
    200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
    300, 301, 302, 303, 304, 305, 307, 308,
    400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418,
    421, 422, 423, 424, 425, 426, 428, 429, 431, 451,
    500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
})
GRPC_STATUSES = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
})
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"})


def is_jwt_claim(name: str) -> bool:
    """`@request.auth.claims.sub` / `@request.auth.claims[sub]` (istio pkg/jwt ToRoutingClaim)."""
    return name.startswith((JWT_CLAIM_PREFIX + ".", JWT_CLAIM_PREFIX + "[")) and len(name) > len(JWT_CLAIM_PREFIX) + 1


def header_name_error(name: str, allow_jwt_claim: bool = False, allow_star: bool = False) -> str | None:
    if name == "":
        return "header name cannot be empty"
    if (allow_jwt_claim and is_jwt_claim(name)) or (allow_star and name == "*"):
        return None
    if not _HEADER_NAME.fullmatch(name):
        return f"header name {name!r} is not a valid header name"
    return None


def _is_internal(name: str) -> bool:
    return name.startswith(":") or name.lower() == "host"


def is_authority(name: str) -> bool:
    return name.lower() in (":authority", "host")


def header_value_error(value: str) -> str | None:
    if _HEADER_VALUE_FORBIDDEN.search(value):
        return f"header value {value!r} contains control characters"
    i = 0
    while i < len(value):
        if value[i] != "%":
            i += 1
            continue
        if value.startswith("%%", i):
            i += 2
            continue
        end = value.find("%", i + 1)
        if end < 0:
            return f"header value {value!r}: unterminated % (write %% for a literal %)"
        if not _FORMATTER.fullmatch(value[i + 1 : end]):
            bad = value[i : end + 1]
            return f"header value {value!r}: {bad!r} is not an Envoy formatter (write %% for a literal %)"
        i = end + 1
    return None


def header_operations(ops: pb.Headers.HeaderOperations, path: str, report: Report, request: bool) -> None:
    """istiod's rules for `headers.request` / `headers.response` set, add and remove."""
    for field in ("set", "add"):
        for name, value in sorted(getattr(ops, field).items()):
            here = f"{path}.{field}[{name}]"
            if name == "":
                report.error(here, "header name cannot be empty")
            elif request and _is_internal(name) and not is_authority(name):
                report.error(here, f"invalid header {name!r}: header cannot have ':' prefix")
            elif not request and name.lower() == "host":
                report.error(here, f"invalid header {name!r}: cannot set Host header")
            elif not request and _is_internal(name):
                report.error(here, f"invalid header {name!r}: header cannot have ':' prefix")
            report.check(here, header_value_error(value))
    for i, name in enumerate(ops.remove):
        here = f"{path}.remove[{i}]"
        if name == "":
            report.error(here, "header name cannot be empty")
        elif name.lower() == "host":
            report.error(here, f"invalid header {name!r}: cannot remove the Host header")
        elif _is_internal(name):
            report.error(here, f"invalid header {name!r}: header cannot have ':' prefix")


def headers(h: pb.Headers, path: str, report: Report) -> None:
    if h.HasField("request"):
        header_operations(h.request, f"{path}.request", report, request=True)
    if h.HasField("response"):
        header_operations(h.response, f"{path}.response", report, request=False)


def string_match(sm: pb.StringMatch, path: str, report: Report, allow_empty_prefix: bool = False) -> None:
    """`validateStringMatch`: a prefix is non-empty (uri excepted), a regex compiles as RE2."""
    kind = sm.WhichOneof("match_type")
    if kind == "prefix" and sm.prefix == "" and not allow_empty_prefix:
        report.error(f"{path}.prefix", "prefix string match should not be empty")
    elif kind == "regex":
        report.check(f"{path}.regex", regex_error(sm.regex))


def retry_on_error(value: str) -> str | None:
    """Comma-separated, not trimmed (as istiod): `"5xx, reset"` is an error."""
    for policy in value.split(","):
        code = int(policy) if policy.isascii() and policy.isdigit() else 0
        if code not in GO_HTTP_STATUSES and policy not in RETRY_ON:
            known = ", ".join(sorted(RETRY_ON))
            return f"{policy!r} is not a valid retryOn policy (an HTTP status code or one of {known})"
    return None
