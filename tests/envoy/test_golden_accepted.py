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
from typing import Any

import envoy as envoy_wheel
import pytest

from tests.golden.harness import Case, cases, static_bootstrap
from tests.support.certs import TestCA

pytestmark = pytest.mark.envoy
CASES = cases()


def envoy_binary() -> str:
    bundled = Path(envoy_wheel.__file__).parent / "_bin" / "envoy"
    found = str(bundled) if bundled.exists() else shutil.which("envoy")
    if not found:
        pytest.skip("no envoy binary")
    return found


# DataSource fields of TLS contexts that Envoy loads from `filename` while validating.
_TLS_FILES = ("trusted_ca", "crl", "certificate_chain", "private_key")


def with_real_tls_files(config: Any, directory: Path) -> Any:
    """`config` with every TLS file path replaced by a real file of that kind under `directory`."""
    ca: TestCA | None = None
    made: dict[str, str] = {}

    def material(kind: str) -> str:
        nonlocal ca
        if ca is None:
            ca = TestCA(directory / "tls")
            leaf = ca.issue("leaf", dns=("leaf.example",), server=True)
            made.update(trusted_ca=ca.path, crl=ca.crl(), certificate_chain=leaf.cert_path,
                        private_key=leaf.key_path)
        return made[kind]

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in _TLS_FILES and isinstance(value, dict) and "filename" in value:
                    out[key] = {**value, "filename": material(key)}
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(config)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_envoy_accepts_golden_config(case: Case, tmp_path: Path) -> None:
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(with_real_tls_files(static_bootstrap(case.render()), tmp_path)))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "--concurrency", "1",
         "--log-level", "error"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, f"{case.name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
