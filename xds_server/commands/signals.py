"""SIGTERM and SIGINT as a process's one request to stop.

The first sets the stop event; from then on both are ignored. A process-group signal (systemd's
KillMode=control-group, `kill -- -PGID`, a terminal's Ctrl-C) reaches a `serve --workers`
supervisor and every worker at once, and the supervisor then sends each worker its own SIGTERM:
a worker already stopping must finish its drain, and one whose event loop has already closed
(its handler gone) must not be ended by the signal's default action, exit -15, which the
supervisor would report as a failed worker. The drain is bounded by --drain-seconds anyway, and
SIGKILL still ends it.
"""

from __future__ import annotations

import asyncio
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def first() -> None:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, first)
