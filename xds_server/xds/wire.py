"""Encode DiscoveryResponse / DeltaDiscoveryResponse as bytes by joining pre-encoded fields.

Each `Built` carries its resource entry already encoded (resources.py), so a response costs a
byte join, not a re-serialization per proxy. Field numbers are from
envoy/service/discovery/v3/discovery.proto; tests/unit/xds/test_wire.py checks them against the
real message classes.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from xds_server.resources import length_delimited

# DiscoveryResponse: version_info=1, resources=2, type_url=4, nonce=5, control_plane=6
# DeltaDiscoveryResponse: system_version_info=1, resources=2, type_url=4, nonce=5,
#                         removed_resources=6, control_plane=7


def control_plane(identifier: str) -> bytes:
    """config.core.v3.ControlPlane{identifier=1}, encoded once per server."""
    return length_delimited(1, identifier.encode())


@lru_cache(maxsize=64)
def _field(number: int, data: bytes) -> bytes:
    """A field whose value repeats on every response (type URL, control plane): encoded once."""
    return length_delimited(number, data)


def sotw_response(type_url: str, version: str, nonce: str, entries: Iterable[bytes],
                  control_plane_msg: bytes = b"") -> bytes:
    parts = [length_delimited(1, version.encode()), *entries, _field(4, type_url.encode()),
             nonce_field(nonce)]
    if control_plane_msg:
        parts.append(_field(6, control_plane_msg))
    return b"".join(parts)


def delta_response(type_url: str, nonce: str, entries: Iterable[bytes], removed: Iterable[str] = (),
                   system_version: str = "", control_plane_msg: bytes = b"") -> bytes:
    head, tail = delta_fields(type_url, entries, removed, system_version, control_plane_msg)
    # One join: a stream's first response is megabytes, and a second copy of it would be
    # memory the send budget does not see.
    return b"".join([*head, nonce_field(nonce), *tail])


def delta_fields(type_url: str, entries: Iterable[bytes], removed: Iterable[str] = (),
                 system_version: str = "", control_plane_msg: bytes = b"") -> tuple[list[bytes], list[bytes]]:
    """A DeltaDiscoveryResponse's encoded fields without its nonce: those before it and after it.

    Every stream numbers its own responses; the rest is the same for every stream that sends the
    same change, so it can be encoded once for all of them (xds/shared.py).
    """
    head = [length_delimited(1, system_version.encode())] if system_version else []
    head.extend(entries)
    head.append(_field(4, type_url.encode()))
    tail = [length_delimited(6, name.encode()) for name in removed]
    if control_plane_msg:
        tail.append(_field(7, control_plane_msg))
    return head, tail


def nonce_field(nonce: str) -> bytes:
    """The nonce: field 5 of both response kinds, numbered by each stream for itself."""
    return length_delimited(5, nonce.encode())
