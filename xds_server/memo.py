"""Memo: Built resources by the exact inputs they depend on, shared across proxies and pushes.

Keys hold everything an output depends on (config objects are frozen and hash by value or
identity), so a changed input simply misses. Entries unused for one whole round are dropped:
the planner calls `rotate()` once per push round. `keep` stores a builder's latest result for
good, for builders that carry it over to a later generation however many rounds later.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class Memo:
    def __init__(self) -> None:
        self._current: dict[Hashable, Any] = {}
        self._previous: dict[Hashable, Any] = {}
        self.hits = 0
        self.misses = 0
        self._recorders: list[list[Any]] = []
        self._kept: dict[Hashable, Any] = {}

    def get(self, key: Hashable, build: Callable[..., T], *args: Any) -> T:
        try:
            found: T = self._current[key]
            return found
        except KeyError:
            pass
        value: T = self._previous.get(key, _MISSING)
        if value is _MISSING:
            self.misses += 1
            value = build(*args)
        else:
            self.hits += 1
        self._current[key] = value
        return value

    def recall(self, key: Hashable) -> Any:
        """The value under `key` from this round or the previous one, without building (None if absent)."""
        value = self._current.get(key, _MISSING)
        if value is _MISSING:
            value = self._previous.get(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        self._current[key] = value

    def keep(self, key: Hashable, value: Any) -> None:
        """Store `value` under `key` until replaced: never rotated, one value per key."""
        self._kept[key] = value

    def kept(self, key: Hashable) -> Any:
        """The value last kept under `key` (None if none)."""
        return self._kept.get(key)

    @contextmanager
    def recording(self) -> Iterator[list[Any]]:
        """Collect what builders `note` while the block runs (what a result read from the store)."""
        reads: list[Any] = []
        self._recorders.append(reads)
        try:
            yield reads
        finally:
            self._recorders.pop()

    def note(self, item: Any) -> None:
        for reads in self._recorders:
            reads.append(item)

    def rotate(self) -> None:
        self._previous = self._current
        self._current = {}


_MISSING = object()
