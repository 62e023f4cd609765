"""The image and the compose demo mesh of docs/deploy.md, for real: e2e/containers/run.sh.

The script builds the Dockerfile and brings docker-compose.yml up with rootful Podman (installing
it when missing), checks every documented request and more, and tears everything down. Skipped,
with the reason, when not root or when the engine cannot be installed; it fails (never hangs)
when the demo's published port is taken or the run overruns its time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from e2e.containers.run import EXIT_PORT_TAKEN

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "e2e" / "containers" / "run.sh"
ADMIN = "127.0.0.1:15014"  # docker-compose.yml publishes the server's admin port here
INSTALL_TIMEOUT = 600  # apt and PyPI, cold: about a minute
RUN_TIMEOUT = 900  # cold (debootstrap, stand-ins, the image): 5-6 minutes; warm: about 1
TEARDOWN_GRACE = 180  # after SIGTERM the script still removes what it created

pytestmark = [pytest.mark.containers,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: rootful podman, debootstrap, iptables")]


def _run(argv: list[str], timeout: float, log: Path) -> tuple[int, str]:
    """ARGV in its own session; on overrun SIGTERM (the script tears down), then SIGKILL."""
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                                cwd=ROOT, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=TEARDOWN_GRACE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            pytest.fail(f"{' '.join(argv)} overran {timeout}s; stopped. Its log:\n{log.read_text()[-6000:]}")
    return proc.returncode, out


@pytest.mark.timeout(INSTALL_TIMEOUT + RUN_TIMEOUT + 2 * TEARDOWN_GRACE)
def test_image_and_compose_mesh_for_real(tmp_path: Path) -> None:
    code, _ = _run([str(SCRIPT), "--install-only"], INSTALL_TIMEOUT, tmp_path / "install.log")
    if code != 0:
        pytest.skip(f"the container engine cannot be installed: {(tmp_path / 'install.log').read_text()[-800:]}")
    # run.sh checks the port itself once it holds the machine's lock (so a parallel run of it
    # makes this one wait, not fail) and exits EXIT_PORT_TAKEN at once when something else has it
    code, out = _run([str(SCRIPT)], RUN_TIMEOUT, tmp_path / "run.log")
    log = (tmp_path / "run.log").read_text()
    if code == EXIT_PORT_TAKEN:
        pytest.fail(f"{ADMIN}, which docker-compose.yml publishes, is taken: free it and rerun\n{log[-1000:]}")
    lines = out.strip().splitlines()
    assert lines, f"run.sh exited {code} without a summary:\n{log[-6000:]}"
    summary = json.loads(lines[-1])
    assert summary["problems"] == [], log[-6000:]
    assert code == 0 and summary["ok"], log[-6000:]
    print(json.dumps(summary, indent=1))  # timings and image size in `pytest -s` output
