"""What a client subscribed to, for one type on one stream (xds_protocol.rst rules).

- Legacy wildcard: while every request of a wildcard type (LDS/CDS) has had no names, the
  subscription is "*". Any explicit name ends the legacy meaning.
- "*" may be subscribed explicitly next to names; only unsubscribing "*" ends it (delta), or
  leaving it out of the next full list (SotW).
- Named types (EDS/RDS): the names are the subscription; an empty list means none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

WILDCARD = "*"
V = TypeVar("V")


class Subscription:
    __slots__ = ("_legacy", "names", "wildcard")

    def __init__(self, allows_wildcard: bool) -> None:
        self.names: set[str] = set()
        self.wildcard = False
        # Legacy wildcard is only possible until the first explicit name.
        self._legacy = allows_wildcard

    def sotw_update(self, resource_names: Iterable[str]) -> tuple[set[str], bool]:
        """Apply a SotW request's full name list; return (names newly added, anything changed)."""
        requested = set(resource_names)
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
        self.names = requested
        self.wildcard = wildcard
        return added, changed

    def delta_update(self, subscribe: Iterable[str], unsubscribe: Iterable[str],
                     first: bool) -> tuple[set[str], set[str]]:
        """Apply a delta request; return (added, removed) explicit names ("*" included)."""
        sub, unsub = set(subscribe), set(unsubscribe)
        if first and self._legacy and not sub:
            self.wildcard = True
        if sub:
            self._legacy = False
        added, removed = set(), set()
        for name in sub:
            if name == WILDCARD:
                if not self.wildcard:
                    added.add(name)
                self.wildcard = True
            else:
                if name not in self.names:
                    added.add(name)
                self.names.add(name)
        for name in unsub:
            if name == WILDCARD:
                if self.wildcard:
                    removed.add(name)
                self.wildcard = False
                self._legacy = False
            elif name in self.names:
                self.names.discard(name)
                removed.add(name)
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
