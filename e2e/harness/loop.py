"""A background request loop inside a pod: proves "nothing failed meanwhile" during config changes.

One process (netclient.py loop) sends HTTP requests one after another, each on a fresh connection,
and appends one JSON line per request to a file; tests read the file while it runs and after stop().
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from e2e.harness import apps
from e2e.harness.netns import Netns, Proc
from e2e.harness.waits import wait_for


@dataclass(frozen=True)
class LoopResult:
    t: float
    status: int | None
    by: str | None  # x-served-by: the pod our http app runs in
    kind: str  # error kind when there was no response


class RequestLoop:
    def __init__(self, ns: Netns, name: str, url: str, *, expect_pod: str | Iterable[str],
                 host: str | None = None, interval: float = 0.05, timeout: float = 2.0) -> None:
        self.url = url
        self.expect = frozenset([expect_pod] if isinstance(expect_pod, str) else expect_pod)
        self.out = ns.workdir / f"loop-{name}.jsonl"
        self.out.unlink(missing_ok=True)
        self.out.touch()
        argv = apps.request_loop_argv(url, self.out, host=host, interval=interval, timeout=timeout)
        self.proc: Proc = ns.spawn(f"loop-{name}", argv, ready_line="READY")

    def results(self) -> list[LoopResult]:
        out = []
        for line in Path(self.out).read_text().splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            out.append(LoopResult(d["t"], d.get("status"), d.get("by"), d.get("kind", "")))
        return out

    def failures(self) -> list[LoopResult]:
        """Requests not answered 200 by (one of) the expected pod(s)."""
        return [r for r in self.results() if r.status != 200 or r.by not in self.expect]

    def wait_more(self, count: int = 3, timeout: float = 10.0) -> None:
        """Wait until `count` more requests completed (the loop really ran across a change)."""
        start = len(self.results())
        wait_for(lambda: len(self.results()) >= start + count, timeout=timeout,
                 what=f"{count} more requests to {self.url}", describe=self.proc.log_tail)

    def stop(self) -> list[LoopResult]:
        self.proc.stop()
        return self.results()
