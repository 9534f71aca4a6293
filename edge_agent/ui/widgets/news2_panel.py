"""NEWS2 for one bed: total, clinical band and every sub-score."""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive
from textual.widgets import Static

from edge_agent.ui.view import BedView

# Sub-score keys of contracts.news2, in the order of the RCP chart, as nurses abbreviate them.
SUBSCORE_LABELS = (
    ("resp", "RR"),
    ("spo2", "SpO2"),
    ("oxygen", "O2"),
    ("sbp", "SBP"),
    ("hr", "HR"),
    ("consciousness", "ACVPU"),
    ("temp", "T"),
)


def news2_text(bed: BedView | None) -> str:
    if bed is None or bed.news2 is None:
        return "NEWS2 --  no vitals yet"
    n = bed.news2
    parts = " ".join(f"{label} {n.subscores.get(key, 0)}" for key, label in SUBSCORE_LABELS)
    text = f"NEWS2 {n.total} {n.risk}  │ {parts}"
    if n.missing:
        text += f"  │ missing: {', '.join(n.missing)}"
    return text


class News2Panel(Static):
    bed: reactive[BedView | None] = reactive(None, always_update=True, layout=False)

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("markup", False)  # bed ids and notes are text, not markup
        super().__init__(*args, **kw)

    def watch_bed(self, bed: BedView | None) -> None:
        self.update(news2_text(bed))
        band = bed.news2.risk if bed and bed.news2 else "none"
        for b in ("low", "low-medium", "medium", "high"):
            self.set_class(band == b, f"-{b}")
