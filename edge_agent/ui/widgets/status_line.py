"""The status line: broker connected or buffering (outbox size), model, serial link, operator,
a monitor clock far off the gateway's (the gateway's `clock_skew_*` counters), and first of
all the local store failing (disk full, I/O error...: alarms go on, data kept in memory)."""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive
from textual.widgets import Static

from edge_agent.ui.view import GatewayView


def status_text(gw: GatewayView | None, operator: str | None) -> str:
    if gw is None:
        return "waiting for the gateway…"
    if gw.broker_connected:
        broker = f"● MQTT ok, outbox {gw.outbox}"
    else:
        broker = f"○ MQTT DOWN, buffering {gw.outbox}"
    # Short enough for 80 columns: the model version must never be cut off.
    text = (
        f"{broker} │ {gw.model_name} {gw.model_version} │ serial {gw.serial_link}"
        f" │ {operator or 'not signed in'} │ {gw.now.strftime('%H:%M:%SZ')}"
    )
    if gw.counters.get("clock_skew_beds"):  # a monitor's clock far off the gateway's
        text += f" │ ⚠ clock {format_skew(gw.counters.get('clock_skew_last_seconds', 0))}"
    # A gateway thread that died (edge_agent/supervisor.py): restarted, or given up.
    if gw.counters.get("threads_failed"):
        text = f"⚠ GATEWAY FAULT: {gw.counters['threads_failed']} part(s) stopped │ {text}"
    elif gw.counters.get("thread_restarts"):
        text += f" │ ⚠ gateway fault: {gw.counters['thread_restarts']} restart(s)"
    if gw.storage != "ok":  # first: the gateway's own records are at risk
        kept = gw.counters.get("storage_kept_now", 0)
        lost = gw.counters.get("storage_dropped", 0)
        text = (
            f"⚠ STORAGE FAILING ({STORAGE_WORDS.get(gw.storage, gw.storage)}), "
            f"{kept} kept in memory" + (f", {lost} LOST" if lost else "") + f" │ {text}"
        )
    return text


# What a failing store means, in words for the ward's IT contact.
STORAGE_WORDS = {
    "full": "disk full",
    "io_error": "disk I/O error",
    "read_only": "read-only",
    "locked": "locked",
    "unavailable": "cannot open",
    "corrupt": "corrupt",
}


def format_skew(seconds: int) -> str:
    """A clock offset in the largest whole unit: +45s, -7m, +3h, -420d."""
    sign, s = ("+" if seconds >= 0 else "-"), abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{sign}{s // size}{unit}"
    return f"{sign}{s}s"


class StatusLine(Static):
    gateway: reactive[GatewayView | None] = reactive(None, always_update=True, layout=False)
    operator: reactive[str | None] = reactive(None)

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("markup", False)  # bed ids and notes are text, not markup
        super().__init__(*args, **kw)

    def _refresh_text(self) -> None:
        gw = self.gateway
        self.update(status_text(gw, self.operator))
        self.set_class(gw is not None and not gw.broker_connected, "-buffering")
        self.set_class(gw is not None and gw.serial_link != "ok", "-link-trouble")
        self.set_class(gw is not None and bool(gw.counters.get("threads_failed")), "-fault")
        self.set_class(gw is not None and gw.storage != "ok", "-storage-failing")

    def watch_gateway(self, _gw: GatewayView | None) -> None:
        self._refresh_text()

    def watch_operator(self, _op: str | None) -> None:
        self._refresh_text()
