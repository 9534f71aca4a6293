"""The alarm banner: shown on every screen while any bed has an unacknowledged alarm,
the model's risk alarm or the NEWS2 response alarm.

It cannot be missed: full width, red (escalated: magenta), at the top, with the keys
to act; the app also rings the terminal bell when a new alarm appears.
"""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive
from textual.widgets import Static

from edge_agent.ui.view import WardView


def banner_text(
    ward: WardView | None, focus_bed: str | None, hint: str = "[w] ward"
) -> tuple[str, str | None]:
    """The banner's text and level ('alarm'/'escalated'), or ('', None) when calm."""
    if ward is None:
        return "", None
    alarming = [b for b in ward.by_risk() if b.alarming]
    if not alarming:
        return "", None
    level = "escalated" if any(b.top_alarm_level == "escalated" for b in alarming) else "alarm"
    here = next((b for b in alarming if b.bed == focus_bed), None)
    others = [b.bed for b in alarming if b.bed != focus_bed]
    if here is not None and here.model_alarming:
        risk = f"risk {here.risk:.2f}" if here.risk is not None else "risk --"
        text = (
            f"⚠ {here.alarm_level.upper()} BED {here.bed}  {risk} ≥ {here.threshold:.2f}  "
            f"[a] acknowledge  [s] silence  [d] deteriorating  [f] false alarm"
        )
    elif here is not None:  # NEWS2's alarm alone: feedback is on the model's only
        n2 = f"NEWS2 {here.news2.total} {here.news2.risk}" if here.news2 else "NEWS2"
        text = (
            f"⚠ NEWS2 {here.news2_alarm_level.upper()} BED {here.bed}  {n2}  "
            f"[a] acknowledge  [s] silence"
        )
    if here is not None:
        if others:
            text += f"\nalso alarming: {', '.join(others)}  [w] ward"
        return text, here.top_alarm_level
    text = f"⚠ ALARM  {', '.join('BED ' + b for b in others)}\n{hint}"
    return text, level


class AlarmBanner(Static):
    ward: reactive[WardView | None] = reactive(None, always_update=True, layout=False)

    def __init__(self, focus_bed: str | None = None, hint: str = "[w] ward", **kw: Any) -> None:
        super().__init__("", markup=False, **kw)
        self.focus_bed = focus_bed
        self.hint = hint  # how to get to the alarming bed from this screen

    def watch_ward(self, ward: WardView | None) -> None:
        text, level = banner_text(ward, self.focus_bed, self.hint)
        self.update(text)
        self.set_class(level is None, "-calm")
        self.set_class(level == "alarm", "-alarm")
        self.set_class(level == "escalated", "-escalated")
