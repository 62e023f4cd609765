"""Scenarios against one server process: cold start, pod add/remove, churn, new service, Sidecar
change, and (with `rules`) a VirtualService change.

A `Bench` owns one generated mesh, one server (`xds-server serve --config-dir`, pinned to CPU 0)
and one pool of load generators (pinned to CPU 1). Inputs change by writing files into the
config directory, as an operator or a config sync tool would; the change time is taken just
before the write, and convergence is measured to the ACK of the last proxy that must see it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from bench import mesh
from bench.harness import LoadGenPool, ServerProcess
from bench.loadgen import CDS, EDS, RDS

MB = 1024 * 1024


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]  # nearest rank

    return {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": v[-1], "n": len(v)}


@dataclass
class Config:
    proxies: int
    services: int
    sidecars: bool = False
    sotw: bool = False
    rules: int = 0  # VirtualServices and DestinationRules in the mesh (as many of each)
    namespaces: int = mesh.DEFAULT_NAMESPACES
    procs: int = 1  # load generator processes
    server_args: tuple[str, ...] = ()
    client_args: tuple[str, ...] = ()  # extra load generator flags, e.g. ("--slow",)
    cold_timeout: float = 180.0
    change_timeout: float = 15.0

    @property
    def label(self) -> str:
        return (f"N={self.proxies} M={self.services}{' sidecar ./*' if self.sidecars else ''}"
                f"{f' {self.rules} VS+DR' if self.rules else ''}"
                f"{' sotw' if self.sotw else ' delta'}{' slow clients' if '--slow' in self.client_args else ''}"
                f"{self._workers}")

    @property
    def _workers(self) -> str:
        args = list(self.server_args)
        return f" {args[args.index('--workers') + 1]} workers" if "--workers" in args else ""


@dataclass
class Bench:
    cfg: Config
    workdir: str
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.idle_cpu_per_s = 0.0
        self.server: ServerProcess | None = None
        self.pool: LoadGenPool | None = None
        self.identities: list[mesh.ProxyIdentity] = []
        self.seq = 0

    # ------------------------------------------------------------------ lifecycle
    def setup(self) -> None:
        cfg = self.cfg
        os.makedirs(self.workdir, exist_ok=True)
        self.identities = mesh.generate(self.workdir, cfg.services, cfg.proxies, cfg.namespaces, cfg.sidecars,
                                        cfg.rules)
        self.mesh_dir = os.path.join(self.workdir, "mesh")
        t = time.monotonic()
        self.server = ServerProcess(self.mesh_dir, self.workdir, extra=cfg.server_args).start()
        self.results["server_start_s"] = time.monotonic() - t
        self.results["rss_idle_mb"] = self.server.stats.rss() / MB  # type: ignore[union-attr]

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        if self.server is not None:
            self.results["server_peak_rss_mb"] = self.server.stats.peak_rss() / MB  # type: ignore[union-attr]
            self.server.stop()

    @property
    def stats(self) -> Any:
        assert self.server is not None and self.server.stats is not None
        return self.server.stats

    # ------------------------------------------------------------------ helpers
    def importers(self, namespace: str) -> list[int]:
        """Proxies that import a service of `namespace` (all, unless Sidecars narrow egress to ./*)."""
        if not self.cfg.sidecars:
            return list(range(len(self.identities)))
        return [i for i, p in enumerate(self.identities) if p.namespace == namespace]

    def _change(self, group: str, watches: list[dict[str, Any]], expected: list[int], write: Any,
                settle: float = 0.5) -> dict[str, Any]:
        """Arm watches, make the change (write), wait for every expected proxy, then for quiet."""
        assert self.pool is not None
        pool = self.pool
        pool.quiet(0.3, timeout=30)
        pool.counters(reset=True)
        pool.arm(group, watches)
        cpu0 = self.stats.cpu_seconds()
        each0 = self.stats.per_process_cpu()
        lg0 = pool.cpu_seconds()
        t0 = time.monotonic()
        write()
        got = pool.wait_watch(group, expected, self.cfg.change_timeout)
        pool.quiet(settle, timeout=30)
        cpu = self.stats.cpu_seconds() - cpu0
        each = [b - a for a, b in zip(each0, self.stats.per_process_cpu(), strict=True)]
        window = time.monotonic() - t0
        lg_cpu = pool.cpu_seconds() - lg0
        pool.disarm(group)
        counters = pool.counters(reset=True)
        expected_set = set(expected)
        lat = [t - t0 for i, t in enumerate(got["times"]) if i in expected_set and t is not None]
        missing = sum(1 for i in expected if got["times"][i] is None)
        others = [r for i, r in enumerate(got["responses"]) if i not in expected_set]
        return {
            "convergence_s": percentiles(lat),
            "latencies_s": lat,
            "expected": len(expected),
            "missing": missing,
            "others": len(others),
            "others_with_responses": sum(1 for r in others if r),
            "responses": sum(c["responses"] for c in counters.values()),
            "resources": sum(c["resources"] + c["removed"] for c in counters.values()),
            "bytes": sum(c["bytes"] for c in counters.values()),
            "by_type": counters,
            "server_cpu_s": cpu,
            # The same window's share of the idle load (keepalives, timers, the collector's tick
            # of all N connections), measured after the cold start: what the change itself cost.
            "server_cpu_net_s": cpu - self.idle_cpu_per_s * window,
            # serve --workers N: the supervisor's, then each worker's (one entry without workers)
            "server_cpu_per_process_s": each,
            "window_s": window,
            "loadgen_cpu_s": lg_cpu,
        }

    def measure_idle(self, seconds: float = 5.0) -> float:
        """Server CPU per second with every proxy connected and nothing changing."""
        assert self.pool is not None
        self.pool.quiet(0.5, timeout=30)
        cpu0, t0 = self.stats.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        self.idle_cpu_per_s = (self.stats.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        self.results["idle_cpu_per_s"] = self.idle_cpu_per_s
        return self.idle_cpu_per_s

    def _pushes(self) -> int:
        """Pushes the server has run (one per debounced burst of changes)."""
        assert self.server is not None
        return int(self.server.metric("pilot_pushcontext_init_seconds_count"))

    def _write(self, name: str, text: str) -> None:
        mesh.write_file(os.path.join(self.mesh_dir, name), text)

    def _remove(self, name: str) -> None:
        os.unlink(os.path.join(self.mesh_dir, name))

    # ------------------------------------------------------------------ scenarios
    def cold_start(self) -> dict[str, Any]:
        cfg = self.cfg
        assert self.server is not None
        self.stats.reset_peak()
        self.pool = LoadGenPool(self.server.target, os.path.join(self.workdir, "proxies.json"), len(self.identities),
                                procs=cfg.procs, sotw=cfg.sotw, extra=cfg.client_args)
        rss0 = self.stats.rss()
        cpu0 = self.stats.cpu_seconds()
        lg0 = self.pool.cpu_seconds()
        t0 = time.monotonic()
        self.pool.start()
        ready = self.pool.wait_ready(cfg.cold_timeout)
        done = [t - t0 for t in ready["complete"] if t is not None]
        cpu = self.stats.cpu_seconds() - cpu0
        self.pool.quiet(1.0, timeout=60)
        counters = self.pool.counters(reset=True)
        rss = self.stats.rss()
        out = {
            "complete_s": percentiles(done),
            "incomplete": len(ready["complete"]) - len(done),
            "stream_errors": ready["errors"],
            "error_samples": ready["error_samples"][:3],
            "server_cpu_s": cpu,
            "loadgen_cpu_s": self.pool.cpu_seconds() - lg0,
            "responses": sum(c["responses"] for c in counters.values()),
            "resources": sum(c["resources"] for c in counters.values()),
            "bytes": sum(c["bytes"] for c in counters.values()),
            "by_type": counters,
            "rss_before_mb": rss0 / MB,
            "rss_after_mb": rss / MB,
            "peak_rss_mb": self.stats.peak_rss() / MB,
            "per_proxy_kb": (rss - rss0) / 1024 / max(1, len(self.identities)),
            # The send bound (--max-bytes-in-flight): how much was in flight at most, how often streams waited.
            "send_peak_mb": self.server.metric("xds_server_send_bytes_in_flight_peak") / MB,
            "send_waits": self.server.metric("xds_server_send_waits_total"),
        }
        self.results["cold_start"] = out
        return out

    def pod_add(self, service: int = 0) -> dict[str, Any]:
        """One pod added to one service: importers ACK the new endpoints; nobody else hears a thing."""
        self.seq += 1
        ns = mesh.namespace_of(service, self.cfg.namespaces)
        ip = mesh.churn_ip(self.seq)
        name = f"churn-{self.seq}"
        doc = mesh.pod_doc(name, ns, mesh.service_name(service), ip, mesh.service_port(service)[2])
        watch = [{"type": EDS, "name": mesh.cluster_name(service, self.cfg.namespaces), "kind": "contains",
                  "data": ip}]
        out = self._change(f"add-{self.seq}", watch, self.importers(ns), lambda: self._write(f"{name}.yaml", doc))
        out["file"] = f"{name}.yaml"
        out["ip"] = ip
        return out

    def pod_remove(self, service: int, added: dict[str, Any]) -> dict[str, Any]:
        ns = mesh.namespace_of(service, self.cfg.namespaces)
        watch = [{"type": EDS, "name": mesh.cluster_name(service, self.cfg.namespaces), "kind": "lacks",
                  "data": added["ip"]}]
        return self._change(f"remove-{added['file']}", watch, self.importers(ns),
                            lambda: self._remove(added["file"]))

    def churn(self, rate: float, seconds: float, keep: int = 10) -> dict[str, Any]:
        """Rolling churn: every 1/rate s one pod is added and the one added `keep` steps earlier removed.

        Each add and each removal is a change of its own, watched on every proxy that imports the
        service; convergence is per (change, importing proxy).
        """
        assert self.pool is not None
        pool = self.pool
        pool.quiet(0.3, timeout=30)
        pool.counters(reset=True)
        steps = max(1, int(rate * seconds))
        live: list[tuple[int, str, str]] = []
        changes: list[tuple[str, float, list[int]]] = []
        pushes0 = self._pushes()  # read outside the CPU window: a scrape costs the server CPU too
        cpu0 = self.stats.cpu_seconds()
        start = time.monotonic()
        for k in range(steps):
            svc = (k * 7) % self.cfg.services
            ns = mesh.namespace_of(svc, self.cfg.namespaces)
            self.seq += 1
            ip, name = mesh.churn_ip(self.seq), f"churn-{self.seq}.yaml"
            doc = mesh.pod_doc(f"churn-{self.seq}", ns, mesh.service_name(svc), ip, mesh.service_port(svc)[2])
            group = f"churn-add-{self.seq}"
            pool.arm(group, [{"type": EDS, "name": mesh.cluster_name(svc, self.cfg.namespaces), "kind": "contains",
                              "data": ip}])
            gone = live.pop(0) if len(live) >= keep else None
            if gone is not None:
                rsvc, rfile, rip = gone
                rgroup = f"churn-rm-{rfile}"
                pool.arm(rgroup, [{"type": EDS, "name": mesh.cluster_name(rsvc, self.cfg.namespaces),
                                   "kind": "lacks", "data": rip}])
            _sleep_until(start + k / rate)
            t0 = time.monotonic()
            self._write(name, doc)
            changes.append((group, t0, self.importers(ns)))
            live.append((svc, name, ip))
            if gone is not None:
                t0 = time.monotonic()
                self._remove(gone[1])
                changes.append((rgroup, t0, self.importers(mesh.namespace_of(gone[0], self.cfg.namespaces))))
        lat: list[float] = []
        missing = 0
        deadline = time.monotonic() + self.cfg.change_timeout
        for group, t0, expected in changes:
            got = pool.wait_watch(group, expected, max(0.0, deadline - time.monotonic()))
            lat.extend(got["times"][i] - t0 for i in expected if got["times"][i] is not None)
            missing += sum(1 for i in expected if got["times"][i] is None)
            pool.disarm(group)
        pool.quiet(0.5, timeout=30)
        cpu = self.stats.cpu_seconds() - cpu0
        window = time.monotonic() - start
        pushes = self._pushes() - pushes0
        counters = pool.counters(reset=True)
        for _, name, _ in live:  # leave the mesh as it was
            self._remove(name)
        pool.quiet(1.5, timeout=30)
        pool.counters(reset=True)
        return {
            "rate_per_s": rate, "changes": len(changes), "convergence_s": percentiles(lat), "missing": missing,
            "server_cpu_s": cpu, "server_cpu_per_change_s": cpu / len(changes),
            # Changes close together share a push (debounce; a push still running): per push is
            # what one round of translation and fan-out costs.
            "pushes": pushes, "server_cpu_per_push_s": cpu / pushes if pushes else None,
            "server_cpu_net_per_push_s": (cpu - self.idle_cpu_per_s * window) / pushes if pushes else None,
            "responses": sum(c["responses"] for c in counters.values()),
            "bytes": sum(c["bytes"] for c in counters.values()),
        }

    def new_service(self) -> dict[str, Any]:
        """A new HTTP Service (with 3 pods) in ns-00: importers get its cluster, endpoints and route."""
        self.seq += 1
        cfg = self.cfg
        i = cfg.services + self.seq * cfg.namespaces  # lands in ns-00, never collides with the mesh
        ns = mesh.namespace_of(i, cfg.namespaces)
        docs = [mesh.service_doc(i, cfg.namespaces)]
        ips = []
        for k in range(mesh.PODS_PER_SERVICE):
            ip = mesh.churn_ip(100_000 + self.seq * 10 + k)
            ips.append(ip)
            docs.append(mesh.pod_doc(f"{mesh.service_name(i)}-{k}", ns, mesh.service_name(i), ip, 8080))
        name = f"new-{mesh.service_name(i)}.yaml"
        watches = [
            {"type": CDS, "name": mesh.cluster_name(i, cfg.namespaces), "kind": "present"},
            {"type": EDS, "name": mesh.cluster_name(i, cfg.namespaces), "kind": "contains", "data": ips[0]},
            {"type": RDS, "name": "80", "kind": "contains", "data": mesh.hostname(i, cfg.namespaces)},
        ]
        importers = self.importers(ns)
        out = self._change(f"new-{self.seq}", watches, importers, lambda: self._write(name, "---\n".join(docs)))
        gone = [{"type": CDS, "name": mesh.cluster_name(i, cfg.namespaces), "kind": "absent"}]
        out["removed"] = self._change(f"gone-{self.seq}", gone, importers, lambda: self._remove(name))
        return out

    def virtual_service_change(self, service: int = 0) -> dict[str, Any]:
        """One VirtualService's HTTP route changes (a request header value): the proxies importing
        its host ACK the new route "80"; nobody else hears a thing (others' responses are counted)."""
        self.seq += 1
        cfg = self.cfg
        ns = mesh.namespace_of(service, cfg.namespaces)
        marker = f"bench-{self.seq}"
        watch = [{"type": RDS, "name": str(mesh.service_port(service)[1]), "kind": "contains", "data": marker}]
        doc = mesh.virtual_service_doc(service, cfg.namespaces, marker)
        out = self._change(f"vs-{self.seq}", watch, self.importers(ns),
                           lambda: self._write(f"vs-{mesh.service_name(service)}.yaml", doc))
        return out

    def sidecar_change(self) -> dict[str, Any]:
        """A Sidecar change in ns-01: only its proxies change (lose / gain the clusters of ns-00)."""
        cfg = self.cfg
        ns = mesh.namespace_of(1, cfg.namespaces)
        target = [i for i, p in enumerate(self.identities) if p.namespace == ns]
        cluster = mesh.cluster_name(0, cfg.namespaces)  # svc-0000 lives in ns-00
        name = f"sidecar-{ns}.yaml"
        present = [{"type": CDS, "name": cluster, "kind": "present"}]
        absent = [{"type": CDS, "name": cluster, "kind": "absent"}]
        if cfg.sidecars:  # widen: ./* -> ./* + ns-00/*, then back
            doc = mesh.sidecar_doc(ns, ("./*", f"{mesh.namespace_of(0, cfg.namespaces)}/*"))
            out = self._change("sidecar", present, target, lambda: self._write(name, doc))
            out["undone"] = self._change("sidecar-undo", absent, target,
                                         lambda: self._write(name, mesh.sidecar_doc(ns)))
        else:  # narrow: no Sidecar -> ./*, then back
            out = self._change("sidecar", absent, target, lambda: self._write(name, mesh.sidecar_doc(ns)))
            out["undone"] = self._change("sidecar-undo", present, target, lambda: self._remove(name))
        return out


def _sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def pooled(changes: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one change as one result: percentiles over every (change, proxy) sample,
    counts and CPU per change (the mean), misses and stray responses summed, each change's p99."""
    n = len(changes)
    out = dict(changes[-1])
    out["convergence_s"] = percentiles([v for c in changes for v in c["latencies_s"]])
    out["latencies_s"] = [v for c in changes for v in c["latencies_s"]]
    out["rounds"] = n
    out["round_p99_s"] = [c["convergence_s"]["p99"] for c in changes]
    for key in ("missing", "others_with_responses"):
        out[key] = sum(c[key] for c in changes)
    for key in ("responses", "resources", "bytes", "server_cpu_s", "server_cpu_net_s", "window_s", "loadgen_cpu_s"):
        out[key] = sum(c[key] for c in changes) / n
    out["server_cpu_per_process_s"] = [sum(v) / n for v in zip(*(c["server_cpu_per_process_s"] for c in changes),
                                                               strict=True)]
    return out


def run_config(cfg: Config, workdir: str, *, churn_rate: float = 5.0, churn_seconds: float = 5.0,
               idle_seconds: float = 5.0,
               scenarios: tuple[str, ...] = ("cold", "pod", "new-service", "sidecar", "churn"),
               pod_rounds: int = 1, log: Any = print) -> dict[str, Any]:
    bench = Bench(cfg, workdir)
    res = bench.results
    res["config"] = {"proxies": cfg.proxies, "services": cfg.services, "sidecars": cfg.sidecars, "rules": cfg.rules,
                     "sotw": cfg.sotw, "namespaces": cfg.namespaces, "label": cfg.label,
                     "server_args": list(cfg.server_args), "client_args": list(cfg.client_args)}
    try:
        bench.setup()
        cold = bench.cold_start()
        log(f"  cold start: all {cfg.proxies - cold['incomplete']}/{cfg.proxies} complete, "
            f"max {cold['complete_s']['max']:.2f}s, server cpu {cold['server_cpu_s']:.1f}s, "
            f"rss {cold['rss_after_mb']:.0f} MB (peak {cold['peak_rss_mb']:.0f}), errors {cold['stream_errors']}, "
            f"load generator cpu {cold['loadgen_cpu_s']:.1f}s, send bound peak {cold['send_peak_mb']:.0f} MB "
            f"with {cold['send_waits']:.0f} waits")
        if set(scenarios) - {"cold"}:
            log(f"  idle: {1000 * bench.measure_idle(idle_seconds):.1f} ms of server CPU per second")
        if "pod" in scenarios:
            adds, removes = [], []
            for _ in range(max(1, pod_rounds)):
                add = bench.pod_add(0)
                adds.append(add)
                removes.append(bench.pod_remove(0, add))
            res["pod_add"] = add = pooled(adds)
            res["pod_remove"] = rm = pooled(removes)
            conv = add["convergence_s"]
            log(f"  pod add x{len(adds)}: p99 {_ms(conv['p99'])} max {_ms(conv['max'])} "
                f"(per change p99 {', '.join(_ms(v) for v in add['round_p99_s'])}), "
                f"{add['responses']:.0f} responses, missing {add['missing']}, "
                f"non-importers with responses {add['others_with_responses']}, cpu {add['server_cpu_s']:.2f}s")
            log(f"  pod remove x{len(removes)}: p99 {_ms(rm['convergence_s']['p99'])} "
                f"max {_ms(rm['convergence_s']['max'])}")
        if "vs" in scenarios and cfg.rules:
            service = mesh.rule_services(cfg.services, cfg.rules)[0]
            res["vs_change"] = vs = pooled([bench.virtual_service_change(service) for _ in range(max(1, pod_rounds))])
            conv = vs["convergence_s"]
            per_type = ", ".join(f"{t}: {c['responses']}" for t, c in sorted(vs["by_type"].items()))
            log(f"  VirtualService change x{vs['rounds']}: p99 {_ms(conv['p99'])} max {_ms(conv['max'])} "
                f"(per change p99 {', '.join(_ms(v) for v in vs['round_p99_s'])}), importers {vs['expected']}, "
                f"missing {vs['missing']}, non-importers with responses {vs['others_with_responses']} "
                f"of {vs['others']}, {vs['responses']:.0f} responses "
                f"({per_type}), "
                f"cpu {vs['server_cpu_s']:.2f}s")
        if "new-service" in scenarios:
            ns = bench.new_service()
            res["new_service"] = ns
            log(f"  new service: p99 {_ms(ns['convergence_s']['p99'])} max {_ms(ns['convergence_s']['max'])}, "
                f"cpu {ns['server_cpu_s']:.2f}s")
        if "sidecar" in scenarios:
            sc = bench.sidecar_change()
            res["sidecar_change"] = sc
            log(f"  sidecar change: p99 {_ms(sc['convergence_s']['p99'])} max {_ms(sc['convergence_s']['max'])}, "
                f"others with responses {sc['others_with_responses']}, cpu {sc['server_cpu_s']:.2f}s")
        if "churn" in scenarios:
            ch = bench.churn(churn_rate, churn_seconds)
            res["churn"] = ch
            log(f"  churn {churn_rate}/s: p99 {_ms(ch['convergence_s']['p99'])} "
                f"max {_ms(ch['convergence_s']['max'])}, cpu/change {ch['server_cpu_per_change_s']:.3f}s, "
                f"{ch['pushes']} pushes, cpu/push {ch['server_cpu_per_push_s'] or 0:.3f}s")
        res["rss_end_mb"] = bench.stats.rss() / MB
    finally:
        bench.teardown()
    return res


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}ms"
