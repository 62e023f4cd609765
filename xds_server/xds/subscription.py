"""What a client subscribed to, for one type on one stream (xds_protocol.rst rules).

- Legacy wildcard: while every request of a wildcard type (LDS/CDS) has had no names, the
  subscription is "*". Any explicit name ends the legacy meaning.
- "*" may be subscribed explicitly next to names; only unsubscribing "*" ends it (delta), or
  leaving it out of the next full list (SotW).
- Named types (EDS/RDS): the names are the subscription; an empty list means none.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterable, Mapping
from typing import TypeVar

WILDCARD = "*"
V = TypeVar("V")


_EMPTY: frozenset[str] = frozenset()


class NameSets:
    """One frozenset per distinct set of names in use, shared by every stream subscribed to it.

    Thousands of Envoys of a mesh (or of a namespace, with a `./*` Sidecar) subscribe to the very
    same EDS names, and one private set each was ~32 KB per proxy at 1,000 services. Keyed by the
    set's (cached) hash and held weakly: a set nobody uses is dropped; two different sets with the
    same hash are simply not shared. One per server (app.py builds it and hands it to the streams).
    """

    __slots__ = ("_sets",)

    def __init__(self) -> None:
        self._sets: weakref.WeakValueDictionary[int, frozenset[str]] = weakref.WeakValueDictionary()

    def share(self, names: frozenset[str]) -> frozenset[str]:
        """The shared set equal to `names` (which becomes the shared one if none is held yet)."""
        if not names:
            return _EMPTY
        key = hash(names)
        shared = self._sets.get(key)
        if shared is None:
            self._sets[key] = names
        elif shared == names:
            return shared
        return names

    def __len__(self) -> int:
        """Distinct sets currently shared."""
        return len(self._sets)


class Subscription:
    __slots__ = ("_legacy", "_sets", "names", "wildcard")

    def __init__(self, allows_wildcard: bool, name_sets: NameSets) -> None:
        self._sets = name_sets
        self.names: frozenset[str] = _EMPTY  # shared with every stream subscribed to the same names
        self.wildcard = False
        # Legacy wildcard is only possible until the first explicit name.
        self._legacy = allows_wildcard

    def sotw_update(self, resource_names: Iterable[str]) -> tuple[set[str], bool]:
        """Apply a SotW request's full name list; return (names newly added, anything changed)."""
        requested = set(map(sys.intern, resource_names))
        if self._legacy and not requested:
            changed = not self.wildcard
            self.wildcard = True
            return set(), changed
        self._legacy = False
        wildcard = WILDCARD in requested
        requested.discard(WILDCARD)
        added = requested - self.names
        if wildcard and not self.wildcard:
            added.add(WILDCARD)
        changed = bool(added) or requested != self.names or wildcard != self.wildcard
        if requested != self.names:
            self.names = self._sets.share(frozenset(requested))
        self.wildcard = wildcard
        return added, changed

    def delta_update(self, subscribe: Iterable[str], unsubscribe: Iterable[str],
                     first: bool) -> tuple[set[str], set[str]]:
        """Apply a delta request; return (subscribed, unsubscribed) explicit names ("*" included).

        Every name the request subscribes counts, also one already subscribed: the client may have
        dropped it, and the server must send it again (xds_protocol.rst, "Subscribing to Resources").
        """
        # Interned: thousands of streams subscribe to the same names; they share one copy of each.
        sub, unsub = set(map(sys.intern, subscribe)), set(unsubscribe)
        if first and self._legacy and not sub:
            self.wildcard = True
        if sub:
            self._legacy = False
        added: set[str] = set()
        removed: set[str] = set()
        if WILDCARD in sub:
            sub.discard(WILDCARD)
            if not self.wildcard:
                added.add(WILDCARD)
            self.wildcard = True
        names = self.names
        if sub:  # set algebra: an Envoy subscribes to a thousand EDS names at once
            added |= sub
            if not sub <= names:
                names = names | sub
        if WILDCARD in unsub:
            unsub.discard(WILDCARD)
            if self.wildcard:
                removed.add(WILDCARD)
            self.wildcard = False
            self._legacy = False
        if unsub:
            gone = unsub & names
            if gone:
                names = names - gone
            removed |= gone
        if names is not self.names:
            self.names = self._sets.share(names)
        # A name both subscribed and unsubscribed in one request: unsubscribe wins
        added -= removed
        return added, removed

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def select(self, resources: Mapping[str, V]) -> dict[str, V]:
        """The subscribed resources that exist."""
        if self.wildcard:
            return dict(resources)
        return {n: resources[n] for n in self.names if n in resources}

    def __repr__(self) -> str:
        names = sorted(self.names)
        return f"Subscription(wildcard={self.wildcard}, names={names[:5]}{'...' if len(names) > 5 else ''})"
