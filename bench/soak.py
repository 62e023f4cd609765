"""Soak: steady endpoint churn against one server for a long time; is anything growing?

Reuses the bench (bench/scenarios.py): a generated mesh served by `xds-server serve --config-dir`
(CPU 0) and N Envoy-like delta streams from the load generator (CPU 1). Then, for `--minutes`,
pods are added to and removed from Services at `--churn-rate` per second, in windows of
`--window` seconds (each window leaves the mesh as it found it). After every window it samples
the server: RSS, open file descriptors, asyncio tasks and threads (/metrics), connected streams,
and the churn's convergence and misses.

Verdict: memory flat (no trend: the least-squares slope over the second half under 10 MB/hour,
and no new high: RSS at the end at most 5 % above the highest of the first half; Python keeps
the arenas a busy moment needed, so a level reached under load stays, a leak keeps climbing),
fds, tasks and threads at their first-window level, every stream still connected, and a last change
(with two minutes to spare) reaching every stream. (change, proxy) pairs not seen within a
window's 30 s are reported as late, with the load average beside them: on a shared machine they
follow other work, and a proxy that is behind skips states a newer one replaced (latest wins).

    python -m bench.soak --minutes 30 --streams 500            # the issue's soak (~32 min)
    python -m bench.soak --minutes 3 --streams 200 --json s.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

from bench.scenarios import MB, Bench, Config


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_mb_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / var * 3600


def sample(bench: Bench, started: float) -> dict[str, Any]:
    server = bench.server
    assert server is not None and server.proc is not None
    return {
        "t_s": round(time.monotonic() - started, 1),
        "rss_mb": round(bench.stats.rss() / MB, 1),
        "fds": open_fds(server.proc.pid),
        "tasks": server.metric("xds_server_asyncio_tasks"),
        "threads": server.metric("xds_server_threads"),
        "streams": server.metric("pilot_xds"),
        "refusals": server.metric("xds_server_stream_refusals_total"),
        "stream_errors": server.metric("xds_server_stream_errors_total"),
        "internal_errors": server.metric("pilot_total_xds_internal_errors_total"),
        "cpu_s": round(bench.stats.cpu_seconds(), 1),
        "load1": round(os.getloadavg()[0], 2),  # other work on the machine shows here
    }


def verdict(samples: list[dict[str, Any]], streams: int, late: int, final_missing: int) -> dict[str, Any]:
    warm = samples[1] if len(samples) > 2 else samples[0]  # the first window warms caches and arenas
    last = samples[-1]
    first_half, half = samples[:len(samples) // 2] or samples, samples[len(samples) // 2:]
    slope = slope_mb_per_hour([(s["t_s"], s["rss_mb"]) for s in half])
    first_half_max = max(s["rss_mb"] for s in first_half)
    checks = {
        "memory_flat": slope < 10 and last["rss_mb"] <= first_half_max * 1.05,
        "fds_flat": last["fds"] <= warm["fds"] + 2,
        "tasks_flat": last["tasks"] <= warm["tasks"] + 5,
        "threads_flat": last["threads"] <= warm["threads"],
        "all_streams_connected": all(s["streams"] == streams for s in samples),
        "final_change_reached_every_stream": final_missing == 0,
        "no_internal_errors": last["internal_errors"] == 0,
    }
    # Changes not ACKed within the window's timeout are late, not lost (the final change proves that);
    # they are reported with the load average: on a shared machine they follow other work.
    return {"ok": all(checks.values()), "checks": checks, "late_change_proxy_pairs": late,
            "rss_warm_mb": warm["rss_mb"], "rss_first_half_max_mb": first_half_max, "rss_end_mb": last["rss_mb"],
            "rss_max_mb": max(s["rss_mb"] for s in samples), "rss_slope_second_half_mb_per_h": round(slope, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--services", type=int, default=200)
    p.add_argument("--namespaces", type=int, default=10)
    p.add_argument("--churn-rate", type=float, default=2.0, help="pod adds per second (each later removed)")
    p.add_argument("--window", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--server-arg", action="append", default=[], help="extra `xds-server serve` flag")
    p.add_argument("--workdir")
    p.add_argument("--json", help="write samples and verdict here")
    args = p.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="xds-soak-")
    cfg = Config(args.streams, args.services, namespaces=args.namespaces, server_args=tuple(args.server_arg),
                 change_timeout=30.0)
    print(f"# xds-server soak ({platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()})")
    print(f"# {args.streams} delta streams, {args.services} services, churn {args.churn_rate}/s, "
          f"{args.minutes} min in {args.window:.0f}s windows; workdir {workdir}", flush=True)
    bench = Bench(cfg, workdir)
    samples: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    final_missing = -1
    try:
        bench.setup()
        cold = bench.cold_start()
        print(f"cold start: {args.streams - cold['incomplete']}/{args.streams} complete in "
              f"{cold['complete_s']['max']:.1f}s, rss {cold['rss_after_mb']:.0f} MB", flush=True)
        started = time.monotonic()
        samples.append(sample(bench, started))
        end = started + args.minutes * 60
        print(f"{'t':>7} {'rss MB':>7} {'fds':>5} {'tasks':>6} {'thr':>4} {'streams':>7} {'changes':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'late':>6} {'cpu s':>7} {'load1':>6}", flush=True)
        while time.monotonic() < end:
            window = min(args.window, max(1.0, end - time.monotonic()))
            ch = bench.churn(args.churn_rate, window)
            s = sample(bench, started)
            samples.append(s)
            windows.append({"t_s": s["t_s"], "changes": ch["changes"], "missing": ch["missing"],
                            "convergence_s": ch["convergence_s"], "server_cpu_s": ch["server_cpu_s"]})
            conv = ch["convergence_s"]
            print(f"{s['t_s']:7.0f} {s['rss_mb']:7.1f} {s['fds']:5d} {s['tasks']:6.0f} {s['threads']:4.0f} "
                  f"{s['streams']:7.0f} {ch['changes']:7d} {_ms(conv['p50']):>7} {_ms(conv['p99']):>7} "
                  f"{ch['missing']:6d} {s['cpu_s']:7.1f} {s['load1']:6.2f}", flush=True)
        # Finally one more pod, with time to spare: every stream must get it (nothing was lost).
        bench.cfg.change_timeout = 120.0
        final = bench.pod_add(0)
        final_missing = final["missing"]
        print(f"final change: {final['expected'] - final_missing}/{final['expected']} streams, "
              f"max {_ms(final['convergence_s']['max'])} ms", flush=True)
    finally:
        bench.teardown()
    result = verdict(samples, args.streams, sum(w["missing"] for w in windows), final_missing)
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cold_start": bench.results.get("cold_start"), "samples": samples,
                       "windows": windows, "verdict": result}, f, indent=1)
    return 0 if result["ok"] else 1


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


if __name__ == "__main__":
    sys.exit(main())
