"""Istio's host name relations (istio/istio `pkg/config/host/name.go`).

A name is wildcarded when it starts with `*` (`*` alone, or `*.example.com`). Used by validation
(duplicate VirtualService hosts, TLS SNI hosts) and by the mesh model (which VirtualService or
DestinationRule applies to a host).
"""

from __future__ import annotations


def is_wildcarded(name: str) -> bool:
    return name.startswith("*")


def matches(a: str, b: str) -> bool:
    """`Name.Matches`: the two names can describe a common host (symmetric)."""
    a_wild, b_wild = is_wildcarded(a), is_wildcarded(b)
    if a_wild and b_wild:
        return b[1:].endswith(a[1:]) if len(a) < len(b) else a[1:].endswith(b[1:])
    if a_wild:
        return b.endswith(a[1:])
    if b_wild:
        return a.endswith(b[1:])
    return a == b


def subset_of(a: str, b: str) -> bool:
    """`Name.SubsetOf`: every host `a` names is also named by `b`."""
    if is_wildcarded(b):
        return (a[1:] if is_wildcarded(a) else a).endswith(b[1:])
    return not is_wildcarded(a) and a == b


def more_specific(a: str, b: str) -> bool:
    """`MostSpecificHostMatch` order: an exact name beats a wildcard, a longer wildcard a shorter one."""
    if is_wildcarded(a) != is_wildcarded(b):
        return not is_wildcarded(a)
    return len(a) > len(b)
