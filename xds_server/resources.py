"""Leaf module: type URLs, push order, and `Built`, a resource serialized once and shared.

This is the only place a type URL is spelled out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from google.protobuf.message import Message


class TypeUrl(StrEnum):
    CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
    ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


# Make-before-break: clusters before their endpoints, listeners before their routes.
PUSH_ORDER: tuple[TypeUrl, ...] = (TypeUrl.CLUSTER, TypeUrl.ENDPOINT, TypeUrl.LISTENER, TypeUrl.ROUTE)
# Types whose SotW responses carry the full state and that Envoy subscribes to by wildcard.
WILDCARD_TYPES = frozenset({TypeUrl.CLUSTER, TypeUrl.LISTENER})
SERVED_TYPES = frozenset(PUSH_ORDER)

SHORT_NAMES = {TypeUrl.CLUSTER: "cds", TypeUrl.ENDPOINT: "eds", TypeUrl.LISTENER: "lds", TypeUrl.ROUTE: "rds",
               TypeUrl.SECRET: "sds"}


def short_name(type_url: str) -> str:
    """'cds', 'eds', ... for known types; the message name for others (metrics labels, logs)."""
    try:
        return SHORT_NAMES[TypeUrl(type_url)]
    except ValueError:
        return type_url.rsplit(".", 1)[-1] or "unknown"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number: int, data: bytes) -> bytes:
    """Protobuf wire encoding of one length-delimited field (string, bytes or message)."""
    return _varint(field_number << 3 | 2) + _varint(len(data)) + data


def content_version(payload: bytes) -> str:
    """Stable across restarts and replicas: same content, same version."""
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


class Built:
    """One Envoy resource, serialized once, shared by every proxy that gets it.

    Holds the pre-encoded repeated-field entries of both response kinds so that building a
    DiscoveryResponse or DeltaDiscoveryResponse is a byte join (see xds/wire.py).
    """

    __slots__ = ("delta_entry", "name", "payload", "refs", "sotw_entry", "type_url", "version")

    def __init__(self, type_url: TypeUrl, name: str, payload: bytes, refs: tuple[str, ...] = ()) -> None:
        self.type_url = type_url
        # Names this resource needs to work: a cluster's EDS service name, a listener's RDS names.
        self.refs = refs
        self.name = name
        self.payload = payload
        self.version = content_version(payload)
        any_bytes = length_delimited(1, type_url.encode()) + length_delimited(2, payload)
        # DiscoveryResponse.resources (2): Any
        self.sotw_entry = length_delimited(2, any_bytes)
        # DeltaDiscoveryResponse.resources (2): Resource{version=1, resource=2 (Any), name=3}
        resource = (length_delimited(1, self.version.encode()) + length_delimited(2, any_bytes)
                    + length_delimited(3, name.encode()))
        self.delta_entry = length_delimited(2, resource)

    @classmethod
    def of(cls, type_url: TypeUrl, name: str, message: Message, refs: tuple[str, ...] = ()) -> Built:
        return cls(type_url, name, message.SerializeToString(deterministic=True), refs)

    def __repr__(self) -> str:
        return f"Built({short_name(self.type_url)}:{self.name}@{self.version})"


# What each type's `refs` point at: a snapshot is consistent when every ref resolves.
REFERENCED_TYPE = {TypeUrl.CLUSTER: TypeUrl.ENDPOINT, TypeUrl.LISTENER: TypeUrl.ROUTE}


class ProxySnapshot:
    """Everything one proxy should have, by type and name. Replaced, never mutated.

    Mappings are shared between proxies where their content is the same (same scope).
    """

    __slots__ = ("_versions", "resources")

    def __init__(self, resources: Mapping[TypeUrl, Mapping[str, Built]]) -> None:
        self.resources = resources
        self._versions: dict[TypeUrl, str] = {}

    def get(self, type_url: TypeUrl) -> Mapping[str, Built]:
        return self.resources.get(type_url, _EMPTY)

    def version(self, type_url: TypeUrl) -> str:
        """Digest of the type's (name, version) pairs: equal content, equal version."""
        found = self._versions.get(type_url)
        if found is None:
            h = hashlib.blake2b(digest_size=8)
            for name, built in sorted(self.get(type_url).items()):
                h.update(name.encode())
                h.update(b"\0")
                h.update(built.version.encode())
                h.update(b"\n")
            found = self._versions[type_url] = h.hexdigest()
        return found

    def dangling(self) -> list[str]:
        """Refs that do not resolve, as 'cds:NAME -> eds:REF' (empty when consistent)."""
        out = []
        for parent, child in REFERENCED_TYPE.items():
            children = self.get(child)
            for name, built in self.get(parent).items():
                out.extend(f"{short_name(parent)}:{name} -> {short_name(child)}:{ref}"
                           for ref in built.refs if ref not in children)
        return out


_EMPTY: Mapping[str, Built] = MappingProxyType({})
