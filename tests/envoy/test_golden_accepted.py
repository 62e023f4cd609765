"""Every golden config is accepted by a real Envoy (`--mode validate`, static resources).

EDS assignments and RDS routes are inlined (static_bootstrap) so Envoy checks them too.
Envoy reads the certificate files a TLS context names (CA bundles, CRLs, certificate chains,
private keys) while validating, so each path is pointed at a real file of that kind made for the
test: the configuration itself, paths aside, is what the golden holds.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import envoy as envoy_wheel
import pytest

from tests.golden.harness import Case, RealTlsFiles, cases, static_bootstrap

pytestmark = pytest.mark.envoy
CASES = cases()


def envoy_binary() -> str:
    bundled = Path(envoy_wheel.__file__).parent / "_bin" / "envoy"
    found = str(bundled) if bundled.exists() else shutil.which("envoy")
    if not found:
        pytest.skip("no envoy binary")
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_envoy_accepts_golden_config(case: Case, tmp_path: Path) -> None:
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(RealTlsFiles(tmp_path).rewrite(static_bootstrap(case.render()))))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, f"{case.name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
