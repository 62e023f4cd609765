"""The xds-server under test, run with `serve` inside the node namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from e2e.harness import apps
from e2e.harness.apps import HttpResult
from e2e.harness.netns import Netns, Proc
from e2e.harness.waits import GiveUp, wait_for

XDS_SERVER = [sys.executable, "-m", "xds_server"]


class XdsServer:
    def __init__(self, node: Netns, config_dir: Path | None, xds_address: str, admin_address: str,
                 extra_args: list[str] | None = None, *, source_args: list[str] | None = None,
                 name: str = "xds-server") -> None:
        """`source_args` replace `--config-dir DIR` (e.g. `--kubeconfig PATH`)."""
        self.node = node
        self.config_dir = config_dir
        self.xds_address = xds_address
        self.admin_address = admin_address
        if source_args is None:
            assert config_dir is not None
            source_args = ["--config-dir", str(config_dir)]
        self.proc: Proc = node.spawn(name, [
            *XDS_SERVER, "serve", *source_args,
            "--xds-address", xds_address, "--admin-address", admin_address,
            "--debounce-quiet", "0.05", "--debounce-max", "0.5", "--drain-seconds", "0",
            *(extra_args or []),
        ])
        self.wait_ready()

    def admin(self, path: str, timeout: float = 5.0) -> HttpResult:
        return apps.http(self.node, f"http://{self.admin_address}{path}", timeout=timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self.proc.alive():
                raise GiveUp(f"xds-server exited:\n{self.proc.log_tail()}")
            return self.admin("/readyz", timeout=2.0).status == 200

        wait_for(ready, timeout=timeout, what="xds-server /readyz", describe=self.proc.log_tail)

    def debug(self, name: str) -> Any:
        r = self.admin(f"/debug/{name}")
        assert r.status == 200, f"/debug/{name}: {r}"
        return json.loads(r.body)

    def rejected_inputs(self) -> list[dict[str, Any]]:
        """Input the server refused and why (/debug/configz `rejected`: origin, kind, name, message)."""
        return list(self.debug("configz").get("rejected", []))


def bootstrap(node_id: str, xds_address: str, metadata: dict[str, Any], *, sotw: bool = False) -> str:
    """The server's own `xds-server bootstrap` output (the contract a user would follow)."""
    argv = [*XDS_SERVER, "bootstrap", "--node-id", node_id, "--xds-address", xds_address,
            "--format", "json", *(["--sotw"] if sotw else [])]
    for key, value in metadata.items():
        argv += ["--metadata", f"{key}={json.dumps(value) if isinstance(value, dict) else value}"]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout
