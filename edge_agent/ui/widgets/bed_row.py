"""One bed in the ward list: key vitals, risk, NEWS2 with its response band and a
re-assess marker (↻: a nurse entry NEWS2 uses is past its re-assess time), and alarm
state on one line.

Rendered as one Rich Text per row (64 beds refresh every second); the colours come
from the component classes below, which app.tcss sets, so colour stays out of Python.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import ListItem

from contracts.messages import ALARM_RANK
from edge_agent.ui.view import BedView, format_value

# name, width, component class (monitor colours)
COLUMNS = (
    ("HR", 4, "bedrow--hr"),
    ("O2Sat", 4, "bedrow--spo2"),
    ("SBP", 4, "bedrow--bp"),
    ("Resp", 4, "bedrow--resp"),
    ("Temp", 5, "bedrow--temp"),
)

# The RCP response bands, short enough for the ward row.
BAND_SHORT = {"low": "low", "low-medium": "low-med", "medium": "medium", "high": "HIGH"}
REASSESS_MARK = "↻"

HEADER = (
    f"{'BED':<8}{'RISK':>6} {'':1} {'NEWS2':<11} "
    + " ".join(f"{n if n != 'O2Sat' else 'SpO2':>{w}}" for n, w, _ in COLUMNS)
    + "  ALARM"
)


class BedRow(ListItem):
    COMPONENT_CLASSES = {
        "bedrow--hr",
        "bedrow--spo2",
        "bedrow--bp",
        "bedrow--resp",
        "bedrow--temp",
        "bedrow--stale",
        "bedrow--none",
        "bedrow--watch",
        "bedrow--alarm",
        "bedrow--escalated",
        "bedrow--news2-low",
        "bedrow--news2-low-medium",
        "bedrow--news2-medium",
        "bedrow--news2-high",
        "bedrow--reassess",
    }

    bed: reactive[BedView | None] = reactive(None, always_update=True)

    def render(self) -> Text:
        b = self.bed
        if b is None:
            return Text("")
        style = self.get_component_rich_style
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{b.bed:<8}")
        risk = f"{b.risk:.2f}" if b.risk is not None else "--"
        t.append(f"{risk:>6} ")
        t.append("!" if b.alarming else " ", style("bedrow--alarm") if b.alarming else "")
        if b.news2 is not None:
            t.append(f" {b.news2.total:>2} ")
            band = BAND_SHORT.get(b.news2.risk, b.news2.risk)
            t.append(band, style(f"bedrow--news2-{b.news2.risk}"))
            t.append(" " * (7 - len(band)))
        else:
            t.append(f" {'--':>2} {'':<7}")
        t.append(REASSESS_MARK if b.reassess else " ", style("bedrow--reassess"))
        t.append(" ")
        for i, (name, width, cls) in enumerate(COLUMNS):
            v = b.vital(name)
            s = style("bedrow--stale") if (v.missing or v.stale) else style(cls)
            t.append(f"{format_value(name, v.value):>{width}}", s)
            if i < len(COLUMNS) - 1:
                t.append(" ")
        # The model's alarm; NEWS2's instead when it is the higher (a NEWS2-only ward).
        level, state, prefix = b.alarm_level, b.alarm_state, ""
        if ALARM_RANK.get(b.news2_alarm_level, 0) > ALARM_RANK.get(level, 0):
            level, state, prefix = b.news2_alarm_level, b.news2_alarm_state, "NEWS2 "
        words = {"acknowledged": " ack", "silenced": " silenced"}.get(state, "")
        shown = "·" if level == "none" else f"{prefix}{level.upper()}{words}"
        if level == "none" and b.unscored_reason:  # vitals shown, nothing scored: say so
            t.append("  not scored", style("bedrow--stale"))
            return t
        t.append(f"  {shown}", style(f"bedrow--{level}"))
        return t
