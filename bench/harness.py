"""Processes the scenarios drive: the server under test and the load generator(s).

The server runs as `python -m xds_server serve` pinned to one CPU; its CPU seconds and memory
are read from /proc (utime+stime of every thread, VmRSS, VmHWM, which can be reset through
/proc/PID/clear_refs). Load generators run pinned to the other CPU and are driven with JSON
lines (see loadgen.py); a pool splits the proxies over several processes and merges replies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


class ProcStats:
    """CPU seconds and memory of a running process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._threads: frozenset[str] = frozenset()
        self._base = (0.0, 0.0)  # (tick-counted seconds, summed thread runtimes) when the threads were last seen

    def _ticks(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (all threads, exited ones too)

    def cpu_seconds(self) -> float:
        """CPU seconds of the process, to the nanosecond while its threads stay the same.

        /proc/PID/stat counts in clock ticks (10 ms): a push of 100 streams costs a few ticks, so
        single figures were mostly rounding. Each thread's schedstat has its runtime in ns; summed
        over the threads, differences between calls are exact as long as no thread came or went
        (an exited thread's time is only in the tick counts): then the tick count is the new base.
        """
        task_dir = f"/proc/{self.pid}/task"
        try:
            threads = frozenset(os.listdir(task_dir))
            total = 0
            for tid in threads:
                with open(f"{task_dir}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return self._ticks()
        runtime = total / 1e9
        if threads != self._threads:
            self._threads = threads
            self._base = (self._ticks(), runtime)
        return self._base[0] + runtime - self._base[1]

    def _status(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def reset_peak(self) -> None:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")


class TreeStats:
    """ProcStats of a process and its children (`serve --workers N`: the supervisor and N workers).

    Sums CPU and memory over them; `per_process_cpu()` gives each one's CPU seconds. Children are
    looked up once, when first asked (after the server is ready, so every worker is there).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._procs: list[ProcStats] | None = None

    @property
    def procs(self) -> list[ProcStats]:
        if self._procs is None:
            pids = [self.pid]
            try:
                with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                    pids += [int(p) for p in f.read().split()]
            except OSError:
                pass
            self._procs = [ProcStats(p) for p in pids]
        return self._procs

    def cpu_seconds(self) -> float:
        return sum(p.cpu_seconds() for p in self.procs)

    def per_process_cpu(self) -> list[float]:
        """CPU seconds of the process itself, then of each child (each worker)."""
        return [p.cpu_seconds() for p in self.procs]

    def rss(self) -> int:
        return sum(p.rss() for p in self.procs)

    def peak_rss(self) -> int:
        return sum(p.peak_rss() for p in self.procs)

    def reset_peak(self) -> None:
        for p in self.procs:
            p.reset_peak()


class ServerProcess:
    """`xds-server serve --config-dir DIR` on its own CPU, logging to a file."""

    def __init__(self, config_dir: str, workdir: str, *, cpu: int | None = 0, xds_address: str = "",
                 extra: tuple[str, ...] = ()) -> None:
        self.config_dir = config_dir
        self.workdir = workdir
        self.cpu = cpu
        self.xds_port = free_port()
        self.xds_address = xds_address or f"127.0.0.1:{self.xds_port}"
        self.admin_port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.stats: TreeStats | None = None
        self.log_path = os.path.join(workdir, "server.log")

    @property
    def target(self) -> str:
        return self.xds_address

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "xds_server", "serve", "--config-dir", self.config_dir,
               "--xds-address", self.xds_address, "--admin-address", f"127.0.0.1:{self.admin_port}",
               "--drain-seconds", "0", *self.extra]
        if self.cpu is not None and cpu_count() > 1:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        return cmd

    def start(self, timeout: float = 120.0) -> ServerProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.command(), cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.stats = TreeStats(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            if self.get("/readyz")[0] == 200:
                return self
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s; see {self.log_path}")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric's samples (all label sets)."""
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if hasattr(self, "_log"):
            self._log.close()


class LoadGenPool:
    """Several load generator processes over one list of proxies; replies are merged per stream."""

    def __init__(self, target: str, proxies_file: str, count: int, *, procs: int = 1, sotw: bool = False,
                 cpu: int | None = 1, log: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[str]] = []
        self.ranges: list[tuple[int, int]] = []
        per = -(-count // procs)
        for first in range(0, count, per):
            n = min(per, count - first)
            cmd = [sys.executable, "-m", "bench.loadgen", "--target", target, "--proxies", proxies_file,
                   "--first", str(first), "--count", str(n)]
            if sotw:
                cmd.append("--sotw")
            if log:
                cmd.append("--log")
            cmd.extend(extra)
            if cpu is not None and cpu_count() > 1:
                cmd += ["--cpu", str(cpu)]
            self.procs.append(subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                               text=True, bufsize=1))
            self.ranges.append((first, n))
        self.stats = [ProcStats(p.pid) for p in self.procs]

    def _all(self, msg: dict[str, Any]) -> list[dict[str, Any]]:
        line = json.dumps(msg) + "\n"
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(line)
            p.stdin.flush()
        out = []
        for p in self.procs:
            assert p.stdout is not None
            reply = p.stdout.readline()
            if not reply:
                raise RuntimeError(f"load generator exited ({p.poll()})")
            out.append(json.loads(reply))
        return out

    def _concat(self, replies: list[dict[str, Any]], key: str) -> list[Any]:
        return [x for r in replies for x in r[key]]

    def start(self) -> None:
        self._all({"cmd": "start"})

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        replies = self._all({"cmd": "wait_ready", "timeout": timeout})
        return {"complete": self._concat(replies, "complete"), "errors": sum(r["errors"] for r in replies),
                "error_samples": self._concat(replies, "error_samples")}

    def arm(self, group: str, watches: list[dict[str, Any]]) -> None:
        self._all({"cmd": "arm", "group": group, "watches": watches})

    def disarm(self, group: str) -> None:
        self._all({"cmd": "disarm", "group": group})

    def wait_watch(self, group: str, streams: list[int], timeout: float) -> dict[str, list[Any]]:
        """streams: global indices; every process waits for its own share."""
        msgs = []
        for first, n in self.ranges:
            local = [i - first for i in streams if first <= i < first + n]
            msgs.append({"cmd": "wait_watch", "group": group, "streams": local, "timeout": timeout})
        replies = []
        for p, msg in zip(self.procs, msgs, strict=True):
            assert p.stdin is not None
            p.stdin.write(json.dumps(msg) + "\n")
            p.stdin.flush()
        for p in self.procs:
            assert p.stdout is not None
            replies.append(json.loads(p.stdout.readline()))
        return {"times": self._concat(replies, "times"), "responses": self._concat(replies, "responses")}

    def counters(self, reset: bool = True) -> dict[str, dict[str, int]]:
        total: dict[str, dict[str, int]] = {}
        for r in self._all({"cmd": "counters", "reset": reset}):
            for t, c in r.items():
                agg = total.setdefault(t, {})
                for k, v in c.items():
                    agg[k] = agg.get(k, 0) + v
        return total

    def quiet(self, seconds: float, timeout: float = 30.0) -> bool:
        return all(r["quiet"] for r in self._all({"cmd": "quiet", "seconds": seconds, "timeout": timeout}))

    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds() for s in self.stats)

    def stop(self) -> None:
        try:
            self._all({"cmd": "stop"})
        except (OSError, RuntimeError, ValueError):
            pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
