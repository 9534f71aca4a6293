"""The gateway's thread supervisor: no thread it owns dies silently.

A process that looks healthy while one of its threads is dead (a bed no longer read,
an outbox no longer sent, alarms no longer ticked) is the worst state a gateway can
be in. So every long-running thread of the gateway runs under a `Supervisor`:

- `spawn(name, target)` runs `target` on a thread; if it raises (anything, even
  `SystemExit`) or returns while the gateway is not stopping, the traceback is logged,
  the death is counted and reported, and `target` runs again on the same thread
  after a backoff (`backoff_min` doubling up to `backoff_max`);
- `watch(name, alive, restart)` covers threads whose loop belongs to someone else
  (paho's network thread, an MLLP listener): a watchdog thread checks `alive()` every
  `interval` seconds and calls `restart()` (same backoff and bounds);
- bounded: more than `max_restarts` deaths of one thread within `window_seconds` and
  it is given up (a crash loop must not spin the CPU): it stays dead, and that is
  reported as a gateway fault until the process restarts.

Reported in the gateway state (the nurse terminal's status line and the status the
hub receives): counters `thread_restarts` (total), `threads_failed` (given up, now
dead) and `thread_deaths_<name>`; an event of kind `fault` ("gateway fault: ...")
for every death. The log line carries the exception type and traceback, never the
thread's data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .state import GatewayState

log = logging.getLogger(__name__)


@dataclass
class _Supervised:
    name: str
    deaths: deque[float] = field(default_factory=deque)  # monotonic times, last window
    total_deaths: int = 0
    failed: bool = False  # given up: too many deaths in the window
    thread: threading.Thread | None = None
    # watched threads only
    alive: Callable[[], bool] | None = None
    restart: Callable[[], None] | None = None
    restart_at: float = 0.0  # a watched thread found dead: when to restart it


class Supervisor:
    def __init__(
        self,
        state: GatewayState,
        stop: threading.Event,
        *,
        max_restarts: int = 5,
        window_seconds: float = 600.0,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        interval: float = 1.0,
    ) -> None:
        self.state = state
        self.stop = stop
        self.max_restarts = max_restarts
        self.window_seconds = window_seconds
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.interval = interval
        self._lock = threading.Lock()
        self._items: dict[str, _Supervised] = {}
        self._watchdog: threading.Thread | None = None
        self.restarts = 0

    # --- spawning ---------------------------------------------------------------------
    def spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        """Run `target` on a daemon thread named `name`, restarted when it dies."""
        with self._lock:
            item = self._items.setdefault(name, _Supervised(name))
            item.failed = False
        t = threading.Thread(target=self._run, args=(item, target), name=name, daemon=True)
        item.thread = t
        t.start()
        return t

    def watch(self, name: str, alive: Callable[[], bool], restart: Callable[[], None]) -> None:
        """Check `alive()` every `interval` s; call `restart()` when it turns False."""
        with self._lock:
            self._items[name] = _Supervised(name, alive=alive, restart=restart)
        self._start_watchdog()

    def unwatch(self, name: str) -> None:
        with self._lock:
            item = self._items.get(name)
            if item is not None and item.alive is not None:
                del self._items[name]

    # --- queries ----------------------------------------------------------------------
    def threads(self) -> dict[str, bool]:
        """Every supervised thread by name: alive (True) or dead."""
        with self._lock:
            items = list(self._items.values())
        out: dict[str, bool] = {}
        for it in items:
            if it.alive is not None:
                try:
                    out[it.name] = bool(it.alive())
                except Exception:
                    out[it.name] = False
            else:
                out[it.name] = it.thread is not None and it.thread.is_alive()
        return out

    def failed(self) -> list[str]:
        with self._lock:
            return sorted(it.name for it in self._items.values() if it.failed)

    # --- internals --------------------------------------------------------------------
    def _run(self, item: _Supervised, target: Callable[[], None]) -> None:
        while True:
            why = "returned"
            try:
                target()
            except BaseException as e:  # noqa: BLE001 - the point: nothing ends a thread silently
                if self.stop.is_set():
                    return
                why = type(e).__name__
                log.exception("thread %s died: %s", item.name, why)
            if self.stop.is_set():
                return
            delay = self._died(item, why)
            if delay is None or self.stop.wait(delay):
                return
            log.warning("thread %s restarted", item.name)

    def _died(self, item: _Supervised, why: str) -> float | None:
        """Record a death; the backoff before the restart, or None when given up."""
        now = time.monotonic()
        with self._lock:
            item.total_deaths += 1
            item.deaths.append(now)
            while item.deaths and now - item.deaths[0] > self.window_seconds:
                item.deaths.popleft()
            recent = len(item.deaths)
            give_up = recent > self.max_restarts
            item.failed = give_up
            if not give_up:
                self.restarts += 1
            failed = sum(1 for it in self._items.values() if it.failed)
        self.state.count(f"thread_deaths_{item.name}")
        self.state.set_counter("threads_failed", failed)
        if give_up:
            log.error(
                "thread %s died %d times in %.0f s: given up (gateway fault)",
                item.name,
                recent,
                self.window_seconds,
            )
            self.state.event(
                "fault", f"gateway fault: {item.name} stopped after {recent} failures ({why})"
            )
            return None
        self.state.count("thread_restarts")
        self.state.event("fault", f"gateway fault: {item.name} died ({why}), restarting")
        return min(self.backoff_max, self.backoff_min * 2 ** (recent - 1))

    def _start_watchdog(self) -> None:
        with self._lock:
            if self._watchdog is not None:
                return
            self._watchdog = threading.Thread(
                target=self._watch_loop, name="vigil-supervisor", daemon=True
            )
        self._watchdog.start()

    def _watch_loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the watchdog itself must not die
                log.exception("supervisor check failed")

    def check(self) -> None:
        """One pass over the watched threads (the watchdog calls it every `interval`)."""
        with self._lock:
            watched = [it for it in self._items.values() if it.alive is not None]
        now = time.monotonic()
        for it in watched:
            if it.failed or self.stop.is_set():
                continue
            try:
                ok = it.alive() if it.alive else True
            except Exception:
                ok = False
            if ok:
                it.restart_at = 0.0
                continue
            if it.restart_at == 0.0:  # just found dead
                log.error("thread %s is not running", it.name)
                delay = self._died(it, "not running")
                if delay is None:
                    continue
                it.restart_at = now + delay
            if now >= it.restart_at and it.restart is not None:
                it.restart_at = 0.0
                try:
                    it.restart()
                    log.warning("thread %s restarted", it.name)
                except Exception:
                    log.exception("thread %s could not be restarted", it.name)
