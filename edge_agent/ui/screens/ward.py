"""The ward view: every bed of the gateway, sickest first; Enter opens the bed."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import Footer, ListView, Static

from edge_agent.ui.messages import OpenBed
from edge_agent.ui.screens.base import WardViewScreen
from edge_agent.ui.view import WardView
from edge_agent.ui.widgets import AlarmBanner, BedRow, StatusLine, TitleBar
from edge_agent.ui.widgets.bed_row import HEADER


class WardScreen(WardViewScreen):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._rows: list[BedRow] = []
        self._alarming: set[str] = set()

    def compose(self) -> ComposeResult:
        yield TitleBar("WARD", id="title")
        yield AlarmBanner(
            focus_bed=None, hint="[Enter] open the highlighted bed (alarms first)", classes="-calm"
        )
        yield Static(HEADER, id="ward-header", markup=False)
        yield ListView(id="beds")
        yield StatusLine()
        yield Footer()

    def show(self, ward: WardView) -> None:
        beds = ward.by_risk()
        gw = ward.gateway
        alarming = sum(1 for b in beds if b.alarming)
        self.query_one(TitleBar).update(
            f"WARD  {gw.gw}  │ {len(beds)} beds, {alarming} alarming"
            f"  │ {gw.model_name} {gw.model_version}"
        )
        lv = self.query_one(ListView)
        rows = self._rows
        # Rows are slots: the sorted beds are poured into them, and the cursor follows
        # the bed it was on, not the slot, so a re-sort never moves the nurse's choice.
        current = lv.index
        chosen = None
        if current is not None and current < len(rows) and rows[current].bed is not None:
            chosen = rows[current].bed.bed
        if len(rows) < len(beds):
            new = [BedRow() for _ in range(len(beds) - len(rows))]
            rows.extend(new)
            lv.extend(new)
        while len(rows) > len(beds):
            rows.pop().remove()
        for row, bed in zip(rows, beds, strict=True):
            row.bed = bed
        alarming = {b.bed for b in beds if b.alarming}
        if alarming - self._alarming:
            chosen = beds[0].bed  # a new alarm: the cursor goes to it (it sorts first)
        self._alarming = alarming
        if beds:
            ids = [b.bed for b in beds]
            lv.index = ids.index(chosen) if chosen in ids else min(current or 0, len(ids) - 1)

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        row = event.item
        if isinstance(row, BedRow) and row.bed is not None:
            self.post_message(OpenBed(row.bed.bed))
