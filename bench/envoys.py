"""Real Envoys on a generated mesh: how long until each has applied an endpoint change?

Each Envoy runs alone in a network namespace (its pod IP on lo, its own 15001/15006), reaches
the server over a unix socket, and exposes its admin API over another; all are pinned to CPU 1
(the server has CPU 0). Optionally the load generator adds N Envoy-like streams on the same
socket. For every change (a pod added to, then removed from, a service every proxy imports),
convergence is read from Envoy itself: the EDS subscription's `update_time` stat of that cluster
(milliseconds since the epoch at which the Envoy applied the update) minus the time the file was
written. Envoy applies then ACKs; the time is Envoy's own.

    python -m bench.envoys --envoys 20 --services 1000 [--proxies 2000] [--changes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import mesh
from bench.harness import LoadGenPool, ServerProcess, cpu_count
from bench.scenarios import percentiles
from tests.support.envoy import _UnixHTTPConnection, envoy_binary
from xds_server.commands.bootstrap import build_bootstrap


class IsolatedEnvoy:
    """One Envoy in its own network namespace, xDS and admin over unix sockets."""

    def __init__(self, identity: mesh.ProxyIdentity, xds_socket: str, workdir: str, cpu: int | None) -> None:
        self.identity = identity
        self.dir = os.path.join(workdir, f"envoy-{identity.pod}.{identity.namespace}")
        os.makedirs(self.dir, exist_ok=True)
        self.admin = os.path.join(self.dir, "admin.sock")
        self.netns = f"xb{secrets.token_hex(4)}"
        boot = build_bootstrap(identity.node_id, f"unix://{xds_socket}", 15000, identity.metadata())
        boot["admin"]["address"] = {"pipe": {"path": self.admin}}
        self.bootstrap = os.path.join(self.dir, "bootstrap.json")
        with open(self.bootstrap, "w") as f:
            json.dump(boot, f)
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "addr", "add", f"{self.identity.ip}/32", "dev", "lo"],
                       check=True)
        cmd = ["ip", "netns", "exec", self.netns, envoy_binary(), "-c", self.bootstrap, "--concurrency", "1",
               "--disable-hot-restart", "--log-level", "warning", "--drain-time-s", "1"]
        if self.cpu is not None and cpu_count() > 1:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        self._log = open(os.path.join(self.dir, "envoy.log"), "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def get(self, path: str, timeout: float = 5.0) -> str:
        conn = _UnixHTTPConnection(self.admin, timeout)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def stats(self, regex: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.get(f"/stats?filter={regex}").splitlines():
            name, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(5)
        if hasattr(self, "_log"):
            self._log.close()
        subprocess.run(["ip", "netns", "del", self.netns], check=False, capture_output=True)


def _stat_regex(cluster: str, stats: str) -> str:
    """An admin /stats filter for `stats` (a regex alternative) of one cluster, URL-safe."""
    return ("^" + re.escape(f"cluster.{cluster}.") + f"({stats})$").replace("|", "%7C")


def wait_until(pred: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise TimeoutError(what)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise SystemExit("needs root and `ip netns` (each Envoy runs in its own network namespace)")
    workdir = args.workdir or tempfile.mkdtemp(prefix="xds-bench-envoys-")
    # The Envoys take the first pods of the mesh (one per service); the load generator the rest.
    total = args.envoys + args.proxies
    identities = mesh.generate(workdir, args.services, total, args.namespaces)
    envoy_ids, rest = identities[:args.envoys], identities[args.envoys:]
    with open(os.path.join(workdir, "loadgen.json"), "w") as f:
        json.dump([{"node_id": p.node_id, "namespace": p.namespace, "pod": p.pod, "ip": p.ip, "app": p.app}
                   for p in rest], f)
    sock = os.path.join(workdir, "xds.sock")
    server = ServerProcess(os.path.join(workdir, "mesh"), workdir, xds_address=f"unix://{sock}",
                           extra=tuple(args.server_arg))
    envoys: list[IsolatedEnvoy] = []
    pool: LoadGenPool | None = None
    out: dict[str, Any] = {"envoys": args.envoys, "proxies": args.proxies, "services": args.services}
    try:
        server.start()
        if rest:
            pool = LoadGenPool(f"unix://{sock}", os.path.join(workdir, "loadgen.json"), len(rest))
            pool.start()
            ready = pool.wait_ready(300)
            out["loadgen_incomplete"] = sum(1 for t in ready["complete"] if t is None)
        t0 = time.monotonic()
        for ident in envoy_ids:
            env = IsolatedEnvoy(ident, sock, workdir, cpu=1)
            env.start()
            envoys.append(env)
        want = args.services + 3  # every outbound cluster, BlackHole, Passthrough, InboundPassthrough

        def warm(env: IsolatedEnvoy) -> bool:
            try:
                s = env.get("/stats?filter=^cluster_manager.(active_clusters|warming_clusters)$")
            except OSError:
                return False
            values = dict(line.split(": ") for line in s.splitlines() if ": " in line)
            return int(values.get("cluster_manager.active_clusters", 0)) >= want and \
                values.get("cluster_manager.warming_clusters") == "0"

        wait_until(lambda: all(warm(e) for e in envoys), 600, "Envoys warm")
        out["envoys_warm_s"] = time.monotonic() - t0
        print(f"{len(envoys)} Envoys warm with {want} clusters in {out['envoys_warm_s']:.1f}s", flush=True)
        lat: list[float] = []
        cpu0 = server.stats.cpu_seconds()  # type: ignore[union-attr]
        for k in range(args.changes):
            svc = (k * 37) % args.services
            cluster = mesh.cluster_name(svc, args.namespaces)
            ns = mesh.namespace_of(svc, args.namespaces)
            ip = mesh.churn_ip(k)
            name = os.path.join(workdir, "mesh", f"envoy-churn-{k}.yaml")
            for adding in (True, False):
                regex = _stat_regex(cluster, "update_time|membership_total")
                before = [e.stats(regex) for e in envoys]
                time.sleep(0.5)
                at = time.time()
                if adding:
                    mesh.write_file(name, mesh.pod_doc(f"envoy-churn-{k}", ns, mesh.service_name(svc), ip,
                                                       mesh.service_port(svc)[2]))
                else:
                    os.unlink(name)
                key_t, key_m = f"cluster.{cluster}.update_time", f"cluster.{cluster}.membership_total"
                expect = [b.get(key_m, 0) + (1 if adding else -1) for b in before]

                def applied(expect: list[int] = expect, key_m: str = key_m, regex: str = regex) -> bool:
                    return all(e.stats(regex).get(key_m) == m for e, m in zip(envoys, expect, strict=True))

                wait_until(applied, 30, f"change {k} applied", every=0.1)
                for e in envoys:
                    lat.append(e.stats(regex)[key_t] / 1000.0 - at)
                print(f"change {k} ({'add' if adding else 'remove'} {cluster}): "
                      f"max {max(lat[-len(envoys):]) * 1000:.0f} ms", flush=True)
        out["convergence_s"] = percentiles(lat)
        out["server_cpu_s"] = server.stats.cpu_seconds() - cpu0  # type: ignore[union-attr]
        rejected = sum(sum(e.stats("update_rejected$").values()) for e in envoys)
        out["envoy_rejected_updates"] = rejected
        out["server_peak_rss_mb"] = server.stats.peak_rss() / 1024 / 1024  # type: ignore[union-attr]
    finally:
        for e in envoys:
            e.stop()
        if pool is not None:
            pool.stop()
        server.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envoys", type=int, default=20)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--proxies", type=int, default=0, help="load generator streams besides the Envoys")
    p.add_argument("--namespaces", type=int, default=mesh.DEFAULT_NAMESPACES)
    p.add_argument("--changes", type=int, default=5, help="pods added and removed (each is two changes)")
    p.add_argument("--server-arg", action="append", default=[])
    p.add_argument("--workdir")
    p.add_argument("--json")
    a = p.parse_args()
    print(f"# command: {' '.join(['python -m bench.envoys', *sys.argv[1:]])}", flush=True)
    res = run(a)
    c = res["convergence_s"]
    print(f"\n{res['envoys']} Envoys (+{res['proxies']} load generator streams), {res['services']} services: "
          f"endpoint change applied p50 {c['p50'] * 1000:.0f} ms, p90 {c['p90'] * 1000:.0f} ms, "
          f"p99 {c['p99'] * 1000:.0f} ms, max {c['max'] * 1000:.0f} ms over {c['n']} (Envoy, change) pairs; "
          f"rejected updates {res['envoy_rejected_updates']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
