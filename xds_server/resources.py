"""Leaf module: type URLs, push order, and `Built`, a resource serialized once and shared.

This is the only place a type URL is spelled out.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Mapping
from enum import StrEnum

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


_SMALL = [bytes((n,)) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]  # field tags, nonces, versions, names: almost every call
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

    __slots__ = ("delta_entry", "digest_term", "name", "payload", "refs", "sotw_entry", "type_url", "version")

    def __init__(self, type_url: TypeUrl, name: str, payload: bytes, refs: tuple[str, ...] = ()) -> None:
        self.type_url = type_url
        # Names this resource needs to work: a cluster's EDS service name, a listener's RDS names.
        self.refs = refs
        self.name = name
        self.payload = payload
        self.version = content_version(payload)
        # This entry's share of a mapping's version (see `digest`): a mapping's version is the sum
        # of its entries' terms, so it is the same whatever the order or the way it was assembled.
        self.digest_term = _term(name, self.version)
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

_MASK = (1 << 64) - 1
_tokens = itertools.count(1)


def _term(name: str, version: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{name}\0{version}".encode(), digest_size=8).digest(), "little")


def _hex(total: int) -> str:
    return f"{total & _MASK:016x}"


class ResourceMap(dict[str, Built]):
    """name -> Built for one type, read-only, shared by every snapshot (and proxy) with this content.

    Whatever is derived from the whole mapping is computed once and kept here: its version, its
    differences from an earlier mapping (so that each stream's work on a push is proportional to
    what changed, not to what it has), its unresolved refs. `token` identifies the mapping in
    memo keys. A mapping made by `layered` (shared outbound part + a proxy's own inbound part)
    derives all of these from its base in time proportional to the extra part.
    """

    __slots__ = ("_blob", "_dangling", "_diffs", "_ordered", "_overrides", "_same_names", "_sum", "_version",
                 "_versions", "base", "extra", "token")

    def __init__(self, builts: Iterable[Built] = ()) -> None:
        super().__init__((b.name, b) for b in builts)
        self.token = next(_tokens)
        self._sum: int | None = None
        self._version: str | None = None
        self._diffs: dict[int, tuple[tuple[Built, ...], tuple[str, ...]]] | None = None
        self._dangling: dict[int, tuple[tuple[str, str], ...]] | None = None
        self._ordered: list[Built] | None = None
        self._versions: dict[str, str] | None = None
        self._blob: bytes | None = None
        self._overrides = False  # an extra entry replaced a base entry
        self._same_names: dict[int, bool] | None = None  # other map's token -> same names as this one
        self.base: ResourceMap | None = None
        self.extra: tuple[Built, ...] = ()

    @classmethod
    def layered(cls, base: ResourceMap, extra: Iterable[Built]) -> ResourceMap:
        """`base` with `extra` added (an extra entry replaces a base entry of the same name)."""
        extra = tuple(extra)
        if not extra:
            return base
        out = cls()
        dict.update(out, base)
        total = base.sum
        for b in extra:
            old = dict.get(out, b.name)
            if old is not None:
                total -= old.digest_term
                out._overrides = True
            dict.__setitem__(out, b.name, b)
            total += b.digest_term
        out._sum = total
        out._ordered = None
        out._versions = None
        out.base = base
        out.extra = extra
        return out

    def replacing(self, changed: Mapping[str, Built]) -> ResourceMap:
        """This mapping with some entries' values replaced (same names), in time proportional to `changed`.

        The successor knows its difference from this mapping, so that no stream, and no consistency
        check, walks the whole mapping to find it (a Pod change at 1,000 services: 1 of 1,000 entries).
        """
        out = ResourceMap()
        dict.update(out, self)
        total = self.sum
        diff: list[Built] = []
        for name, b in changed.items():
            old = dict.get(out, name)
            if old is None:
                raise KeyError(name)  # a new name is not a replacement
            if old is b:
                continue
            total += b.digest_term - old.digest_term
            dict.__setitem__(out, name, b)
            if old.version != b.version:
                diff.append(b)
        out._sum = total
        out._diffs = {self.token: (tuple(diff), ())}
        out._same_names = {self.token: True}
        return out

    def same_names(self, other: Mapping[str, Built]) -> bool:
        """Whether `other` holds exactly the names this mapping holds (memoised per other mapping)."""
        if other is self:
            return True
        key = other.token if isinstance(other, ResourceMap) else None
        if key is not None and self._same_names is not None and key in self._same_names:
            return self._same_names[key]
        found = len(self) == len(other) and self.keys() == other.keys()
        if key is not None:
            if self._same_names is None or len(self._same_names) >= 8:
                self._same_names = {}
            self._same_names[key] = found
        return found

    @property
    def sum(self) -> int:
        if self._sum is None:
            self._sum = sum(b.digest_term for b in self.values())
        return self._sum

    @property
    def version(self) -> str:
        """Every stream sending this mapping's changes asks (its system_version_info): formatted once."""
        if self._version is None:
            self._version = _hex(self.sum)
        return self._version

    def ordered(self) -> list[Built]:
        """Every entry, sorted by name (a fresh list over a cached order)."""
        if self._ordered is None:
            self._ordered = sorted(self.values(), key=lambda b: b.name)
        return list(self._ordered)

    def delta_entries(self) -> list[bytes]:
        """Every entry's DeltaDiscoveryResponse `resources` field, as a few byte chunks.

        A whole mapping (a stream's first response) is the same bytes for every stream that gets
        it: joined once and kept for a base mapping; a layered one adds its own entries after the
        base's (order within a response carries no meaning).
        """
        if self.base is not None and not self._overrides:
            return [*self.base.delta_entries(), *(b.delta_entry for b in sorted(self.extra, key=built_name))]
        if self.base is not None:
            return [b.delta_entry for b in self.ordered()]
        if self._blob is None:
            self._blob = b"".join(b.delta_entry for b in self.ordered())
        return [self._blob]

    def versions(self) -> dict[str, str]:
        """name -> version of every entry (shared: do not modify)."""
        if self._versions is None:
            self._versions = {n: b.version for n, b in self.items()}
        return self._versions

    def changes_since(self, old: ResourceMap) -> tuple[tuple[Built, ...], tuple[str, ...]]:
        """(entries that `old` lacks or has at another version, names only `old` has), memoised."""
        if old is self:
            return (), ()
        diffs = self._diffs
        if diffs is None:
            diffs = self._diffs = {}
        found = diffs.get(old.token)
        if found is None:
            found = _changes(old, self)
            if len(diffs) < 32:  # streams far behind are rare: they compute their own
                diffs[old.token] = found
        return found

    def unresolved(self, children: Mapping[str, Built]) -> tuple[tuple[str, str], ...]:
        """(name, ref) for every ref of an entry that `children` lacks; memoised per children map."""
        key = children.token if isinstance(children, ResourceMap) else None
        if key is not None and self._dangling is not None and key in self._dangling:
            return self._dangling[key]
        if self.base is not None:
            own = {b.name for b in self.extra}
            found = tuple((n, r) for n, r in self.base.unresolved(children) if n not in own)
            found += tuple((b.name, r) for b in self.extra for r in b.refs if r not in children)
        else:
            found = tuple((b.name, r) for b in self.values() if b.refs for r in b.refs if r not in children)
        if key is not None:
            if self._dangling is None or len(self._dangling) >= 8:
                self._dangling = {}
            self._dangling[key] = found
        return found

    def _read_only(self, *args: object, **kwargs: object) -> None:
        raise TypeError("ResourceMap is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only  # type: ignore[assignment]


def built_name(b: Built) -> str:
    """The sort key of Builts (responses list them by name)."""
    return b.name


def _changes(old: Mapping[str, Built], new: Mapping[str, Built]) -> tuple[tuple[Built, ...], tuple[str, ...]]:
    changed = tuple(b for n, b in new.items() if (o := old.get(n)) is not b and (o is None or o.version != b.version))
    removed = tuple(n for n in old if n not in new)
    return changed, removed


def digest(resources: Mapping[str, Built]) -> str:
    """Version of a set of resources: equal (name, version) pairs, equal digest, in any order."""
    if isinstance(resources, ResourceMap):
        return resources.version
    return _hex(sum(b.digest_term for b in resources.values()))


def changes(old: Mapping[str, Built], new: Mapping[str, Built]) -> tuple[tuple[Built, ...], tuple[str, ...]]:
    """What a client holding `old` needs to reach `new`: (changed or added entries, removed names)."""
    if isinstance(new, ResourceMap) and isinstance(old, ResourceMap):
        return new.changes_since(old)
    return _changes(old, new)


class ProxySnapshot:
    """Everything one proxy should have, by type and name. Replaced, never mutated.

    Mappings are shared between proxies where their content is the same (same scope).
    """

    __slots__ = ("_dangling", "_versions", "resources")

    def __init__(self, resources: Mapping[TypeUrl, Mapping[str, Built]]) -> None:
        self.resources = resources
        self._versions: dict[TypeUrl, str] = {}
        self._dangling: list[str] | None = None

    def get(self, type_url: TypeUrl) -> Mapping[str, Built]:
        return self.resources.get(type_url, _EMPTY)

    def replacing(self, maps: Mapping[TypeUrl, Mapping[str, Built]]) -> ProxySnapshot:
        """A successor with some types' mappings replaced; what it derives from the others is kept.

        Its consistency is this snapshot's when only referenced types (EDS, RDS) change and each
        keeps its names (refs resolve against names only): a Pod change checks nothing per proxy.
        """
        resources = dict(self.resources)
        resources.update(maps)
        out = ProxySnapshot(resources)
        out._versions = {t: v for t, v in self._versions.items() if t not in maps}
        if self._dangling is not None and all(
                t not in REFERENCED_TYPE and isinstance(m, ResourceMap) and m.same_names(self.get(t))
                for t, m in maps.items()):
            out._dangling = self._dangling
        return out

    def version(self, type_url: TypeUrl) -> str:
        """Digest of the type's (name, version) pairs: equal content, equal version."""
        found = self._versions.get(type_url)
        if found is None:
            found = self._versions[type_url] = digest(self.get(type_url))
        return found

    def dangling(self) -> list[str]:
        """Refs that do not resolve, as 'cds:NAME -> eds:REF' (empty when consistent)."""
        found = self._dangling
        if found is None:
            out: list[str] = []
            for parent, child in REFERENCED_TYPE.items():
                children, parents = self.get(child), self.get(parent)
                if isinstance(parents, ResourceMap):
                    pairs: Iterable[tuple[str, str]] = parents.unresolved(children)
                else:
                    pairs = ((n, r) for n, b in parents.items() for r in b.refs if r not in children)
                out.extend(f"{short_name(parent)}:{name} -> {short_name(child)}:{ref}" for name, ref in pairs)
            found = self._dangling = out
        return list(found)


_EMPTY: Mapping[str, Built] = ResourceMap()
