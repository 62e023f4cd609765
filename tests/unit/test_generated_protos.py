"""The checked-in xds_server/_proto output is what scripts/gen_protos.py makes from protos/."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_protos_are_fresh(tmp_path: pathlib.Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = gen
    spec.loader.exec_module(gen)
    written = gen.generate(tmp_path)
    assert written
    for path in written:
        checked_in = ROOT / path.relative_to(tmp_path)
        assert checked_in.read_text() == path.read_text(), (
            f"{checked_in} is stale: run `python scripts/gen_protos.py` and commit the result")
