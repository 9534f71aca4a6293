"""The bedside entry forms: oxygen, ACVPU, SpO2 scale, admit, transfer, discharge.

Keyboard-first and small enough for 80x24: each form is a modal dialog that returns a
`BedsideEntry.Request` (or None when cancelled with Esc); the bedside screen posts it
and the app sends it through the port with the signed-in operator's name. The forms
check what a nurse can get wrong by typing (a flow that is not a number, scale 2
without a reason, an admission time in the future) and say so in the dialog, one line
naming the field; the gateway checks again and its refusal is shown by the app.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from contracts.messages import MAX_FLOW_L_MIN, OXYGEN_DEVICES
from contracts.news2 import ACVPU_LEVELS
from edge_agent.ui.messages import BedsideEntry

# The gateway's oxygen devices (contracts.messages), as a nurse reads them on the list.
DEVICE_LABELS = {
    "nasal cannula": "Nasal cannula",
    "simple mask": "Simple face mask",
    "venturi": "Venturi mask",
    "non-rebreather": "Non-rebreather mask",
    "high-flow": "High-flow nasal oxygen",
    "NIV": "NIV / CPAP",
    "other": "Other device",
}
OXYGEN_CHOICES = tuple((d, DEVICE_LABELS.get(d, d)) for d in OXYGEN_DEVICES)

ACVPU_WORDS = {
    "A": "Alert",
    "C": "new Confusion",
    "V": "responds to Voice",
    "P": "responds to Pain",
    "U": "Unresponsive",
}
ACVPU_KEYS = tuple((level, ACVPU_WORDS[level]) for level in ACVPU_LEVELS)

SEXES = {"F": "F", "M": "M"}
MAX_AGE = 120
ADMIT_TIME_FORMAT = "%Y-%m-%d %H:%M"  # UTC, as the status line's clock
ADMIT_AHEAD = timedelta(minutes=5)  # terminals' clocks differ a little, not more


def parse_flow(text: str) -> float:
    """A flow in L/min, or ValueError naming what is wrong."""
    try:
        flow = float(text.strip().replace(",", "."))
    except ValueError:
        raise ValueError(f"flow: '{text.strip()}' is not a number of L/min") from None
    if not math.isfinite(flow) or flow <= 0:
        raise ValueError(f"flow: {text.strip()} L/min: on oxygen the flow is above 0")
    if flow > MAX_FLOW_L_MIN:
        raise ValueError(f"flow: {flow:g} L/min is above {MAX_FLOW_L_MIN:g} L/min")
    return flow


def parse_age(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        age = float(text.replace(",", "."))
    except ValueError:
        raise ValueError(f"age: '{text}' is not a number of years") from None
    if not 0 <= age <= MAX_AGE:
        raise ValueError(f"age: {age:g} is outside 0-{MAX_AGE} years")
    return age


def parse_sex(text: str) -> str | None:
    text = text.strip().upper()
    if not text:
        return None
    if text not in SEXES:
        raise ValueError(f"sex: '{text}' is not F, M or blank")
    return SEXES[text]


def parse_admit_time(text: str, now: datetime) -> datetime:
    try:
        at = datetime.strptime(text.strip(), ADMIT_TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"admitted: '{text.strip()}' is not YYYY-MM-DD HH:MM (UTC)") from None
    if at > now + ADMIT_AHEAD:
        raise ValueError(f"admitted: {text.strip()} is in the future (now {now:%H:%M}Z)")
    return at


class EntryScreen(ModalScreen[BedsideEntry.Request | None]):
    """What every entry form shares: Esc cancels, errors on one line under the form."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, bed: str, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.bed = bed

    def on_mount(self) -> None:
        # Each field keeps its name on its border once typed into (no extra rows at 80x24).
        for field in self.query(Input):
            field.border_title = field.placeholder.split(" (")[0].split(", Enter")[0]

    def error(self, text: str) -> None:
        self.query_one(".dialog--error", Static).update(text)

    def send(self, action: str, summary: str, **fields: object) -> None:
        self.dismiss(BedsideEntry.Request(self.bed, action, dict(fields), summary))

    def action_cancel(self) -> None:
        self.dismiss(None)


