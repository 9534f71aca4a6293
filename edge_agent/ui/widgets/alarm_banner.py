"""The alarm banner: shown on every screen while any bed has an unacknowledged alarm.

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
    level = "escalated" if any(b.alarm_level == "escalated" for b in alarming) else "alarm"
    here = next((b for b in alarming if b.bed == focus_bed), None)
    others = [b.bed for b in alarming if b.bed != focus_bed]
    if here is not None:
        risk = f"risk {here.risk:.2f}" if here.risk is not None else "risk --"
        text = (
            f"⚠ {here.alarm_level.upper()} BED {here.bed}  {risk} ≥ {here.threshold:.2f}  "
            f"[a] acknowledge  [s] silence  [d] deteriorating  [f] false alarm"
        )
        if others:
            text += f"\nalso alarming: {', '.join(others)}  [w] ward"
        return text, here.alarm_level
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
