"""The single in-memory truth: every accepted config object, by origin.

Sources (files, Kubernetes) write through the `ConfigSink` methods (sources/sink.py) on the event loop thread.
Each object belongs to an *origin* (a file path, a Kubernetes kind): `replace` swaps one
origin's whole set, which is how a re-read file or a relist removes what vanished.
When two origins hold the same ref, the latest write wins; deleting it from one origin falls
back to the other's copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from xds_server.config import ConfigObject, ObjectRef, Problem
from xds_server.store.view import ChangeSet, StoreView

ChangeListener = Callable[[frozenset[ObjectRef]], None]
HISTORY = 16  # change sets a view keeps: work from up to this many views back can be reused
ReportListener = Callable[[str, tuple[Problem, ...]], None]


class Store:
    def __init__(self, domain_suffix: str = "cluster.local") -> None:
        self.domain_suffix = domain_suffix
        self._by_origin: dict[str, dict[ObjectRef, ConfigObject]] = {}
        self._objects: dict[ObjectRef, ConfigObject] = {}
        self._owner: dict[ObjectRef, str] = {}
        self._problems: dict[str, tuple[Problem, ...]] = {}
        self._synced: set[str] = set()
        self._listeners: list[ChangeListener] = []
        self._report_listeners: list[ReportListener] = []
        self.generation = 0
        self._view: StoreView | None = None
        self._dirty_kinds: set[str] = set()
        self._last_view_generation: int | None = None  # generation of the last view built
        self._since_last_view: set[ObjectRef] = set()  # refs changed since then
        self._history: tuple[ChangeSet, ...] = ()  # change sets of the last views, newest first
        self._last_view: StoreView | None = None  # its unchanged indexes seed the next view's
        self._lineage = object()  # marks this store's views

    # ------------------------------------------------------------ listeners
    def subscribe(self, listener: ChangeListener) -> None:
        """listener(changed_refs) is called after every mutation that changed something."""
        self._listeners.append(listener)

    def subscribe_reports(self, listener: ReportListener) -> None:
        """listener(origin, problems) is called on every `report` (metrics count rejections)."""
        self._report_listeners.append(listener)

    def _changed(self, refs: set[ObjectRef]) -> None:
        if not refs:
            return
        self.generation += 1
        self._dirty_kinds.update(r.kind for r in refs)
        self._since_last_view.update(refs)
        self._view = None
        frozen = frozenset(refs)
        for listener in self._listeners:
            listener(frozen)

    # ------------------------------------------------------------ ConfigSink
    def replace(self, origin: str, objects: Iterable[ConfigObject]) -> None:
        new = {obj.ref: obj for obj in objects}
        old = self._by_origin.get(origin, {})
        changed: set[ObjectRef] = set()
        for ref in old.keys() - new.keys():
            changed |= self._remove(origin, ref)
        for ref, obj in new.items():
            if old.get(ref) is obj:
                continue
            changed |= self._put(origin, obj)
        if new:
            self._by_origin[origin] = new
        else:
            self._by_origin.pop(origin, None)
        self._changed(changed)

    def upsert(self, origin: str, obj: ConfigObject) -> None:
        self._by_origin.setdefault(origin, {})[obj.ref] = obj
        self._changed(self._put(origin, obj))

    def delete(self, origin: str, ref: ObjectRef) -> None:
        self._changed(self._remove(origin, ref))

    def report(self, origin: str, problems: Sequence[Problem]) -> None:
        if problems:
            self._problems[origin] = tuple(problems)
        else:
            self._problems.pop(origin, None)
        for listener in self._report_listeners:
            listener(origin, tuple(problems))

    def mark_synced(self, source: str) -> None:
        self._synced.add(source)

    # ------------------------------------------------------------ reads
    def synced(self, source: str) -> bool:
        return source in self._synced

    @property
    def problems(self) -> dict[str, tuple[Problem, ...]]:
        return dict(self._problems)

    def get(self, ref: ObjectRef) -> ConfigObject | None:
        return self._objects.get(ref)

    def objects(self) -> Iterable[tuple[str, ConfigObject]]:
        """(origin, object) for every object served now."""
        for ref, obj in self._objects.items():
            yield self._owner[ref], obj

    def view(self) -> StoreView:
        """An immutable view of the current generation, shared by every translation of it."""
        if self._view is None:
            base = self._last_view_generation
            changes = ChangeSet(base, self._since_last_view) if base is not None else None
            self._view = StoreView(self.generation, dict(self._objects), self.domain_suffix, changes,
                                   self._history, previous=self._last_view, lineage=self._lineage)
            self._last_view = self._view
            if changes is not None:
                self._history = (changes, *self._history[:HISTORY - 1])
            self._last_view_generation = self.generation
            self._since_last_view = set()
        return self._view

    # ------------------------------------------------------------ internals
    def _put(self, origin: str, obj: ConfigObject) -> set[ObjectRef]:
        ref = obj.ref
        if self._objects.get(ref) == obj and self._owner.get(ref) == origin:
            return set()
        self._objects[ref] = obj
        self._owner[ref] = origin
        return {ref}

    def _remove(self, origin: str, ref: ObjectRef) -> set[ObjectRef]:
        held = self._by_origin.get(origin)
        if held is None or ref not in held:
            return set()
        del held[ref]
        if not held:
            self._by_origin.pop(origin, None)
        if self._owner.get(ref) != origin:
            return set()  # another origin's copy is the one served
        for other, objs in self._by_origin.items():
            if ref in objs:
                self._objects[ref] = objs[ref]
                self._owner[ref] = other
                return {ref}
        del self._objects[ref]
        del self._owner[ref]
        return {ref}
