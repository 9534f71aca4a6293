"""The events screen: alarms, feedback, model changes and connection state, newest first."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer

from edge_agent.ui.messages import OpenBed
from edge_agent.ui.screens.base import WardViewScreen
from edge_agent.ui.view import WardView
from edge_agent.ui.widgets import AlarmBanner, StatusLine, TitleBar


class EventsScreen(WardViewScreen):
    BINDINGS = [Binding("escape", "app.show_ward", "Ward", show=False, tooltip="back to the ward")]

    def __init__(self) -> None:
        super().__init__(name="events")
        self._shown: tuple = ()

    def compose(self) -> ComposeResult:
        yield TitleBar("EVENTS", id="title")
        yield AlarmBanner(focus_bed=None, hint="[w] ward  [Enter] the event's bed", classes="-calm")
        table = DataTable(id="events", cursor_type="row", zebra_stripes=True)
        table.add_columns("time", "bed", "kind", "by", "what")
        yield table
        yield StatusLine()
        yield Footer()

    def show(self, ward: WardView) -> None:
        if ward.events == self._shown:
            return  # unchanged: keep the nurse's scroll position
        self._shown = ward.events
        table = self.query_one(DataTable)
        table.clear()
        for ev in sorted(ward.events, key=lambda e: e.ts, reverse=True):
            table.add_row(ev.ts.strftime("%H:%M:%S"), ev.bed or "", ev.kind, ev.by or "", ev.text)
        self.query_one(TitleBar).update(
            f"EVENTS  {ward.gateway.gw}  │ {len(ward.events)} shown  │ Enter opens the event's bed"
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        bed = event.data_table.get_row(event.row_key)[1]
        if bed:
            self.post_message(OpenBed(str(bed)))
