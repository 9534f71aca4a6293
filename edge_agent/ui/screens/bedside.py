"""The bedside view: one tile per vital, the model's risk, NEWS2, the alarm keys, and
the nurse's entries (oxygen, ACVPU, SpO2 scale) and admission keys."""

from __future__ import annotations

from datetime import datetime

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import Footer

from contracts.timeutil import utc_now
from edge_agent.ui.messages import BedsideEntry, NurseAction
from edge_agent.ui.screens.base import WardViewScreen
from edge_agent.ui.screens.dialogs import NoteScreen, SilenceScreen
from edge_agent.ui.screens.entries import (
    AcvpuScreen,
    AdmitScreen,
    DischargeScreen,
    EntryScreen,
    OxygenScreen,
    Spo2ScaleScreen,
    TransferScreen,
)
from edge_agent.ui.view import TILES, BedView, WardView, format_age
from edge_agent.ui.widgets import AlarmBanner, News2Panel, RiskPanel, StatusLine, TitleBar
from edge_agent.ui.widgets.vital_tile import VitalTile


def bedside_title(bed: BedView, now: datetime | None = None) -> str:
    """The bedside title: bed, model, monitor link, then who is admitted (and "age
    unknown" when the model scores with the bundle's fill value for the age). The
    model comes before the admission so that 80 columns never cut its version."""
    age = "  │ age unknown" if bed.age_unknown else ""
    return (
        f"BED {bed.bed}  │ {bed.model_name} {bed.model_version}  │ monitor {bed.link}"
        f"  │ {admission_text(bed, now)}{age}"
    )


def admission_text(bed: BedView, now: datetime | None = None) -> str:
    """Who is in the bed, in a few characters: stay, age/sex, how long ago admitted and
    from where (adt / bedside / monitor)."""
    a = bed.admission
    if a is None:
        return f"stay {bed.stay}" if bed.stay else "no patient admitted"
    who = " ".join(p for p in (f"{a.age:.0f}y" if a.age is not None else "", a.sex or "") if p)
    since = ""
    if a.since is not None and now is not None:
        since = f" adm {format_age((now - a.since).total_seconds())} ago"
    source = SOURCE_WORDS.get(a.source, a.source)
    return f"{source} stay {a.stay}{' ' + who if who else ''}{since}"


# Where the admission came from, first in the title (80 columns may cut its end).
SOURCE_WORDS = {"adt": "ADT", "bedside": "bedside", "monitor": "monitor's"}


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
        # The entry keys stay out of the footer (80 columns keep "? Help" visible); the
        # NEWS2 panel shows each one beside what it changes, the help lists them all.
        Binding(
            "o",
            "entry('oxygen')",
            "O2",
            show=False,
            tooltip="record oxygen: air, or device and flow",
        ),
        Binding(
            "c", "entry('acvpu')", "ACVPU", show=False, tooltip="record consciousness (A C V P U)"
        ),
        Binding(
            "p",
            "entry('scale')",
            "SpO2 scale",
            show=False,
            tooltip="set the SpO2 scale (clinician; 2 needs a reason)",
        ),
        Binding(
            "i",
            "entry('admit')",
            "Admit",
            show=False,
            tooltip="admit a patient (id typed or scanned, age, sex, time)",
        ),
        Binding(
            "t", "entry('transfer')", "Transfer", show=False, tooltip="transfer to another bed"
        ),
        Binding(
            "x", "entry('discharge')", "Discharge", show=False, tooltip="discharge (asks first)"
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
        self.query_one(TitleBar).update(bedside_title(bed, ward.gateway.now))
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

    def action_entry(self, kind: str) -> None:
        """Open the entry form of `kind`; what it returns goes up to the app."""
        ward = self.ward
        form: EntryScreen
        if kind == "oxygen":
            form = OxygenScreen(self.bed, name="oxygen")
        elif kind == "acvpu":
            form = AcvpuScreen(self.bed, name="acvpu")
        elif kind == "scale":
            form = Spo2ScaleScreen(self.bed, name="spo2-scale")
        elif kind == "admit":
            form = AdmitScreen(self.bed, ward.gateway.now if ward else utc_now())
        elif kind == "transfer":
            form = TransferScreen(self.bed, tuple(b.bed for b in ward.beds) if ward else ())
        else:
            form = DischargeScreen(self.bed, name="discharge")

        def entered(req: BedsideEntry.Request | None) -> None:
            if req is not None:
                self.post_message(BedsideEntry(req))

        self.app.push_screen(form, entered)
