"""The file source against a real directory and a real Store."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from xds_server.config import Kind, ObjectRef
from xds_server.sources import files as files_module
from xds_server.sources.files import FileSource, load_directory, load_files, manifest_files
from xds_server.store import Store

DEADLINE = 10.0


def sidecar(name: str, host: str = "./*", namespace: str = "ns") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        f'spec: {{egress: [{{hosts: ["{host}"]}}]}}\n'
    )


def service(name: str, port: int = 80, namespace: str = "ns") -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec: {{ports: [{{port: {port}}}]}}\n"
    )


def ref(kind: str, name: str, namespace: str = "ns") -> ObjectRef:
    return ObjectRef(kind, namespace, name)


def hosts(store: Store, name: str) -> list[str] | None:
    obj = store.get(ref(Kind.SIDECAR, name))
    return None if obj is None else list(obj.spec.egress[0].hosts)  # type: ignore[union-attr]


async def eventually(condition: Callable[[], bool], what: str = "condition") -> None:
    """Poll until condition() holds; fail after DEADLINE seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


class Running:
    def __init__(self, root: Path, **kwargs: float) -> None:
        self.store = Store()
        self.source = FileSource(root, debounce=0.02, **kwargs)  # type: ignore[arg-type]
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Running:
        self.task = asyncio.create_task(self.source.run(self.store, self.stop))
        await eventually(lambda: self.store.synced(self.source.name), "first scan")
        return self

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout=DEADLINE)

    def refs(self) -> set[ObjectRef]:
        return {obj.ref for _, obj in self.store.objects()}


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def make(**kwargs: float) -> Running:
        r = Running(tmp_path, **kwargs)
        started.append(r)
        return r

    try:
        yield make
    finally:
        for r in started:
            await r.close()


