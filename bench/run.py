"""Run the scenarios over a grid of mesh sizes and print the tables (and write JSON).

    python -m bench.run --quick              # routine check, under 2 minutes
    python -m bench.run                      # N in {100, 500, 2000} x M in {100, 1000}, + Sidecar and SotW runs
    python -m bench.run --proxies 2000 --services 1000 [--sidecars] [--sotw] [--only cold,pod]
    python -m bench.run --proxies 2000 --services 1000 --sidecars --rules 100 --only cold,pod,vs
    python -m bench.run --proxies 2000 --services 1000 --only cold,pod --clients fast,slow   # side by side

One server process (CPU 0) per configuration, load generators on CPU 1. Numbers are printed as
they come and the tables at the end; `--json FILE` keeps everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from typing import Any

from bench.scenarios import Config, run_config

ALL_SCENARIOS = ("cold", "pod", "vs", "new-service", "sidecar", "churn")  # vs: only with --rules


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else (f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s")


def _mb(b: float) -> str:
    return f"{b / 1024 / 1024:.1f}"


def _quad(p: dict[str, Any] | None) -> str:
    if not p or not p.get("n"):
        return "-"
    return " / ".join(_fmt_s(p[k]) for k in ("p50", "p90", "p99", "max"))


def tables(results: list[dict[str, Any]]) -> str:
    out = []
    out.append("Cold start (all N proxies connect at once; complete = CDS, EDS, LDS, RDS all ACKed)\n")
    out.append("| config | complete p50 / p90 / p99 / max | server CPU s | load generator CPU s | responses "
               "| resources | MB sent | RSS before -> after MB | peak RSS MB | KB / proxy | stream errors |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        c = r.get("cold_start")
        if not c:
            continue
        out.append(f"| {r['config']['label']} | {_quad(c['complete_s'])} | {c['server_cpu_s']:.1f} "
                   f"| {c.get('loadgen_cpu_s', 0):.1f} | {c['responses']} "
                   f"| {c['resources']} | {_mb(c['bytes'])} | {c['rss_before_mb']:.0f} -> {c['rss_after_mb']:.0f} "
                   f"| {c['peak_rss_mb']:.0f} | {c['per_proxy_kb']:.1f} | {c['stream_errors']} |")
    out.append("")
    out.append("Changes (convergence = file written -> last importing proxy ACKed the new state; a change run "
               "several times (xN): percentiles over every (change, proxy) sample, counts and CPU per change)\n")
    out.append("| config | scenario | p50 / p90 / p99 / max | importers (missing) | others that got a response "
               "| responses | resources | MB sent | server CPU s (net of idle) |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for key, sub, title in (("pod_add", "", "pod added"), ("pod_remove", "", "pod removed"),
                                ("vs_change", "", "VirtualService HTTP route changed"),
                                ("new_service", "", "new service"), ("new_service", "removed", "service removed"),
                                ("sidecar_change", "", "Sidecar change (ns-01)"),
                                ("sidecar_change", "undone", "Sidecar change undone")):
            c = r.get(key)
            if c and sub:
                c = c.get(sub)
            if not c:
                continue
            rounds = f" (x{c['rounds']})" if c.get("rounds", 1) > 1 else ""
            out.append(f"| {r['config']['label']} | {title}{rounds} | {_quad(c['convergence_s'])} | {c['expected']} "
                       f"({c['missing']}) | {c['others_with_responses']} of {c['others']} | {c['responses']:.0f} "
                       f"| {c['resources']:.0f} | {_mb(c['bytes'])} | {c['server_cpu_s']:.3f} "
                       f"({c.get('server_cpu_net_s', 0):.3f}) |")
        ch = r.get("churn")
        if ch:
            per_push = (f", {ch['server_cpu_per_push_s']:.3f}/push ({ch['server_cpu_net_per_push_s']:.3f} net of "
                        f"idle) over {ch['pushes']} pushes" if ch.get("server_cpu_per_push_s") else "")
            out.append(f"| {r['config']['label']} | churn {ch['rate_per_s']:g} pods/s x {ch['changes']} "
                       f"| {_quad(ch['convergence_s'])} | ({ch['missing']}) | - | {ch['responses']} | - "
                       f"| {_mb(ch['bytes'])} | {ch['server_cpu_s']:.2f} "
                       f"({ch['server_cpu_per_change_s']:.3f}/change{per_push}) |")
    peaks = [f"{r['config']['label']}: {r['server_peak_rss_mb']:.0f} MB" for r in results if "server_peak_rss_mb" in r]
    if peaks:
        out.append("Server peak RSS over the whole run (cold start and every change): " + "; ".join(peaks))
        out.append("")
    per_worker = [f"{r['config']['label']}: supervisor {p[0]:.3f} s, workers "
                  + ", ".join(f"{v:.3f}" for v in p[1:]) + " s"
                  for r in results if len(p := r.get("pod_add", {}).get("server_cpu_per_process_s", [])) > 1]
    if per_worker:
        out.append("Server CPU per pod added, by process (serve --workers): " + "; ".join(per_worker))
        out.append("")
    idle = [f"{r['config']['label']}: {1000 * r['idle_cpu_per_s']:.1f} ms/s" for r in results if "idle_cpu_per_s" in r]
    if idle:
        out.append("Idle load (server CPU per second, all proxies connected, nothing changing): " + "; ".join(idle))
        out.append("")
    grid = {(r["config"]["proxies"], r["config"]["services"]): r for r in results
            if not r["config"]["sidecars"] and not r["config"]["sotw"] and r.get("cold_start")}
    ns = sorted({k[0] for k in grid})
    ms = sorted({k[1] for k in grid})
    if len(ns) > 1 or len(ms) > 1:
        out.append("Growth (delta, no Sidecars): cold start max / server CPU s / RSS after MB / pod-add p99 "
                   "/ pod-add CPU s\n")
        out.append("| N \\ M | " + " | ".join(f"M={m}" for m in ms) + " |")
        out.append("|---|" + "---|" * len(ms))
        for n in ns:
            cells = []
            for m in ms:
                r = grid.get((n, m))
                if r is None:
                    cells.append("-")
                    continue
                c, p = r["cold_start"], r.get("pod_add", {})
                cells.append(f"{_fmt_s(c['complete_s']['max'])} / {c['server_cpu_s']:.1f} / {c['rss_after_mb']:.0f} / "
                             f"{_fmt_s(p.get('convergence_s', {}).get('p99'))} / {p.get('server_cpu_s', 0):.2f}")
            out.append(f"| N={n} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def client_modes(args: argparse.Namespace) -> list[tuple[str, ...]]:
    """Load generator flags per client mode asked for (--clients fast,slow runs each config twice)."""
    modes = []
    for mode in args.clients.split(","):
        if mode == "fast":
            modes.append(())
        elif mode == "slow":
            modes.append(("--slow", "--window", str(args.client_window), "--delay-ms", str(args.client_delay_ms)))
        else:
            raise SystemExit(f"--clients: unknown mode {mode!r} (fast, slow)")
    return modes


def grid(args: argparse.Namespace) -> list[Config]:
    return [replace(cfg, client_args=mode) for cfg in _grid(args) for mode in client_modes(args)]


def _grid(args: argparse.Namespace) -> list[Config]:
    extra = tuple(args.server_arg) + (("--workers", str(args.workers)) if args.workers > 1 else ())
    if args.quick:
        return [Config(p, s, server_args=extra, procs=args.procs) for p in (50, 100) for s in (50, 100)] + [
            Config(100, 100, sidecars=True, server_args=extra, procs=args.procs),
            Config(100, 100, sotw=True, server_args=extra, procs=args.procs),
        ]
    if args.proxies or args.services:
        return [Config(p, s, sidecars=args.sidecars, sotw=args.sotw, rules=args.rules, server_args=extra,
                       procs=args.procs)
                for p in (args.proxies or [100]) for s in (args.services or [100])]
    out = [Config(p, s, server_args=extra, procs=args.procs) for s in (100, 1000) for p in (100, 500, 2000)]
    out.append(Config(2000, 1000, sidecars=True, server_args=extra, procs=args.procs))
    out.append(Config(2000, 1000, sotw=True, server_args=extra, procs=args.procs))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small grid, short churn: under 2 minutes")
    p.add_argument("--proxies", type=int, action="append", default=[], help="N (repeatable)")
    p.add_argument("--services", type=int, action="append", default=[], help="M (repeatable)")
    p.add_argument("--sidecars", action="store_true", help="a ./* Sidecar in every namespace")
    p.add_argument("--sotw", action="store_true", help="state-of-the-world streams instead of delta")
    p.add_argument("--rules", type=int, default=0,
                   help="VirtualServices and DestinationRules in the mesh (as many of each; enables `vs`)")
    p.add_argument("--procs", type=int, default=1, help="load generator processes (all on CPU 1)")
    p.add_argument("--only", default=",".join(ALL_SCENARIOS), help="scenarios: " + ",".join(ALL_SCENARIOS))
    p.add_argument("--pod-rounds", type=int, default=None,
                   help="pod add/remove pairs per configuration, pooled (default 5; 2 with --quick)")
    p.add_argument("--churn-rate", type=float, default=5.0, help="pods per second")
    p.add_argument("--churn-seconds", type=float, default=None)
    p.add_argument("--server-arg", action="append", default=[], help="extra `xds-server serve` flag (repeatable)")
    p.add_argument("--workers", type=int, default=1,
                   help="serve --workers N (all pinned to CPU 0 with the rest of the server; CPU is reported "
                        "per process)")
    p.add_argument("--clients", default="fast",
                   help="client modes, each config run once per mode: fast (Envoy at its fastest), slow (decode "
                        "everything, small HTTP/2 windows; bench/loadgen.py), or fast,slow")
    p.add_argument("--client-window", type=int, default=64 * 1024, help="slow clients' HTTP/2 window in bytes")
    p.add_argument("--client-delay-ms", type=float, default=0.0, help="slow clients' pause per message")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--workdir", help="where meshes and logs go (default: a temp dir)")
    args = p.parse_args()
    scenarios = tuple(s for s in args.only.split(",") if s)
    churn_seconds = args.churn_seconds if args.churn_seconds is not None else (2.0 if args.quick else 10.0)
    pod_rounds = args.pod_rounds if args.pod_rounds is not None else (2 if args.quick else 5)
    workdir = args.workdir or tempfile.mkdtemp(prefix="xds-bench-")
    print(f"# xds-server bench ({platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()})")
    print(f"# command: {' '.join(['python -m bench.run', *sys.argv[1:]])}")
    print(f"# workdir: {workdir}")
    started = time.monotonic()
    results = []
    for i, cfg in enumerate(grid(args)):
        print(f"\n## {cfg.label}", flush=True)
        t = time.monotonic()
        res = run_config(cfg, os.path.join(workdir, f"run-{i}"), churn_rate=args.churn_rate,
                         churn_seconds=churn_seconds, scenarios=scenarios, pod_rounds=pod_rounds,
                         idle_seconds=2.0 if args.quick else 5.0, log=lambda s: print(s, flush=True))
        res["wall_s"] = time.monotonic() - t
        results.append(res)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    print()
    print(tables(results))
    print(f"total {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
