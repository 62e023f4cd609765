"""What a delta client has, per stream and type: name -> version, sharing the bulk with its snapshot.

A delta stream must remember the version of every resource its client holds. Held as a private
dict per stream and type, that was the largest per-proxy cost at scale: at 2,000 proxies x 1,000
services, ~55 KB per proxy of copies of what each proxy's own snapshot already records (a first
response sends a whole ResourceMap, so the client then has exactly its `versions()`). Here that
shared dict is the base, and a stream keeps only its differences: overrides and names gone since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

_EMPTY: dict[str, str] = {}


class KnownVersions(Mapping[str, str]):
    """A mapping over a shared, never modified `base` plus this stream's `over` and `gone`.

    Invariants: `gone` names are in `base` and not in `over`; an `over` entry differs from `base`.
    When the differences grow past half the base, they are folded into a private dict (what every
    stream held before), so lookups never chain and memory is never worse than a copy.
    """

    __slots__ = ("_base", "_gone", "_over")

    def __init__(self, initial: Mapping[str, str] | None = None) -> None:
        self._base: Mapping[str, str] = _EMPTY
        self._over: dict[str, str] = dict(initial) if initial else {}
        self._gone: set[str] = set()

    # ------------------------------------------------------------------ reading
    def get(self, name: str, default: Any = None) -> Any:
        version = self._over.get(name)
        if version is not None:
            return version
        if name in self._gone:
            return default
        return self._base.get(name, default)

    def getter(self) -> Callable[[str], str | None]:
        """`get` for a loop over many names: the plain dict's own method when one dict says it all."""
        if not self._base:
            return self._over.get
        if not self._over and not self._gone:
            return self._base.get
        return self.get

    def __getitem__(self, name: str) -> str:
        version: str | None = self.get(name)
        if version is None:
            raise KeyError(name)
        return version

    def __contains__(self, name: object) -> bool:
        return name in self._over or (name not in self._gone and name in self._base)

    def __iter__(self) -> Iterator[str]:
        base, gone = self._base, self._gone
        for name in base:
            if name not in gone:
                yield name
        for name in self._over:
            if name not in base:
                yield name

    def __len__(self) -> int:
        base = self._base
        return len(base) - len(self._gone) + sum(1 for name in self._over if name not in base)

    def __bool__(self) -> bool:
        return bool(self._over) or len(self._base) > len(self._gone)

    # ------------------------------------------------------------------ changing
    def __setitem__(self, name: str, version: str) -> None:
        self._gone.discard(name)
        if self._base.get(name) == version:
            self._over.pop(name, None)
        else:
            self._over[name] = version
            self._fold_if_large()

    def pop(self, name: str, default: Any = None) -> Any:
        version = self._over.pop(name, None)
        if name in self._base and name not in self._gone:
            if version is None:
                version = self._base[name]
            self._gone.add(name)
            self._fold_if_large()
        return default if version is None else version

    def update_from(self, versions: Mapping[str, str]) -> None:
        """Add every entry of `versions` (a shared mapping nobody modifies) over what is known.

        What is known and not in `versions` stays, as this stream's own entries; when nothing
        else is known (a first response) that costs nothing.
        """
        if versions is self._base:
            self._over = {n: v for n, v in self._over.items() if n not in versions}
            self._gone = set()
            return
        kept = {n: v for n, v in self.items() if n not in versions} if self else {}
        self._base = versions
        self._over = kept
        self._gone = set()

    def _fold_if_large(self) -> None:
        if self._base and len(self._over) + len(self._gone) > 32 + len(self._base) // 2:
            private = dict(self.items())
            self._base = _EMPTY
            self._over = private
            self._gone = set()

    def __repr__(self) -> str:
        return f"KnownVersions({dict(self.items())!r})"
