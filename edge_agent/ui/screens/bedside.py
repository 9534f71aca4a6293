"""The bedside view: one tile per vital, the model's risk, NEWS2, and the alarm keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import Footer

from edge_agent.ui.messages import NurseAction
from edge_agent.ui.screens.base import WardViewScreen
from edge_agent.ui.screens.dialogs import NoteScreen, SilenceScreen
from edge_agent.ui.view import TILES, BedView, WardView
from edge_agent.ui.widgets import AlarmBanner, News2Panel, RiskPanel, StatusLine, TitleBar
from edge_agent.ui.widgets.vital_tile import VitalTile


def bedside_title(bed: BedView) -> str:
    """The bedside title: bed, stay, monitor link, model (and "age unknown" when the
    model scores with the bundle's fill value for the age)."""
    age = "  │ age unknown" if bed.age_unknown else ""
    return (
        f"BED {bed.bed}  stay {bed.stay}{age}  │ monitor {bed.link}"
        f"  │ {bed.model_name} {bed.model_version}"
    )


class BedsideScreen(WardViewScreen):
    BINDINGS = [
        Binding("a", "acknowledge", "Ack", tooltip="acknowledge this bed's alarm"),
        Binding("s", "silence", "Silence", tooltip="silence this bed's alarm for a set time"),
        Binding(
            "d",
            "feedback('deteriorating')",
            "Deteriorating",
            tooltip="feedback: the patient is deteriorating (optional note)",
        ),
        Binding(
            "f",
            "feedback('false_alarm')",
            "False alarm",
            tooltip="feedback: this alarm is a false alarm (optional note)",
        ),
        Binding("escape", "app.show_ward", "Ward", show=False, tooltip="back to the ward"),
    ]

    def __init__(self, bed: str, silence_choices: tuple[int, ...] = (60, 120, 300, 600)) -> None:
        super().__init__(name=f"bed-{bed}")
        self.bed = bed
        self.silence_choices = silence_choices

    def compose(self) -> ComposeResult:
        yield TitleBar(f"BED {self.bed}", id="title")
        yield AlarmBanner(focus_bed=self.bed, classes="-calm")
        with Grid(id="tiles"):
            for kind, label, vitals in TILES:
                yield VitalTile(kind, label, vitals)
            yield RiskPanel(id="risk")
        yield News2Panel(id="news2")
        yield StatusLine()
        yield Footer()

    def show(self, ward: WardView) -> None:
        bed = ward.bed(self.bed)
        if bed is None:
            self.query_one(TitleBar).update(f"BED {self.bed}  (not on this gateway)")
            return
        self.query_one(TitleBar).update(bedside_title(bed))
        for tile in self.query(VitalTile):
            tile.bed = bed
        self.query_one(RiskPanel).bed = bed
        self.query_one(News2Panel).bed = bed

    def action_acknowledge(self) -> None:
        self.post_message(NurseAction(NurseAction.Request(self.bed, "acknowledge")))

    def action_silence(self) -> None:
        def chosen(seconds: int | None) -> None:
            if seconds:
                req = NurseAction.Request(self.bed, "silence", silence_seconds=seconds)
                self.post_message(NurseAction(req))

        self.app.push_screen(SilenceScreen(self.bed, self.silence_choices), chosen)

    def action_feedback(self, kind: str) -> None:
        def noted(note: str | None) -> None:
            if note is not None:  # None: cancelled; "" : sent without a note
                req = NurseAction.Request(self.bed, "feedback", feedback=kind, note=note or None)
                self.post_message(NurseAction(req))

        self.app.push_screen(NoteScreen(self.bed, kind), noted)
