"""One e2e run: a unique name prefix, a lock that marks it alive, and cleanup of dead runs.

Several engineers (and CI) may run the suite on one machine at once. Every namespace this
harness creates is named `xe<4 hex>-...`; the run holds an flock on /run/xds-e2e/<prefix>.lock for
its whole life. At start, namespaces whose prefix has no live lock belong to crashed runs and are
removed (processes killed first), so interrupted runs never accumulate.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from e2e.harness.netns import destroy_netns, list_netns

LOCK_DIR = Path("/run/xds-e2e")
PREFIX_RE = re.compile(r"^(xe[0-9a-f]{4})-")
WORK_GLOB = "xds-e2e-xe*"


def _prefix_alive(prefix: str) -> bool:
    try:
        fd = os.open(LOCK_DIR / f"{prefix}.lock", os.O_RDONLY)  # never create it here
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # another run holds it
    finally:
        os.close(fd)  # closing also drops a lock we may just have taken
    return False


def cleanup_stale() -> list[str]:
    """Remove namespaces, locks and work dirs of runs that are no longer alive."""
    removed: list[str] = []
    verdict: dict[str, bool] = {}
    for name in list_netns():
        m = PREFIX_RE.match(name)
        if not m:
            continue
        prefix = m.group(1)
        if prefix not in verdict:
            verdict[prefix] = _prefix_alive(prefix)
        if not verdict[prefix]:
            destroy_netns(name)
            removed.append(name)
    if LOCK_DIR.is_dir():
        for lock in LOCK_DIR.glob("xe*.lock"):
            if not _prefix_alive(lock.stem):
                lock.unlink(missing_ok=True)
    for work in Path(tempfile.gettempdir()).glob(WORK_GLOB):
        m = re.match(r"xds-e2e-(xe[0-9a-f]{4})", work.name)
        if m and not _prefix_alive(m.group(1)):
            shutil.rmtree(work, ignore_errors=True)
    return removed


class Run:
    """Owns the prefix, the lock and a LIFO list of cleanups that runs at close or at exit."""

    def __init__(self) -> None:
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        cleanup_stale()
        while True:
            prefix = "xe" + secrets.token_hex(2)
            lock = LOCK_DIR / f"{prefix}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            # A concurrent cleanup may have unlinked the file between open and flock.
            same = os.path.exists(lock) and os.stat(lock).st_ino == os.fstat(fd).st_ino
            if same and not any(n.startswith(prefix + "-") for n in list_netns()):
                break
            os.close(fd)
        self.prefix = prefix
        self._lock_fd = fd
        self._lock_path = lock
        self.workdir = Path(tempfile.mkdtemp(prefix=f"xds-e2e-{prefix}-"))
        # mkdtemp makes 0700; uid-1337 Envoys read bootstraps and reach unix sockets below here.
        self.workdir.chmod(0o755)
        self._cleanups: list[Callable[[], None]] = []
        self._closed = False
        self._counter = 0
        atexit.register(self.close)
        self._old_sigterm = signal.getsignal(signal.SIGTERM)
        if self._old_sigterm in (signal.SIG_DFL, None):
            # A plain SIGTERM would skip atexit; turn it into an orderly exit instead.
            signal.signal(signal.SIGTERM, _raise_on_sigterm)

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def next_id(self) -> int:
        self._counter += 1
        return self._counter

    def on_close(self, fn: Callable[[], None]) -> Callable[[], None]:
        self._cleanups.append(fn)
        return fn

    def forget(self, fn: Callable[[], None]) -> None:
        if fn in self._cleanups:
            self._cleanups.remove(fn)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception as e:  # keep cleaning; report at the end
                errors.append(e)
        # Belt and braces: anything with our prefix that a cleanup missed.
        for name in list_netns():
            if name.startswith(self.prefix + "-"):
                destroy_netns(name)
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.close(self._lock_fd)
        self._lock_path.unlink(missing_ok=True)
        if signal.getsignal(signal.SIGTERM) is _raise_on_sigterm:
            signal.signal(signal.SIGTERM, self._old_sigterm or signal.SIG_DFL)
        atexit.unregister(self.close)
        if errors:
            raise errors[0]


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
