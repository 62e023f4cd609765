"""File source: every *.yaml / *.yml / *.json below a directory, kept current while running.

Each file is one origin of the store (`sink.replace(path, objects)`), so deleting a file removes
exactly its objects. Bad input is contained: a document that fails validation rejects only its
own object, and the last good version of that object from the same file keeps being served; a
file that is not valid YAML/JSON at all keeps all of its previous objects.

Changes come from `watchfiles` (inotify), plus a periodic full rescan in case an event is lost.
Files are compared by (mtime, size, inode) signature, so renames, atomic writes (temp file +
rename over) and kubectl-style `..data` symlink swaps are all seen the same way. An event that
names only manifest files (or files this source never reads) is followed by a look at just those
files; anything else (a directory, a symlink, a tree holding symlinks, whose targets change
without an event under their own name) by a rescan of the whole tree: at 5,000 files the walk
costs ~15 ms of CPU, too much for every write. All file I/O and parsing runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import watchfiles
import yaml

from xds_server.config import ConfigObject, Kind, ObjectRef, Problem
from xds_server.config.mesh_parse import parse_mesh_config
from xds_server.config.parse import parse
from xds_server.config.validate import duplicate_sidecar_warnings, unsupported_field_warnings
from xds_server.config.validate_fields import describe_yaml_error
from xds_server.mesh.rule_warnings import rule_warnings
from xds_server.sources.sink import ConfigSink

log = logging.getLogger("xds_server.sources.files")

SUFFIXES = (".yaml", ".yml", ".json")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# mtime, ctime (a chmod that makes a file readable again), size, inode, device of the target
Signature = tuple[int, int, int, int, int]


# ---------------------------------------------------------------- loading (sync, reusable)
@dataclass(frozen=True, slots=True)
class Loaded:
    """What one file holds after parsing."""

    objects: tuple[ConfigObject, ...] = ()
    problems: tuple[Problem, ...] = ()
    rejected: frozenset[ObjectRef] = frozenset()  # refs whose document failed validation
    unreadable: bool = False  # not YAML/JSON at all (or not readable): keep what was served
    where: Mapping[ObjectRef, str] = field(default_factory=dict)


def manifest_files(root: str) -> list[str]:
    """Sorted *.yaml/*.yml/*.json below root; hidden files and directories are skipped."""
    return _walk(root)[0]


def _walk(root: str) -> tuple[list[str], bool]:
    """(manifest_files(root), whether the tree reached any of them, or a directory, through a symlink).

    os.scandir rather than os.walk: an entry's type (symlink or not) comes with the listing, so
    telling symlinks apart costs no system call per file.
    """
    out: list[str] = []
    links = False
    seen_dirs: set[str] = set()
    pending = [root]
    while pending:
        dirpath = pending.pop()
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop, or a directory reached twice
            continue
        seen_dirs.add(real)
        links = links or real != os.path.abspath(dirpath)
        try:
            entries = list(os.scandir(dirpath))
        except OSError:
            continue  # unreadable or gone meanwhile: as os.walk, skip it
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks, like os.walk(followlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                links = links or entry.is_symlink()
                pending.append(entry.path)
            elif entry.name.lower().endswith(SUFFIXES):
                links = links or entry.is_symlink()
                out.append(entry.path)
    return sorted(out), links


MAX_TOUCHED = 256  # more paths in one batch of events: walk the tree instead


def touched_manifests(root: str, paths: Iterable[str], known: Collection[str]) -> list[str] | None:
    """The manifest files a batch of filesystem events can have changed, or None: rescan everything.

    Safe only in a tree without symlinks (the caller's check): then a file's content changes only
    with an event under its own name, and nothing read lies in or points into a hidden file or
    directory. Paths are mapped onto root as the source spells it (events may carry absolute
    paths). Hidden paths (an atomic writer's temp file, `.git`) and regular files of another
    suffix (an editor's backup) are skipped; a gone path that was a served file is a removal; a
    directory, a symlink, or a gone path with served files below it (a directory renamed or
    deleted) needs the walk.
    """
    base = os.path.abspath(root)
    out: set[str] = set()
    for event_path in paths:
        rel = os.path.relpath(os.path.abspath(event_path), base)
        if rel == "." or rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return None  # the root itself, or somewhere else
        if any(part.startswith(".") for part in rel.split(os.sep)):
            continue  # never walked; a symlink made to point here is an event of its own
        path = os.path.join(root, rel)
        if os.path.islink(path) or os.path.isdir(path):
            return None
        if os.path.exists(path):
            if path.lower().endswith(SUFFIXES):
                out.add(path)
            continue
        if path in known:
            out.add(path)
            continue
        below = path + os.sep
        if any(k.startswith(below) for k in known):
            return None
        # gone and never served: a temp file already renamed, or a file created and deleted
    if len(out) > MAX_TOUCHED:
        return None
    return sorted(out)


def read_documents(path: str, text: str) -> tuple[list[tuple[int, Any]], Problem | None]:
    """(doc index, document) pairs, and the syntax error that stopped reading, if any."""
    docs: list[tuple[int, Any]] = []
    if path.lower().endswith(".json"):
        try:
            return [(0, json.loads(text))], None
        except ValueError as exc:
            return [], Problem(None, f"invalid JSON: {exc}", f"{path}:0")
    try:
        for doc in yaml.load_all(text, Loader=_LOADER):
            docs.append((len(docs), doc))
    except yaml.YAMLError as exc:
        return docs, Problem(None, f"invalid YAML: {describe_yaml_error(exc)}", f"{path}:{len(docs)}")
    return docs, None


def _items(doc: Any, where: str) -> Iterator[tuple[Any, str, str]]:
    """(object doc, where, message prefix): a `kind: List` / `*List` yields its items."""
    kind = doc.get("kind") if isinstance(doc, Mapping) else None
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items")
        if not isinstance(items, list):
            yield None, where, "items"
            return
        for j, item in enumerate(items):
            yield item, where, f"items[{j}]"
    else:
        yield doc, where, ""


def parse_text(path: str, text: str) -> Loaded:
    docs, syntax = read_documents(path, text)
    objects: dict[ObjectRef, ConfigObject] = {}
    where_of: dict[ObjectRef, str] = {}
    problems: list[Problem] = []
    rejected: set[ObjectRef] = set()
    for index, doc in docs:
        if doc is None:
            continue  # empty document (`---` at the end, comments only)
        for item, where, prefix in _items(doc, f"{path}:{index}"):
            if item is None and prefix == "items":
                problems.append(Problem(None, "items: expected a list", where))
                continue
            obj, found = parse(item, where)
            for p in found:
                if prefix and p.ref is None:  # otherwise unnamed: say which item
                    p = replace(p, message=f"{prefix}.{p.message}")
                problems.append(p)
                if not p.warning and p.ref is not None:
                    rejected.add(p.ref)
            if obj is None:
                continue
            if obj.ref in objects:
                message = f"metadata.name: {obj.ref} is defined again in this file; the later one is used"
                problems.append(Problem(obj.ref, message, where, warning=True))
            objects[obj.ref] = obj
            where_of[obj.ref] = where
    if syntax is not None:
        problems.append(syntax)
    return Loaded(
        objects=tuple(objects.values()),
        problems=tuple(problems),
        rejected=frozenset(rejected - objects.keys()),
        unreadable=syntax is not None,
        where=where_of,
    )


def _read_text(path: str) -> tuple[bytes | None, Problem | None]:
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, Problem(None, f"cannot read file: {exc.strerror or exc}", f"{path}:0")


def _decode(path: str, data: bytes) -> tuple[str | None, Problem | None]:
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        return None, Problem(None, f"not UTF-8 text: {exc.reason} at byte {exc.start}", f"{path}:0")


def load_file(path: str) -> Loaded:
    data, problem = _read_text(path)
    if data is None:
        return Loaded(problems=(problem,) if problem else (), unreadable=True)
    text, problem = _decode(path, data)
    if text is None:
        return Loaded(problems=(problem,) if problem else (), unreadable=True)
    return parse_text(path, text)


def load_directory(path: str) -> tuple[list[ConfigObject], list[Problem]]:
    """Every object (in file order) and every problem below a directory."""
    objects: list[ConfigObject] = []
    problems: list[Problem] = []
    for file in manifest_files(path):
        loaded = load_file(file)
        objects.extend(loaded.objects)
        problems.extend(loaded.problems)
    return objects, problems


def _is_mesh_document(doc: Any) -> bool:
    return (
        isinstance(doc, Mapping) and "apiVersion" not in doc and doc.get("kind", "MeshConfig") == "MeshConfig"
    )


def load_files(paths: Sequence[str]) -> tuple[list[ConfigObject], list[Problem]]:
    """For `validate`: files and directories, plus cross-object and unsupported-field warnings.

    A file holding one document without apiVersion (a bare MeshConfig, as `--mesh-config` takes)
    is checked as a MeshConfig. Raises OSError when a given path cannot be read at all.
    """
    files: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            os.listdir(path)  # raises if unreadable
            files.extend(manifest_files(path))
        else:
            with open(path, "rb"):
                pass  # raises if missing or unreadable
            files.append(path)
    objects: list[ConfigObject] = []
    problems: list[Problem] = []
    where_of: dict[ObjectRef, str] = {}
    for file in files:
        data, problem = _read_text(file)
        text, problem = _decode(file, data) if data is not None else (None, problem)
        if text is None:
            problems.extend([problem] if problem else [])
            continue
        docs, syntax = read_documents(file, text)
        if syntax is None and len(docs) == 1 and _is_mesh_document(docs[0][1]):
            _, found = parse_mesh_config(docs[0][1], f"{file}:0")
            problems.extend(found)
            continue
        loaded = parse_text(file, text)
        objects.extend(loaded.objects)
        problems.extend(loaded.problems)
        for ref, where in loaded.where.items():
            if ref in where_of and where_of[ref].rpartition(":")[0] != file:
                message = f"metadata.name: {ref} is also defined at {where_of[ref]}; only one is served"
                problems.append(Problem(ref, message, where, warning=True))
            where_of[ref] = where
        for obj in loaded.objects:
            problems.extend(unsupported_field_warnings(obj, loaded.where.get(obj.ref, "")))
    problems.extend(duplicate_sidecar_warnings(objects, where_of))
    problems.extend(rule_warnings(objects, where_of))
    return objects, problems


# ---------------------------------------------------------------- the running source
@dataclass(slots=True)
class _FileState:
    signature: Signature
    digest: bytes
    served: dict[ObjectRef, ConfigObject]
    where: Mapping[ObjectRef, str]
    logged: set[str]


@dataclass(frozen=True, slots=True)
class _Change:
    path: str
    signature: Signature | None  # None: the file is gone
    digest: bytes = b""
    loaded: Loaded | None = None  # None: content unchanged


class FileSource:
    """Serves a directory of manifests; see the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        name: str = "files",
        debounce: float = 0.05,
        quiet: float = 0.01,
        rescan_interval: float = 5.0,
    ) -> None:
        self.root = os.fspath(root)
        self.name = name
        # Filesystem events are grouped until `quiet` passes without one, `debounce` at most: the
        # events of one write (create, write, rename) come microseconds apart. Bursts over a longer
        # time are merged again by the push debounce (100 ms quiet) downstream. Was 50 ms of
        # quiet: 40 ms of every file change's latency for no grouping the push did not do anyway.
        self.debounce = debounce
        self.quiet = min(quiet, debounce)
        self.rescan_interval = rescan_interval
        self._files: dict[str, _FileState] = {}
        self._kick = asyncio.Event()
        # Paths named by events since the last sync; None: walk the whole tree next time (a
        # periodic rescan, a restarted watch, too many events, symlinks in the tree).
        self._events: set[str] | None = None
        self._links = True  # until a walk has shown the tree holds none
        self.walks = 0  # whole-tree scans so far (tests and operators: are events enough?)
        self._duplicates_logged: set[str] = set()
        self._root_missing_logged = False

    async def run(self, sink: ConfigSink, stop: asyncio.Event) -> None:
        # watchfiles sets its stop event when cancelled: give it one of our own, not the caller's.
        watch_stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch(watch_stop), name=f"{self.name}-watch")
        try:
            # The watch's first step sets up inotify (up to its first await): only then the first
            # walk, so that a write just after the walk has read a file is an event, not lost
            # until the periodic rescan.
            await asyncio.sleep(0)
            await self._sync(sink)
            sink.mark_synced(self.name)
            while not stop.is_set():
                if not await self._wait(stop):
                    self._events = None  # the rescan interval passed without an event: walk
                if not stop.is_set():
                    await self._sync(sink)
        finally:
            watch_stop.set()  # the watch thread notices within one step (`quiet`)
            try:
                await asyncio.wait_for(asyncio.shield(watcher), timeout=1.0)
            except (TimeoutError, asyncio.CancelledError):
                watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _wait(self, stop: asyncio.Event) -> bool:
        """Until a change is signalled (True), stop is set, or the rescan interval passes."""
        waits = [asyncio.ensure_future(self._kick.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=self.rescan_interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        kicked = self._kick.is_set()
        self._kick.clear()
        return kicked

    async def _watch(self, stop: asyncio.Event) -> None:
        """Turn filesystem events into kicks; retry (and rely on rescans) if watching fails."""
        debounce_ms = max(1, int(self.debounce * 1000))
        while not stop.is_set():
            try:
                async for changes in watchfiles.awatch(
                    self.root,
                    watch_filter=None,
                    debounce=debounce_ms,
                    step=max(1, int(self.quiet * 1000)),
                    stop_event=stop,
                ):
                    if self._events is not None:
                        self._events.update(path for _, path in changes)
                        if len(self._events) > MAX_TOUCHED:
                            self._events = None
                    self._kick.set()
            except Exception as exc:  # e.g. the directory does not exist (yet)
                log.debug(
                    "cannot watch %s (%s); relying on rescans every %ss", self.root, exc, self.rescan_interval
                )
            if stop.is_set():
                return
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.rescan_interval)
            except TimeoutError:
                pass
            self._events = None  # the watch restarted: walk, in case something was missed
            self._kick.set()

    # ------------------------------------------------------------ syncing
    async def _sync(self, sink: ConfigSink) -> None:
        # The worker thread reads self._files as it is: nothing changes it until the scan returns.
        known = self._files
        events = None if self._links else self._events
        self._events = set()  # events from now on are the next sync's
        scan = await asyncio.to_thread(_scan, self.root, known, events)
        if scan.walked:
            self.walks += 1
            self._links = scan.links
        root_ok = scan.root_ok
        if not root_ok and not self._root_missing_logged:
            log.warning("config directory %s cannot be read; serving no files from it", self.root)
        self._root_missing_logged = not root_ok
        sidecars = False
        for change in scan.changes:
            sidecars |= self._apply(sink, change)
        if sidecars:  # only Sidecars can be duplicates: a file without any changes none
            self._report_duplicates(sink)

    def _apply(self, sink: ConfigSink, change: _Change) -> bool:
        """Serve one file's change; True when it held or holds a Sidecar."""
        path = change.path
        state = self._files.get(path)
        if change.signature is None:
            if state is not None:
                del self._files[path]
                sink.replace(path, ())
                sink.report(path, ())
                log.info("removed %s (%d objects)", path, len(state.served))
                return _has_sidecar(state.served)
            return False
        if change.loaded is None:  # same bytes under a new signature (touch, atomic rewrite)
            if state is not None:
                state.signature = change.signature
            return False
        loaded = change.loaded
        previous = state.served if state is not None else {}
        if loaded.unreadable:
            served = dict(previous)  # keep everything this file served before
            where = dict(state.where) if state is not None else {}
        else:
            served = {obj.ref: obj for obj in loaded.objects}
            where = dict(loaded.where)
            for ref in loaded.rejected:
                if ref in previous:  # keep the last good version of a rejected object
                    served[ref] = previous[ref]
                    where[ref] = state.where.get(ref, path) if state is not None else path
            sink.replace(path, served.values())
        sink.report(path, loaded.problems)
        logged = self._log_problems(path, loaded, previous, state.logged if state is not None else set())
        self._files[path] = _FileState(change.signature, change.digest, served, where, logged)
        return _has_sidecar(previous) or _has_sidecar(served)

    def _log_problems(
        self, path: str, loaded: Loaded, previous: Mapping[ObjectRef, ConfigObject], logged: set[str]
    ) -> set[str]:
        """Log each problem once (until it goes away and comes back)."""
        current: set[str] = set()
        for p in loaded.problems:
            text = str(p)
            current.add(text)
            if text in logged:
                continue
            if p.warning:
                log.info("warning: %s", text)
            elif p.ref is not None and p.ref in previous and not loaded.unreadable:
                log.warning("rejected: %s (keeping the previous version)", text)
            elif loaded.unreadable and previous:
                log.warning("rejected: %s (keeping the %d objects this file had)", text, len(previous))
            else:
                log.warning("rejected: %s", text)
        return current

    def _report_duplicates(self, sink: ConfigSink) -> None:
        # Only Sidecars can be duplicates: do not walk (and re-key) every Pod on every file change.
        objects = [obj for st in self._files.values() for obj in st.served.values() if obj.kind == Kind.SIDECAR]
        where = {ref: w for st in self._files.values() for ref, w in st.where.items() if ref.kind == Kind.SIDECAR}
        warnings = duplicate_sidecar_warnings(objects, where)
        sink.report(self.name, warnings)
        texts = {str(w) for w in warnings}
        for text in sorted(texts - self._duplicates_logged):
            log.warning("%s", text)
        self._duplicates_logged = texts


def _has_sidecar(served: Mapping[ObjectRef, ConfigObject]) -> bool:
    return any(ref.kind == Kind.SIDECAR for ref in served)


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)  # follows symlinks: a `..data` swap changes the target inode
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_dev)


@dataclass(frozen=True, slots=True)
class _Scan:
    changes: list[_Change]
    root_ok: bool  # root is a readable directory
    walked: bool  # the whole tree was walked (not just the files events named)
    links: bool  # a walk found symlinks: only walks can see their targets change


def _scan(root: str, known: Mapping[str, _FileState], events: Collection[str] | None = None) -> _Scan:
    """Changes since `known`: of the files `events` named, or of the whole tree (events None, or
    events a look at single files cannot settle). Runs in a worker thread."""
    root_ok = os.path.isdir(root) and os.access(root, os.R_OK | os.X_OK)
    only = touched_manifests(root, events, known) if events is not None and root_ok else None
    links = False
    if only is None:
        paths, links = _walk(root) if root_ok else ([], False)
        candidates: Iterable[str] = known.keys()
    else:
        paths = only
        candidates = known.keys() & set(only)
    changes: list[_Change] = []
    present: set[str] = set()
    for path in paths:
        sig = _signature(path)
        if sig is None:
            continue  # vanished (or a dangling symlink)
        present.add(path)
        before = known.get(path)
        if before is not None and before.signature == sig:
            continue
        data, problem = _read_text(path)
        if data is None and problem is None:
            present.discard(path)  # removed between listing and reading
            continue
        if data is None:
            changes.append(
                _Change(path, sig, b"", Loaded(problems=(problem,) if problem else (), unreadable=True))
            )
            continue
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if before is not None and before.digest == digest:
            changes.append(_Change(path, sig, digest, None))
            continue
        text, problem = _decode(path, data)
        loaded = (
            parse_text(path, text)
            if text is not None
            else Loaded(problems=(problem,) if problem else (), unreadable=True)
        )
        changes.append(_Change(path, sig, digest, loaded))
    for path in sorted(set(candidates) - present):
        changes.append(_Change(path, None))
    return _Scan(changes, root_ok, only is None, links)