# ---------------------------------------------------------------- scanning
def test_manifest_files_skip_hidden_and_other_extensions(tmp_path: Path) -> None:
    for rel in [
        "a.yaml",
        "b.YML",
        "c.json",
        "d.txt",
        ".hidden.yaml",
        "sub/deeper/e.yaml",
        ".git/f.yaml",
        "sub/.x/g.yaml",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    found = [os.path.relpath(p, tmp_path) for p in manifest_files(str(tmp_path))]
    assert found == ["a.yaml", "b.YML", "c.json", "sub/deeper/e.yaml"]


def test_the_walk_follows_directory_symlinks_once_and_says_it_met_symlinks(tmp_path: Path) -> None:
    from xds_server.sources.files import _walk

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.yaml").write_text("{}")
    assert _walk(str(root)) == ([str(root / "sub" / "a.yaml")], False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.yaml").write_text("{}")
    os.symlink(outside, root / "linked")  # a directory through a symlink: read, and flagged
    os.symlink(root, root / "sub" / "loop")  # a loop back to the root: walked once
    os.symlink(tmp_path / "missing.yaml", root / "dangling.yaml")  # listed; its stat fails later
    found, links = _walk(str(root))
    assert [os.path.relpath(p, root) for p in found] == ["dangling.yaml", "linked/b.yaml", "sub/a.yaml"]
    assert links
    assert found == manifest_files(str(root))


def test_load_directory_reads_multi_document_yaml_json_and_lists(tmp_path: Path) -> None:
    (tmp_path / "multi.yaml").write_text(sidecar("a") + "---\n" + service("s") + "---\n")
    (tmp_path / "one.json").write_text(
        '{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}}'
    )
    (tmp_path / "list.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: Service, metadata: {name: l1, namespace: ns}, spec: {ports: [{port: 1}]}}\n"
        "- {apiVersion: v1, kind: Service, metadata: {name: l2, namespace: ns}, spec: {ports: [{port: 2}]}}\n"
    )
    objects, problems = load_directory(str(tmp_path))
    assert problems == []
    assert sorted(str(o.ref) for o in objects) == [
        "Namespace/ns",
        "Service/ns/l1",
        "Service/ns/l2",
        "Service/ns/s",
        "Sidecar/ns/a",
    ]


def test_problems_carry_file_and_document_index(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(service("ok") + "---\n" + sidecar("bad", host="nohost"))
    _, problems = load_directory(str(tmp_path))
    assert [str(p) for p in problems] == [
        f"{tmp_path}/f.yaml:1: Sidecar/ns/bad: spec.egress[0].hosts[0]: host 'nohost' must be of the form "
        "namespace/dnsName"
    ]


def test_unnamed_list_items_say_which_item(tmp_path: Path) -> None:
    (tmp_path / "l.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service}\n"
    )
    _, problems = load_directory(str(tmp_path))
    assert [p.message for p in problems] == ["items[0].metadata: required"]


def test_same_object_twice_in_a_file_warns_and_the_later_wins(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(service("s", 1) + "---\n" + service("s", 2))
    objects, problems = load_directory(str(tmp_path))
    assert [o.ports[0].port for o in objects] == [2]  # type: ignore[union-attr]
    assert [(p.warning, p.where) for p in problems] == [(True, f"{tmp_path}/f.yaml:1")]


def test_load_files_adds_cross_file_warnings(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(sidecar("a"))
    (tmp_path / "b.yaml").write_text(sidecar("b"))
    _, problems = load_files([str(tmp_path)])
    assert [(str(p.ref), p.warning, p.where) for p in problems] == [
        ("Sidecar/ns/b", True, f"{tmp_path}/b.yaml:0")
    ]


def test_load_files_raises_for_an_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_files([str(tmp_path / "missing.yaml")])


# ---------------------------------------------------------------- the running source
async def test_first_scan_serves_every_file_then_marks_synced(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "nested" / "deeper").mkdir(parents=True)
    (tmp_path / "top.yaml").write_text(sidecar("top"))
    (tmp_path / "nested" / "deeper" / "svc.yaml").write_text(service("s"))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "ignored.yaml").write_text(service("ignored"))
    r = await running().start()
    assert r.refs() == {ref(Kind.SIDECAR, "top"), ref(Kind.SERVICE, "s")}
    assert dict(r.store.objects())  # origins are the file paths
    assert {origin for origin, _ in r.store.objects()} == {
        str(tmp_path / "top.yaml"),
        str(tmp_path / "nested" / "deeper" / "svc.yaml"),
    }


async def test_added_changed_and_deleted_files_are_picked_up(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "keep.yaml").write_text(service("keep"))
    r = await running(rescan_interval=60).start()
    (tmp_path / "new.yaml").write_text(sidecar("new"))
    await eventually(lambda: hosts(r.store, "new") == ["./*"], "added file")
    (tmp_path / "new.yaml").write_text(sidecar("new", host="other/*"))
    await eventually(lambda: hosts(r.store, "new") == ["other/*"], "changed file")
    (tmp_path / "new.yaml").unlink()
    await eventually(lambda: r.refs() == {ref(Kind.SERVICE, "keep")}, "deleted file")


async def test_atomic_rename_over_is_picked_up(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "sc.yaml"
    target.write_text(sidecar("sc"))
    r = await running(rescan_interval=60).start()
    write_atomically(target, sidecar("sc", host="renamed/*"))
    await eventually(lambda: hosts(r.store, "sc") == ["renamed/*"], "rename over")


async def test_renaming_a_file_moves_its_objects_to_the_new_origin(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "old.yaml").write_text(sidecar("sc"))
    r = await running(rescan_interval=60).start()
    os.rename(tmp_path / "old.yaml", tmp_path / "new.yaml")
    await eventually(
        lambda: [o for o, _ in r.store.objects()] == [str(tmp_path / "new.yaml")],
        "object owned by the new path",
    )


async def test_kubectl_style_data_symlink_swap_is_picked_up(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v1" / "sc.yaml").write_text(sidecar("sc"))
    os.symlink("..v1", tmp_path / "..data")
    os.symlink("..data/sc.yaml", tmp_path / "sc.yaml")
    r = await running(rescan_interval=60).start()
    assert hosts(r.store, "sc") == ["./*"]
    (tmp_path / "..v2").mkdir()
    (tmp_path / "..v2" / "sc.yaml").write_text(sidecar("sc", host="swapped/*"))
    os.symlink("..v2", tmp_path / "..data_tmp")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    await eventually(lambda: hosts(r.store, "sc") == ["swapped/*"], "..data swap")
    assert [o for o, _ in r.store.objects()] == [str(tmp_path / "sc.yaml")]


async def test_deleting_a_file_removes_exactly_its_objects(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.yaml").write_text(sidecar("a") + "---\n" + service("a"))
    (tmp_path / "b.yaml").write_text(sidecar("b") + "---\n" + service("b"))
    r = await running(rescan_interval=60).start()
    (tmp_path / "a.yaml").unlink()
    await eventually(
        lambda: r.refs() == {ref(Kind.SIDECAR, "b"), ref(Kind.SERVICE, "b")}, "a.yaml's objects gone"
    )


async def test_bad_document_keeps_the_previous_good_version(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "f.yaml"
    path.write_text(sidecar("sc") + "---\n" + service("s", 80))
    r = await running(rescan_interval=60).start()
    path.write_text(sidecar("sc", host="no-namespace") + "---\n" + service("s", 81))
    await eventually(lambda: r.store.get(ref(Kind.SERVICE, "s")).ports[0].port == 81, "good doc updated")  # type: ignore[union-attr]
    assert hosts(r.store, "sc") == ["./*"]  # the last good version stays
    problems = r.store.problems[str(path)]
    assert [p.message for p in problems] == [
        "spec.egress[0].hosts[0]: host 'no-namespace' must be of the form namespace/dnsName"
    ]
    path.write_text(sidecar("sc", host="fixed/*") + "---\n" + service("s", 81))
    await eventually(lambda: hosts(r.store, "sc") == ["fixed/*"], "fixed doc served")
    assert str(path) not in r.store.problems


async def test_a_bad_new_object_is_not_served(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    r = await running(rescan_interval=60).start()
    (tmp_path / "f.yaml").write_text(sidecar("sc", host="bad"))
    await eventually(lambda: str(tmp_path / "f.yaml") in r.store.problems, "problem reported")
    assert r.refs() == set()


async def test_file_that_is_not_yaml_keeps_all_its_previous_objects(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "f.yaml"
    path.write_text(sidecar("a") + "---\n" + service("s"))
    r = await running(rescan_interval=60).start()
    path.write_text(sidecar("a", host="new/*") + "---\nkind: [unclosed\n")
    await eventually(lambda: str(path) in r.store.problems, "syntax problem reported")
    assert r.refs() == {ref(Kind.SIDECAR, "a"), ref(Kind.SERVICE, "s")}
    assert hosts(r.store, "a") == ["./*"]
    assert r.store.problems[str(path)][0].message.startswith("invalid YAML: ")
    assert r.store.problems[str(path)][0].where == f"{path}:1"


async def test_each_rejection_is_logged_once(
    tmp_path: Path, running, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.WARNING, logger="xds_server.sources.files")
    path = tmp_path / "f.yaml"
    path.write_text(sidecar("sc", host="bad"))
    r = await running(rescan_interval=60).start()
    path.write_text("# edited\n" + sidecar("sc", host="bad"))
    (tmp_path / "marker.yaml").write_text(service("marker"))
    await eventually(lambda: ref(Kind.SERVICE, "marker") in r.refs(), "later change applied")
    await eventually(lambda: r.store.problems.get(str(path), ()) != (), "problem kept")
    rejections = [rec.getMessage() for rec in caplog.records if "Sidecar/ns/sc" in rec.getMessage()]
    assert len(rejections) == 1
    assert "rejected" in rejections[0] and "spec.egress[0].hosts[0]" in rejections[0]


async def test_duplicate_selectorless_sidecars_are_reported_under_the_source_name(
    tmp_path: Path, running
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.yaml").write_text(sidecar("a"))
    (tmp_path / "b.yaml").write_text(sidecar("b"))
    r = await running(rescan_interval=60).start()
    warnings = r.store.problems[r.source.name]
    assert [(str(w.ref), w.warning) for w in warnings] == [("Sidecar/ns/b", True)]
    (tmp_path / "b.yaml").unlink()
    await eventually(lambda: r.source.name not in r.store.problems, "warning cleared")


async def test_rescan_finds_changes_when_no_event_arrives(
    tmp_path: Path,
    running,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    async def no_events(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        raise OSError("inotify unavailable")
        yield  # pragma: no cover

    monkeypatch.setattr(files_module.watchfiles, "awatch", no_events)
    r = await running(rescan_interval=0.05).start()
    (tmp_path / "late.yaml").write_text(sidecar("late"))
    await eventually(lambda: hosts(r.store, "late") == ["./*"], "rescan")


async def test_a_missing_directory_serves_nothing_until_it_appears(tmp_path: Path) -> None:
    root = tmp_path / "later"
    store, stop = Store(), asyncio.Event()
    source = FileSource(root, debounce=0.02, rescan_interval=0.05)
    task = asyncio.create_task(source.run(store, stop))
    try:
        await eventually(lambda: store.synced(source.name), "first scan")
        assert list(store.objects()) == []
        root.mkdir()
        (root / "a.yaml").write_text(sidecar("a"))
        await eventually(lambda: store.get(ref(Kind.SIDECAR, "a")) is not None, "directory created")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=DEADLINE)


async def test_stop_ends_run_promptly(tmp_path: Path) -> None:
    store, stop = Store(), asyncio.Event()
    task = asyncio.create_task(FileSource(tmp_path, rescan_interval=60).run(store, stop))
    await eventually(lambda: store.synced("files"), "first scan")
    stop.set()
    await asyncio.wait_for(task, timeout=2.0)


# ---------------------------------------------------------------- events name the files to look at
def test_touched_manifests_names_only_what_a_look_at_single_files_settles(tmp_path: Path) -> None:
    from xds_server.sources.files import touched_manifests

    root = str(tmp_path)
    (tmp_path / "a.yaml").write_text(sidecar("a"))
    (tmp_path / "notes.txt").write_text("not config")
    (tmp_path / ".a.yaml.tmp").write_text("an atomic writer's temp file")
    (tmp_path / "sub").mkdir()
    known = {os.path.join(root, "gone.yaml"), os.path.join(root, "olddir", "x.yaml")}

    def touched(*names: str) -> list[str] | None:
        return touched_manifests(root, [str(tmp_path / n) for n in names], known)

    assert touched("a.yaml") == [os.path.join(root, "a.yaml")]
    assert touched("a.yaml", "a.yaml") == [os.path.join(root, "a.yaml")]
    assert touched("gone.yaml") == [os.path.join(root, "gone.yaml")]  # a served file removed
    assert touched("notes.txt", ".a.yaml.tmp", ".git/index", "never-served.yaml") == []  # never read
    assert touched("sub") is None  # a directory: what is below it is unknown
    assert touched("olddir") is None  # gone, with served files below it: renamed or deleted
    assert touched_manifests(root, [root], known) is None  # the root itself
    assert touched_manifests(root, [str(tmp_path.parent / "elsewhere.yaml")], known) is None
    os.symlink(tmp_path / "a.yaml", tmp_path / "link.yaml")
    assert touched("link.yaml") is None  # a symlink: its target can change without an event
    # Relative roots: paths come back spelled the way the source spells them.
    rel_root = os.path.relpath(root)
    assert touched_manifests(rel_root, [str(tmp_path / "a.yaml")], set()) == [os.path.join(rel_root, "a.yaml")]


async def test_a_write_among_many_files_looks_at_that_file_only(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    for i in range(50):
        (tmp_path / f"svc-{i}.yaml").write_text(service(f"svc-{i}"))
    (tmp_path / "sc.yaml").write_text(sidecar("sc"))
    r = await running(rescan_interval=60).start()
    walks = r.source.walks
    write_atomically(tmp_path / "sc.yaml", sidecar("sc", host="edited/*"))  # temp file + rename over
    await eventually(lambda: hosts(r.store, "sc") == ["edited/*"], "atomic write")
    (tmp_path / "new.yaml").write_text(sidecar("new"))
    await eventually(lambda: hosts(r.store, "new") == ["./*"], "new file")
    (tmp_path / "svc-3.yaml").unlink()
    await eventually(lambda: ref(Kind.SERVICE, "svc-3") not in r.refs(), "deleted file")
    assert r.source.walks == walks  # none of these needed the tree walked
    assert len(r.refs()) == 51


async def test_directories_appearing_moving_and_going_are_walked(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "top.yaml").write_text(sidecar("top"))
    r = await running(rescan_interval=60).start()
    walks = r.source.walks
    staging = tmp_path / ".staging"
    staging.mkdir()
    (staging / "inner.yaml").write_text(sidecar("inner"))
    os.rename(staging, tmp_path / "conf")  # a directory of manifests appears at once
    await eventually(lambda: hosts(r.store, "inner") == ["./*"], "directory moved in")
    assert r.source.walks > walks
    os.rename(tmp_path / "conf", tmp_path / "conf2")
    await eventually(lambda: [origin for origin, obj in r.store.objects() if obj.ref.name == "inner"]
                     == [str(tmp_path / "conf2" / "inner.yaml")], "directory renamed")
    (tmp_path / "conf2" / "inner.yaml").unlink()
    (tmp_path / "conf2").rmdir()
    await eventually(lambda: ref(Kind.SIDECAR, "inner") not in r.refs(), "directory removed")
    assert hosts(r.store, "top") == ["./*"]


async def test_a_tree_with_symlinks_is_walked_on_every_event(tmp_path: Path, running) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.yaml").write_text(sidecar("linked"))
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside / "target.yaml", root / "linked.yaml")
    store, stop = Store(), asyncio.Event()
    source = FileSource(root, debounce=0.02, rescan_interval=60)
    task = asyncio.create_task(source.run(store, stop))
    try:
        await eventually(lambda: store.synced(source.name), "first scan")
        walks = source.walks
        (outside / "target.yaml").write_text(sidecar("linked", host="via-link/*"))  # no event under root
        (root / "other.yaml").write_text(sidecar("other"))  # an event: the walk sees both
        await eventually(lambda: hosts(store, "other") == ["./*"], "event")
        assert hosts(store, "linked") == ["via-link/*"]
        assert source.walks > walks
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=DEADLINE)


async def test_a_write_racing_the_first_scan_is_not_lost(
    tmp_path: Path,
    running,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch is up before the first walk: a write just after the walk read the tree is an event."""
    (tmp_path / "early.yaml").write_text(sidecar("early"))
    real_scan = files_module._scan
    calls = 0

    def scan_then_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        result = real_scan(*args, **kwargs)
        if calls == 1:  # the first walk has listed and read everything: now a write lands
            (tmp_path / "late.yaml").write_text(sidecar("late"))
        return result

    monkeypatch.setattr(files_module, "_scan", scan_then_write)
    r = await running(rescan_interval=60).start()  # no periodic rescan to fall back on
    assert hosts(r.store, "early") == ["./*"]
    await eventually(lambda: hosts(r.store, "late") == ["./*"], "the write during the first scan")
