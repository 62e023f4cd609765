"""Each case in tests/golden renders (through `render_snapshot`, as `xds-server render` does) to
exactly its reviewed expected.json. Regenerate with UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import difflib

import pytest

from tests.golden.harness import UPDATE, Case, cases, dump_text

CASES = cases()


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Case) -> None:
    snapshot = case.render()
    assert not snapshot.dangling(), snapshot.dangling()
    got = dump_text(snapshot)
    expected_file = case.path / "expected.json"
    if UPDATE:
        expected_file.write_text(got)
    assert expected_file.exists(), f"{expected_file} missing: run with UPDATE_GOLDEN=1 and review it"
    expected = expected_file.read_text()
    if got != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), got.splitlines(True), "expected", "got", n=2))
        pytest.fail(f"{case.name} differs from expected.json:\n{diff[:6000]}")
