"""Regexes as Envoy compiles them: RE2 (google-re2, the C++ library Envoy links).

istiod checks with Go's regexp, which implements the same RE2 syntax; Python's `re` is not RE2
(it accepts look-arounds and back-references that Envoy would reject with a NACK), so it is never
used for this. Istio's limit is on length (1024 characters) as an approximation of Envoy's
`re2.max_program_size` (istio/istio `pkg/config/validation/validation.go` `validateStringRegexp`).
"""

from __future__ import annotations

from functools import lru_cache

import re2  # type: ignore[import-untyped]

MAX_REGEX_LENGTH = 1024
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the library would print every rejected pattern to stderr


@lru_cache(maxsize=4096)
def regex_error(pattern: str) -> str | None:
    """None when Envoy can compile `pattern`, else why not (without the field path)."""
    if pattern == "":
        return "regex string match should not be empty"
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"regex is too large, max length allowed is {MAX_REGEX_LENGTH}"
    try:
        re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"invalid regex {pattern!r}: {reason} (Envoy uses RE2 syntax, https://github.com/google/re2/wiki/Syntax)"
    return None
