"""Delta responses encoded once for every stream that sends the same change.

A push reaches thousands of streams with the same change (a Pod: the one ClusterLoadAssignment it
changed, to every proxy that imports its service). What those streams send differs only by the
nonce each numbers for itself: the rest (system version, resources, type, removed names, control
plane) is encoded once here (wire.delta_fields) and each stream joins its nonce in: the
same bytes as encoding the response itself. One per server (XdsServices holds it, like NameSets).

Only small responses are kept, a push's changes: a whole mapping (a stream's first response)
already shares its entries' bytes (ResourceMap.delta_entries), and keeping its megabytes here
would be memory the send budget does not see.
"""

from __future__ import annotations

from collections.abc import Sequence

from xds_server.resources import Built, TypeUrl
from xds_server.xds import wire

_Key = tuple[TypeUrl, str, bytes, tuple[Built, ...], tuple[str, ...]]


class SharedResponses:
    """(type, system version, control plane, changed Builts, removed names) -> the encoded parts.

    Builts are compared by identity (the same shared object), so equal content built twice is
    simply not shared. The oldest entry goes when `max_entries` are held (0: nothing is kept).
    """

    __slots__ = ("_parts", "hits", "max_bytes", "max_changed", "max_entries", "misses")

    def __init__(self, *, max_entries: int = 64, max_bytes: int = 64 * 1024, max_changed: int = 32) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes  # larger responses are encoded by each stream, not kept
        self.max_changed = max_changed  # more changed resources than this: not looked up
        self._parts: dict[_Key, tuple[bytes, bytes]] = {}
        self.hits = 0
        self.misses = 0

    def delta_response(self, type_url: TypeUrl, nonce: str, changed: Sequence[Built], removed: Sequence[str],
                       system_version: str, control_plane: bytes) -> bytes:
        """What wire.delta_response(type_url, nonce, entries of `changed`, removed, ...) returns."""
        if len(changed) > self.max_changed or len(removed) > self.max_changed:
            return wire.delta_response(type_url, nonce, (b.delta_entry for b in changed), removed,
                                       system_version, control_plane)
        key = (type_url, system_version, control_plane, tuple(changed), tuple(removed))
        parts = self._parts.get(key)
        if parts is None:
            self.misses += 1
            head, tail = wire.delta_fields(type_url, (b.delta_entry for b in changed), removed,
                                           system_version, control_plane)
            if self.max_entries <= 0 or sum(map(len, head)) + sum(map(len, tail)) > self.max_bytes:
                # Not kept: joined once, with the nonce, as the stream would have.
                return b"".join([*head, wire.nonce_field(nonce), *tail])
            if len(self._parts) >= self.max_entries:
                del self._parts[next(iter(self._parts))]
            parts = self._parts[key] = (b"".join(head), b"".join(tail))
        else:
            self.hits += 1
        return b"".join((parts[0], wire.nonce_field(nonce), parts[1]))

    def __len__(self) -> int:
        return len(self._parts)
