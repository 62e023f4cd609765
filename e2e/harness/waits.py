"""Polling with a deadline: the only way e2e tests wait for anything (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time; an AssertionError so pytest shows it as a test failure."""


class GiveUp(AssertionError):
    """Raised by a probe when waiting longer cannot help (e.g. the process died): fails at once."""


def wait_for(
    probe: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
    describe: Callable[[], str] | None = None,
) -> T:
    """Call `probe` until it returns something truthy; return that value.

    Exceptions raised by `probe` count as "not yet" (the last one is reported), so a probe may
    simply index into a config dump that is not there yet. The interval backs off to 0.5 s so
    slow conditions do not burn the 2-core machine.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except GiveUp:
            raise
        except Exception as e:  # the probe's own failure is information, not a crash
            value, last = None, e  # type: ignore[assignment]
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            extra = f"; {describe()}" if describe else ""
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r}){extra}")
        time.sleep(interval)  # poll cadence, not synchronisation: the condition decides
        interval = min(interval * 1.5, 0.5)
