"""A patient-monitor tile: label and unit, the value, its trend; greyed when stale."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Digits, Sparkline, Static

from edge_agent.ui.view import BedView, display_unit, format_age, format_value


class VitalTile(Widget):
    """One vital sign of one bed. `kind` (hr, spo2, bp, resp, temp) picks its colour in tcss."""

    bed: reactive[BedView | None] = reactive(None, always_update=True, layout=False)

    def __init__(self, kind: str, label: str, vitals: tuple[str, ...], **kw: Any) -> None:
        super().__init__(classes=kind, **kw)
        self.kind = kind
        self.label = label
        self.vitals = vitals  # the first one drives the trend and staleness

    def compose(self) -> ComposeResult:
        with Horizontal(classes="tile--head"):
            label = f"{self.label} {display_unit(self.vitals[0])}"
            yield Static(label, classes="tile--label", markup=False)
            yield Static("", classes="tile--age", markup=False)
        yield Digits("---", classes="tile--value")
        if self.kind == "bp":
            yield Static("", classes="tile--sub", markup=False)
        yield Sparkline([], classes="tile--trend")

    def watch_bed(self, bed: BedView | None) -> None:
        if not self.is_mounted:
            return
        views = [bed.vital(n) if bed else None for n in self.vitals]
        main = views[0]
        missing = main is None or main.missing
        stale = (not missing) and main.stale
        self.set_class(missing, "-missing")
        self.set_class(stale, "-stale")
        vals = [format_value(v.name, v.value) if v else "---" for v in views]
        # Big digits as on a monitor; blood pressure as systolic/diastolic, mean below.
        self.query_one(".tile--value", Digits).update("/".join(vals[:2]))
        if self.kind == "bp":
            self.query_one(".tile--sub", Static).update(f"MAP {vals[2]}")
        age = "" if main is None else ("no data" if missing else format_age(main.age_seconds))
        if main is not None and missing and main.withheld:  # the monitor said why
            age = main.withheld.replace("_", " ").upper()
        if stale:
            age += " ago"
        self.query_one(".tile--age", Static).update(age)
        self.query_one(Sparkline).data = list(main.history) if main else []
