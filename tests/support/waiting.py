"""Polling until something holds, for tests that watch threads and processes."""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT = 15.0


def wait_until(
    predicate: Callable[[], object],
    timeout: float = WAIT,
    what: str | Callable[[], str] = "",
    interval: float = 0.05,
) -> bool:
    """Poll `predicate` until it is true; True then (so `assert wait_until(...)` reads as
    the check it is), AssertionError after `timeout` seconds. `what` names what was
    awaited in that error (a callable: called then, to show the state at the time)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said or predicate}")
        time.sleep(interval)