class OxygenScreen(EntryScreen):
    """Air, or oxygen: a device from the list, then the flow in L/min."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Bed {self.bed}: supplemental oxygen", markup=False)
            options = [Option("Air (no supplemental oxygen)", id="air")]
            options += [Option(label, id=device) for device, label in OXYGEN_CHOICES]
            yield OptionList(*options, id="device")
            yield Input(placeholder="flow L/min, Enter to record", id="flow", max_length=6)
            yield Static("", classes="dialog--error", markup=False)
            yield Static(
                "[↑↓] choose  [Enter] pick / record  [Esc] cancel", id="hint", markup=False
            )

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id == "air":
            self.send("set_oxygen", "on air", on_oxygen=False, device=None, flow_l_min=None)
            return
        self.error("")
        label = DEVICE_LABELS.get(event.option.id or "", event.option.id)
        hint = f"{label}: the flow in L/min, then [Enter]"
        self.query_one("#hint", Static).update(hint)
        self.query_one("#flow", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        options = self.query_one(OptionList)
        index = options.highlighted
        device = options.get_option_at_index(index).id if index is not None else None
        if device in (None, "air"):
            self.error("device: choose one from the list first ([↑↓], Enter)")
            options.focus()
            return
        try:
            flow = parse_flow(event.value)
        except ValueError as e:
            self.error(str(e))
            return
        self.send(
            "set_oxygen",
            f"oxygen {flow:g} L/min by {device}",
            on_oxygen=True,
            device=device,
            flow_l_min=flow,
        )


class AcvpuScreen(EntryScreen):
    """Consciousness: one key per ACVPU letter."""

    BINDINGS = [
        *(Binding(k.lower(), f"level('{k}')", w) for k, w in ACVPU_KEYS),
        Binding("escape", "cancel", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Bed {self.bed}: consciousness (ACVPU)", markup=False)
            for key, words in ACVPU_KEYS:
                yield Static(f"  [{key.lower()}] {key}  {words}", markup=False)
            yield Static("  [Esc] cancel", markup=False)

    def action_level(self, level: str) -> None:
        self.send("set_acvpu", f"ACVPU {level} ({ACVPU_WORDS[level]})", level=level)


class Spo2ScaleScreen(EntryScreen):
    """SpO2 scale 1 or 2 (a clinician's decision; scale 2 needs a reason)."""

    BINDINGS = [
        Binding("1", "scale(1)", "Scale 1"),
        Binding("2", "scale(2)", "Scale 2"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Bed {self.bed}: SpO2 scale (clinician)", markup=False)
            yield OptionList(
                Option("[1] Scale 1: target SpO2 96% or more", id="1"),
                Option("[2] Scale 2: hypercapnic resp. failure, target 88-92%", id="2"),
                id="scale",
            )
            yield Input(placeholder="reason (needed for scale 2), Enter to record", id="reason")
            yield Static("", classes="dialog--error", markup=False)
            yield Static("[1] [2] choose  [Enter] record  [Esc] cancel", markup=False)

    def action_scale(self, scale: int) -> None:
        options = self.query_one(OptionList)
        options.highlighted = scale - 1
        if scale == 1:
            self.record(1)
        else:
            self.query_one("#reason", Input).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_scale(int(event.option.id or "1"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        index = self.query_one(OptionList).highlighted
        self.record(2 if index == 1 else 1)

    def record(self, scale: int) -> None:
        reason = self.query_one("#reason", Input).value.strip() or None
        if scale == 2 and reason is None:
            self.error("reason: scale 2 needs one (e.g. COPD, hypercapnic resp. failure)")
            self.query_one("#reason", Input).focus()
            return
        summary = f"SpO2 scale {scale}" + (f" ({reason})" if reason else "")
        self.send("set_spo2_scale", summary, scale=scale, reason=reason)


class AdmitScreen(EntryScreen):
    """Admit a patient: id typed or scanned (a scanner types it and ends with Enter),
    age, sex and admission time (now by default); Enter goes to the next field and
    records on the last."""

    FIELDS = ("patient", "age", "sex", "admitted")

    def __init__(self, bed: str, now: datetime) -> None:
        super().__init__(bed, name="admit")
        self.now = now

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Admit a patient to bed {self.bed}", markup=False)
            yield Input(placeholder="patient id (type or scan)", id="patient", max_length=64)
            yield Input(placeholder="age in years (blank: unknown)", id="age", max_length=5)
            yield Input(placeholder="sex F / M (blank: unknown)", id="sex", max_length=1)
            yield Input(
                self.now.strftime(ADMIT_TIME_FORMAT),
                placeholder="admitted, UTC: YYYY-MM-DD HH:MM",
                id="admitted",
                max_length=16,
            )
            yield Static("", classes="dialog--error", markup=False)
            yield Static("[Enter] next field / record  [Tab] next  [Esc] cancel", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        field = event.input.id or ""
        if field == "patient" and not event.value.strip():
            self.error("patient id: type or scan it")
            return
        if field != self.FIELDS[-1]:
            self.query_one(f"#{self.FIELDS[self.FIELDS.index(field) + 1]}", Input).focus()
            return
        values = {f: self.query_one(f"#{f}", Input).value for f in self.FIELDS}
        try:
            patient = values["patient"].strip()
            if not patient:
                raise ValueError("patient id: type or scan it")
            age = parse_age(values["age"])
            sex = parse_sex(values["sex"])
            at = parse_admit_time(values["admitted"], self.now)
        except ValueError as e:
            self.error(str(e))
            return
        self.send(
            "admit",
            "patient admitted",  # the id stays out of the log and the screen
            patient_id=patient,
            age=age,
            sex=sex,
            admitted_at=at,
        )


class TransferScreen(EntryScreen):
    """Move this bed's patient to another bed of the gateway."""

    def __init__(self, bed: str, beds: tuple[str, ...]) -> None:
        super().__init__(bed, name="transfer")
        self.beds = tuple(b for b in beds if b != bed)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Transfer the patient of bed {self.bed} to bed:", markup=False)
            yield Input(
                placeholder="bed, Enter to transfer",
                id="to-bed",
                max_length=64,
                suggester=SuggestFromList(self.beds, case_sensitive=False),
            )
            yield Static("", classes="dialog--error", markup=False)
            shown = ", ".join(self.beds[:8]) + (" …" if len(self.beds) > 8 else "")
            yield Static(f"beds: {shown}  [→] complete  [Esc] cancel", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        to_bed = event.value.strip()
        if not to_bed:
            self.error("bed: type the bed to move the patient to")
            return
        self.send("transfer", f"patient transferred to bed {to_bed}", to_bed=to_bed)


class DischargeScreen(EntryScreen):
    """Discharge: asks first (the stay's windows end with it)."""

    BINDINGS = [
        Binding("y", "discharge", "Yes"),
        Binding("n,escape", "cancel", "No"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                f"Discharge the patient of bed {self.bed}? Scoring stops. [y] yes  [n] no",
                markup=False,
            )

    def action_discharge(self) -> None:
        self.send("discharge", "patient discharged")
