"""The model's risk for one bed: score with its trend, threshold, alarm level, model version.

Every risk shown carries the model name and version (patient safety: a nurse must
know which model said so). NEWS2's own alarm stands beside the model's alarm level,
so a ward that escalates on either sees both. A bed whose readings are not scored
(no patient admitted, ...) says why instead of showing a risk.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Sparkline, Static

from contracts.messages import ALARM_LEVELS
from edge_agent.ui.view import BedView


def trend_arrow(history: tuple[float, ...]) -> str:
    """Rising, falling or steady over the last few scores (0.05 of risk is a real move)."""
    if len(history) < 2:
        return " "
    recent = history[-min(len(history), 5) :]
    delta = recent[-1] - recent[0]
    if delta > 0.05:
        return "▲"
    if delta < -0.05:
        return "▼"
    return "▶"


def alarm_state_text(bed: BedView) -> str:
    """Who acknowledged, or how long the silence still runs."""
    if bed.alarm_state == "acknowledged":
        return f" ack {bed.acknowledged_by}" if bed.acknowledged_by else " ack"
    if bed.alarm_state == "silenced":
        left = int(bed.silenced_seconds_left or 0)
        return f" silenced {left // 60}:{left % 60:02d}"
    return ""


class RiskPanel(Widget):
    COMPONENT_CLASSES = {f"risk--n2-{name}" for name in ALARM_LEVELS}

    bed: reactive[BedView | None] = reactive(None, always_update=True, layout=False)

    def compose(self) -> ComposeResult:
        yield Static("RISK", classes="risk--score", markup=False)
        yield Sparkline([], classes="risk--trend")
        yield Static("", classes="risk--level", markup=False)
        yield Static("", classes="risk--model", markup=False)

    def watch_bed(self, bed: BedView | None) -> None:
        if not self.is_mounted or bed is None:
            return
        if bed.unscored_reason:
            score = f"NOT SCORED: {bed.unscored_reason}"
        elif bed.risk is None:
            score = "RISK  --  not scored (insufficient data)"
        else:
            arrow = trend_arrow(bed.risk_history)
            score = f"RISK {bed.risk:.2f} {arrow}  thr {bed.threshold:.2f}"
        self.query_one(".risk--score", Static).update(score)
        self.query_one(Sparkline).data = list(bed.risk_history)
        level = self.query_one(".risk--level", Static)
        for name in ALARM_LEVELS:
            level.set_class(bed.alarm_level == name, f"-{name}")
        text = Text(f"{bed.alarm_level.upper()}{alarm_state_text(bed)}")
        news2 = bed.news2_alarm_level
        if news2 != "none":
            text.append(" │ ")
            state = {"acknowledged": " ack", "silenced": " silenced"}.get(bed.news2_alarm_state, "")
            style = self.get_component_rich_style(f"risk--n2-{news2}", partial=True)
            text.append(f"NEWS2 {news2.upper()}{state}", style)
        level.update(text)
        self.query_one(".risk--model", Static).update(f"{bed.model_name} {bed.model_version}")
