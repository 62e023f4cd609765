"""Each stage imports only the stages below it.

From the bottom: config objects as written; the store; the mesh model; translation; push; the
xDS transport. Sources feed the store; the composition root (app.py, commands/) wires them all.
Every import statement of every module under xds_server/ is read with `ast` (also those inside
functions and under TYPE_CHECKING): a lower stage that reaches up, even lazily, is a cycle waiting
to happen, and a reader can no longer learn one stage without the next.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "xds_server"

# stage -> the stages (top-level packages under xds_server/, or outside libraries) it must not import.
FORBIDDEN: dict[str, frozenset[str]] = {
    # Config objects as written (parse, validate): the bottom, every stage reads them.
    "config": frozenset({"store", "mesh", "translate", "push", "xds", "sources", "admin", "commands"}),
    # The store holds config objects and indexes them by what they are, not by what they mean.
    "store": frozenset({"mesh", "translate", "push", "xds", "sources", "admin", "commands"}),
    # The mesh model (services, scopes, workloads): what translation reasons about, not how it is served.
    "mesh": frozenset({"translate", "push", "xds", "sources"}),
    # Pure translation: no push decisions, no transport, no sources.
    "translate": frozenset({"push", "xds", "sources", "grpc"}),
    # Sources feed the store; they know nothing of what is made of it.
    "sources": frozenset({"translate", "push", "xds"}),
    # The transport serves snapshots of resources (resources.py) to any proxy-like object (xds/proxy.py);
    # it does not know how they are made, nor what a config object or the store is.
    "xds": frozenset({"config", "store", "mesh", "translate", "push", "sources", "admin", "commands"}),
}

# (importing module, imported module) pairs tolerated for now, each with the reason. None today.
EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> Iterator[str]:
    return _imports_in(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py")


def _imports_in(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module `source` imports, absolute; `from a import b` yields a.b too (b may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _stage(module: str) -> str:
    """`xds_server.mesh.scope` -> `mesh`; an outside library -> its top-level name (`grpc`)."""
    parts = module.split(".")
    if parts[0] == "xds_server":
        return parts[1] if len(parts) > 1 else ""
    return parts[0]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_proto" not in p.parts)


def test_every_stage_named_exists() -> None:
    for stage in FORBIDDEN:
        assert (PACKAGE / stage / "__init__.py").is_file(), f"xds_server/{stage}/ is gone: update the layer rules"


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_imports_only_downwards(stage: str) -> None:
    checked = 0
    wrong: list[str] = []
    for path in _modules():
        module = _module_name(path)
        if _stage(module) != stage:
            continue
        checked += 1
        for imported in sorted(set(_imports(path))):
            if _stage(imported) in FORBIDDEN[stage] and (module, imported) not in EXCEPTIONS:
                wrong.append(f"{module} imports {imported}")
    assert checked, f"no module found for stage {stage}"
    assert not wrong, f"{stage} must not import {sorted(FORBIDDEN[stage])}:\n" + "\n".join(wrong)


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    """The rules above are only as good as the import reader: check it on source written here."""
    source = (
        "import grpc.aio\n"
        "from xds_server.push import planner\n"
        "def later():\n"
        "    from xds_server.xds.cache import SnapshotCache\n"
        "    from . import envoy\n"
        "    from ..mesh import scope\n"
    )
    found = set(_imports_in(source, "xds_server.translate.example", is_package=False))
    assert {"grpc.aio", "xds_server.push.planner", "xds_server.xds.cache", "xds_server.translate.envoy",
            "xds_server.mesh.scope"} <= found
    assert {_stage(m) for m in found} == {"grpc", "push", "xds", "translate", "mesh"}
