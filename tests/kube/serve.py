"""`xds-server serve` as a child process against the envtest apiserver: started with the flags
and environment a test gives, ready when /readyz answers 200, stopped by pid (SIGTERM, then
SIGKILL) with its output kept for assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.kube.envtest import free_port


class ServeProcess:
    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.admin_port = free_port()
        self.xds_port = free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="xds-serve-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xds_server", "serve", f"--xds-address=127.0.0.1:{self.xds_port}",
             f"--admin-address=127.0.0.1:{self.admin_port}", "--drain-seconds=0", *args],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def configz(self) -> dict[str, Any]:
        status, body = self.get("/debug/configz")
        assert status == 200, body
        return dict(json.loads(body))

    def objects(self, namespace: str) -> set[str]:
        """`Kind/name` of the objects the server holds in a namespace."""
        return {f"{o['kind']}/{o['name']}" for o in self.configz()["objects"] if o["namespace"] == namespace}

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"xds-server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"xds-server not ready within {timeout:.0f}s:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
