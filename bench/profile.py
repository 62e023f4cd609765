"""Profile the server's hot path with py-spy while a scenario runs; print the top costs.

    python -m bench.profile --proxies 2000 --services 1000 --scenario cold
    python -m bench.profile --proxies 2000 --services 1000 --scenario pod --repeat 5

py-spy samples the server process (all threads; C frames of grpc/uvloop with --native) and writes collapsed stacks
(`--out DIR/profile-<scenario>.txt`, loadable in speedscope or flamegraph.pl). The summary lists
functions by self time and by inclusive time, as a share of all samples while the scenario ran.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

from bench.scenarios import Bench, Config


def py_spy() -> str:
    found = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(found):
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    return found


def summarize(path: str, top: int = 25) -> str:
    """Self and inclusive shares per function from py-spy's raw (collapsed) output."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [_short(fr) for fr in stack.split(";")]
            self_time[frames[-1]] += n
            for fr in set(frames):
                inclusive[fr] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self time:"]
    lines += [f"  {100 * n / total:5.1f}%  {fn}" for fn, n in self_time.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"  {100 * n / total:5.1f}%  {fn}" for fn, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """'func (path/to/module.py:123)' -> 'func (module.py)' so lines of one function add up."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = file.split("/")
    file = "/".join(parts[parts.index("xds_server"):]) if "xds_server" in parts else parts[-1]
    return f"{name} ({file})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", type=int, default=2000)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--sidecars", action="store_true")
    p.add_argument("--sotw", action="store_true")
    p.add_argument("--scenario", choices=("cold", "pod", "new-service", "sidecar", "churn"), default="cold")
    p.add_argument("--repeat", type=int, default=3, help="changes to profile (not for cold)")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--native", action="store_true", help="include native (C) frames: grpc, uvloop")
    p.add_argument("--out", default="", help="directory for the collapsed stacks")
    p.add_argument("--server-arg", action="append", default=[])
    a = p.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="xds-profile-")
    os.makedirs(out, exist_ok=True)
    bench = Bench(Config(a.proxies, a.services, sidecars=a.sidecars, sotw=a.sotw,
                         server_args=tuple(a.server_arg)), os.path.join(out, "work"))
    stacks = os.path.join(out, f"profile-{a.scenario}.txt")
    spy: subprocess.Popen[bytes] | None = None

    def start_spy() -> subprocess.Popen[bytes]:
        assert bench.server is not None and bench.server.proc is not None
        proc = subprocess.Popen([py_spy(), "record", "--pid", str(bench.server.proc.pid), "--format", "raw",
                                 "--rate", str(a.rate), "--output", stacks,
                                 *(["--native"] if a.native else ["--nonblocking"])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attaches
        return proc

    try:
        bench.setup()
        if a.scenario == "cold":
            spy = start_spy()
            res = bench.cold_start()
            print(f"cold start max {res['complete_s']['max']:.2f}s, server cpu {res['server_cpu_s']:.1f}s")
        else:
            bench.cold_start()
            spy = start_spy()
            for _ in range(a.repeat):
                if a.scenario == "pod":
                    add = bench.pod_add(0)
                    print(f"pod add p99 {add['convergence_s']['p99']}, cpu {add['server_cpu_s']:.2f}s")
                    bench.pod_remove(0, add)
                elif a.scenario == "churn":
                    r = bench.churn(5.0, 10.0)
                    print(f"churn p99 {r['convergence_s']['p99']}, cpu/change {r['server_cpu_per_change_s']:.3f}s")
                elif a.scenario == "new-service":
                    r = bench.new_service()
                    print(f"new service p99 {r['convergence_s']['p99']}, cpu {r['server_cpu_s']:.2f}s")
                else:
                    r = bench.sidecar_change()
                    print(f"sidecar change p99 {r['convergence_s']['p99']}, cpu {r['server_cpu_s']:.2f}s")
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        bench.teardown()
    print(f"\ncollapsed stacks: {stacks}\n")
    print(summarize(stacks, a.top))


if __name__ == "__main__":
    main()
