"""Where the server's CPU goes, by thread, idle and per Pod change; and what the load generator spends.

    python -m bench.threads --proxies 2000 --services 1000 [--sidecars] [--rounds 6] [--idle 5]

Reads /proc/PID/task/*/{comm,schedstat,status} of the server before and after each window: CPU
(nanosecond runtimes) and context switches (voluntary + involuntary) per thread group: the event
loop (the main thread), gRPC's event-engine threads (socket I/O, HTTP/2), and the other threads
(gRPC's completion-queue poller, the file watcher's worker, executor threads). Then pod adds one
by one, each with the load generator's CPU beside the server's: a measured convergence is bounded
by both processes, and this shows which one moved.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bench.scenarios import Bench, Config

Sample = dict[str, tuple[str, int, int]]  # tid -> (group, ns of CPU, context switches)


def sample(pid: int) -> Sample:
    out: Sample = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                comm = f.read().strip()
            with open(f"{base}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"{base}/status") as f:
                switches = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        group = "loop" if tid == str(pid) else "grpc-event-engine" if comm == "event_engine" else "other"
        out[tid] = (group, ns, switches)
    return out


def by_group(before: Sample, after: Sample) -> dict[str, tuple[float, int]]:
    """group -> (CPU ms, context switches) between two samples."""
    out: dict[str, tuple[float, int]] = {}
    for tid, (group, ns, switches) in after.items():
        ns0, sw0 = before[tid][1:] if tid in before else (0, 0)
        ms, sw = out.get(group, (0.0, 0))
        out[group] = (ms + (ns - ns0) / 1e6, sw + switches - sw0)
    return out


def show(groups: dict[str, tuple[float, int]], per: float = 1.0, unit: str = "") -> str:
    total = sum(ms for ms, _ in groups.values())
    parts = [f"{g} {ms / per:.1f} ms{unit} / {sw / per:.0f} switches{unit}" for g, (ms, sw) in sorted(groups.items())]
    return f"total {total / per:.1f} ms{unit}: " + ", ".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", type=int, default=2000)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--sidecars", action="store_true")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle to sample")
    a = p.parse_args()
    bench = Bench(Config(a.proxies, a.services, sidecars=a.sidecars), tempfile.mkdtemp(prefix="xds-threads-"))
    try:
        bench.setup()
        bench.cold_start()
        assert bench.server is not None and bench.server.proc is not None
        pid = bench.server.proc.pid
        bench.measure_idle()
        before = sample(pid)
        time.sleep(a.idle)
        print(f"{bench.cfg.label}, idle: {show(by_group(before, sample(pid)), a.idle, '/s')}")
        for r in range(a.rounds):
            before = sample(pid)
            add = bench.pod_add(0)
            groups = by_group(before, sample(pid))
            lat = sorted(add["latencies_s"])
            print(f"pod add {r}: p50 {1000 * lat[len(lat) // 2]:.0f} ms, max {1000 * lat[-1]:.0f} ms; "
                  f"load generator {1000 * add['loadgen_cpu_s']:.0f} ms; server {show(groups)}")
            bench.pod_remove(0, add)
    finally:
        bench.teardown()


if __name__ == "__main__":
    main()
