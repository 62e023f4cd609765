"""The xds stage names no other stage: it serves snapshots of resources to any proxy-like object.

Its only imports from this package are its own modules and the resource leaf module (type URLs,
`Built`, snapshots); what it needs of a proxy is the XdsProxy protocol (xds/proxy.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import xds_server.xds

ALLOWED = ("xds_server.xds", "xds_server.resources")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_xds_stage_imports_no_other_stage() -> None:
    folder = Path(xds_server.xds.__file__).parent
    modules = sorted(folder.glob("*.py"))
    assert len(modules) > 10
    outside = {f"{p.name}: {m}" for p in modules for m in _imports(p)
               if m.startswith("xds_server") and not m.startswith(ALLOWED)}
    assert not outside, sorted(outside)
