"""Network namespaces and the processes inside them, driven through `ip` (iproute2).

Everything here shells out: `ip netns exec` is how Istio-like pods are entered, and keeping the
test process itself in the root namespace means a crash can never leave it stranded elsewhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NETNS_ETC = Path("/etc/netns")


class CommandError(RuntimeError):
    pass


def sh(*argv: str, timeout: float = 20.0, check: bool = True, stdin: str | None = None) -> str:
    """Run a short command, return stdout; raise with stderr on failure."""
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)} -> {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def list_netns() -> list[str]:
    out = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(name: str) -> list[int]:
    out = sh("ip", "netns", "pids", name, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_pids(pids: Sequence[int], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_exists(p) for p in alive):
            time.sleep(0.02)  # reaping is asynchronous; poll the pid table
        pids = [p for p in alive if _exists(p)]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists" until reaped: reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def destroy_netns(name: str) -> None:
    """Kill every process in the namespace, then delete it and its /etc/netns files."""
    kill_pids(netns_pids(name))
    sh("ip", "netns", "delete", name, check=False)
    etc = NETNS_ETC / name
    if etc.is_dir():
        for f in etc.iterdir():
            f.unlink(missing_ok=True)
        etc.rmdir()


@dataclass
class Proc:
    """A long-running process inside a namespace, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        if self.popen.stdout:
            self.popen.stdout.close()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Netns:
    """One network namespace; `workdir` holds its logs and files readable by every uid."""

    name: str
    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    @classmethod
    def create(cls, name: str, workdir: Path, resolv_conf: str | None = None) -> Netns:
        # /etc/netns/NAME/resolv.conf is bind-mounted by `ip netns exec`, so it must exist first.
        if resolv_conf is not None:
            (NETNS_ETC / name).mkdir(parents=True, exist_ok=True)
            (NETNS_ETC / name / "resolv.conf").write_text(resolv_conf)
        sh("ip", "netns", "add", name)
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o755)
        ns = cls(name, workdir)
        ns.ip("link", "set", "lo", "up")
        return ns

    def ip(self, *args: str) -> str:
        return sh("ip", "-n", self.name, *args)

    def exec(self, *argv: str, timeout: float = 20.0, check: bool = True, stdin: str | None = None) -> str:
        return sh("ip", "netns", "exec", self.name, *argv, timeout=timeout, check=check, stdin=stdin)

    def sysctl(self, key: str, value: str | int) -> None:
        self.exec("sysctl", "-qw", f"{key}={value}")

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        uid: int | None = None,
        ready_line: str | None = None,
        timeout: float = 10.0,
    ) -> Proc:
        """Start `argv` in the namespace (as `uid` if given); its stdout+stderr go to a log file.

        With `ready_line`, stdout is a pipe and we block (bounded) until the process prints that
        line, which is how the tiny apps say "listening" without anyone polling ports.
        """
        prefix = ["ip", "netns", "exec", self.name]
        if uid is not None:
            # setpriv execs in place, so the Popen pid is the real process.
            prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        log = self.workdir / f"{name}.log"
        logf = log.open("ab")
        popen = subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if ready_line else logf,
            stderr=logf,
            start_new_session=True,  # Ctrl-C in the terminal reaches pytest, which stops us in order
        )
        logf.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        if ready_line:
            _await_line(proc, ready_line, timeout)
        return proc

    def destroy(self) -> None:
        for proc in reversed(self.procs):
            try:
                proc.stop()
            except Exception:
                pass
        self.procs.clear()
        destroy_netns(self.name)


def _await_line(proc: Proc, line: str, timeout: float) -> None:
    import selectors

    assert proc.popen.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.popen.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while line.encode() not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                raise CommandError(f"{proc.name}: no {line!r} within {timeout}s; log:\n{proc.log_tail()}")
            chunk = os.read(proc.popen.stdout.fileno(), 4096)
            if not chunk:
                raise CommandError(f"{proc.name} exited ({proc.popen.wait()}); log:\n{proc.log_tail()}")
            buf += chunk
    finally:
        sel.close()


__all__ = ["CommandError", "Netns", "Proc", "destroy_netns", "list_netns", "netns_pids", "sh"]
