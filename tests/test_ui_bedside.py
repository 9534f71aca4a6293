"""The bedside entry forms on fixed data: keys, validation messages, what reaches the port.

The same entries against the real gateway core (store, outbox, broker, NEWS2) are in
tests/test_ui_bedside_gateway.py; here a recording port shows exactly which call each
key sequence makes, and that a form refuses bad input in its own words without calling
the port at all.
"""

from __future__ import annotations

from datetime import timedelta

from edge_agent.alarms import ActionRefused
from edge_agent.ui.app import VigilApp
from edge_agent.ui.gateway_port import ward_view
from edge_agent.ui.screens import BedsideScreen, HelpScreen
from edge_agent.ui.screens.entries import EntryScreen
from edge_agent.ui.widgets import BedRow
from tests.support.ui import (
    FIXED_NOW,
    FixedPort,
    fixed_state,
    fixed_ward,
    settle,
    textual_test,
    until,
)


class RecordingPort(FixedPort):
    """`FixedPort` plus the six bedside entries; `refuse` makes the next one refused."""

    refuse: str | None = None

    def _entry(self, *call: object) -> None:
        if self.refuse:
            msg, self.refuse = self.refuse, None
            raise ActionRefused(msg)
        self.calls.append(call)

    def set_oxygen(self, bed, by, on_oxygen, device, flow_l_min) -> None:  # noqa: ANN001
        self._entry("set_oxygen", bed, by, on_oxygen, device, flow_l_min)

    def set_acvpu(self, bed, by, level) -> None:  # noqa: ANN001
        self._entry("set_acvpu", bed, by, level)

    def set_spo2_scale(self, bed, by, scale, reason) -> None:  # noqa: ANN001
        self._entry("set_spo2_scale", bed, by, scale, reason)

    def admit(self, bed, by, patient_id, age, sex, admitted_at) -> None:  # noqa: ANN001
        self._entry("admit", bed, by, patient_id, age, sex, admitted_at)

    def transfer(self, bed, by, to_bed) -> None:  # noqa: ANN001
        self._entry("transfer", bed, by, to_bed)

    def discharge(self, bed, by) -> None:  # noqa: ANN001
        self._entry("discharge", bed, by)


def dialog_error(app: VigilApp) -> str:
    return str(app.screen.query_one(".dialog--error").render())


async def open_bed03(app: VigilApp, pilot) -> None:  # noqa: ANN001
    await settle(pilot)
    await pilot.press("enter")  # bed03 alarms: it sorts first
    await until(pilot, lambda: isinstance(app.screen, BedsideScreen))


@textual_test
async def test_oxygen_air_and_device_with_flow_reach_the_port_with_the_operator():
    port = RecordingPort(fixed_ward())
    app = VigilApp(port, operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed03(app, pilot)
        await pilot.press("o", "enter")  # first choice: air
        await until(pilot, lambda: app.actions_done == 1)
        await pilot.press("o", "down", "enter", *"4", "enter")  # nasal cannula 4 L/min
        await until(pilot, lambda: app.actions_done == 2)
        await pilot.press("o", "down", "down", "down", "enter", *"12.5", "enter")
        await until(pilot, lambda: app.actions_done == 3)
    assert port.calls == [
        ("set_oxygen", "bed03", "Ann", False, None, None),
        ("set_oxygen", "bed03", "Ann", True, "nasal cannula", 4.0),
        ("set_oxygen", "bed03", "Ann", True, "venturi", 12.5),
    ]


@textual_test
async def test_a_bad_flow_is_named_in_the_form_and_nothing_is_sent():
    port = RecordingPort(fixed_ward())
    app = VigilApp(port, operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed03(app, pilot)
        await pilot.press("o", "down", "enter", *"4x", "enter")
        await settle(pilot)
        assert isinstance(app.screen, EntryScreen)
        assert dialog_error(app) == "flow: '4x' is not a number of L/min"
        await pilot.press("backspace", "backspace", *"95", "enter")
        await settle(pilot)
        assert dialog_error(app) == "flow: 95 L/min is above 80 L/min"
        await pilot.press("backspace", "backspace", "0", "enter")
        await settle(pilot)
        assert dialog_error(app) == "flow: 0 L/min: on oxygen the flow is above 0"
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, BedsideScreen)
    assert port.calls == [] and app.actions_done == 0


@textual_test
async def test_acvpu_one_key_per_letter():
    port = RecordingPort(fixed_ward())
    app = VigilApp(port, operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed03(app, pilot)
        for letter in "acvpu":
            await pilot.press("c", letter)
            await settle(pilot)
        await until(pilot, lambda: app.actions_done == 5)
    assert [c[3] for c in port.calls] == list("ACVPU")
    assert {c[:3] for c in port.calls} == {("set_acvpu", "bed03", "Ann")}


@textual_test
async def test_spo2_scale_2_needs_a_reason_scale_1_does_not():
    port = RecordingPort(fixed_ward())
    app = VigilApp(port, operator="Dr Bo", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed03(app, pilot)
        await pilot.press("p", "2", "enter")  # scale 2, empty reason
        await settle(pilot)
        assert isinstance(app.screen, EntryScreen)
        assert dialog_error(app).startswith("reason: scale 2 needs one")
        assert port.calls == []
        await pilot.press(*"COPD", "enter")
        await until(pilot, lambda: app.actions_done == 1)
        await pilot.press("p", "1")
        await until(pilot, lambda: app.actions_done == 2)
    assert port.calls == [
        ("set_spo2_scale", "bed03", "Dr Bo", 2, "COPD"),
        ("set_spo2_scale", "bed03", "Dr Bo", 1, None),
    ]


@textual_test
async def test_admit_with_a_scanned_id_then_transfer_and_discharge():
    port = RecordingPort(fixed_ward())
    app = VigilApp(port, operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed03(app, pilot)
        # A barcode scanner types the id and ends with Enter: the cursor moves on.
        await pilot.press("i", *"MRN-0042", "enter", *"67", "enter", "f", "enter", "enter")
        await until(pilot, lambda: app.actions_done == 1)
        await pilot.press("t", *"bed05", "enter")
        await until(pilot, lambda: app.actions_done == 2)
        await pilot.press("x", "n")  # asks first: no
        await settle(pilot)
        await pilot.press("x", "y")
        await until(pilot, lambda: app.actions_done == 3)
    at = FIXED_NOW.replace(second=0)  # the form's default: now, to the minute
    assert port.calls == [
        ("admit", "bed03", "Ann", "MRN-0042", 67.0, "F", at),
        ("transfer", "bed03", "Ann", "bed05"),
        ("discharge", "bed03", "Ann"),
    ]
    notes = " ".join(str(n.message) for n in app._notifications)
    assert "MRN-0042" not in notes  # the patient id stays off the screen's messages


@textual_test
async def test_admit_form_names_the_bad_field():
    port = RecordingPort(fixed_ward())
    app = VigilApp(port, operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed03(app, pilot)
        await pilot.press("i", "enter")
        await settle(pilot)
        assert dialog_error(app) == "patient id: type or scan it"
        await pilot.press(*"P1", "enter", *"200", "enter", "enter")
        await pilot.press("enter")
        await settle(pilot)
        assert dialog_error(app) == "age: 200 is outside 0-120 years"
        later = (FIXED_NOW + timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")
        app.screen.query_one("#age").value = "70"
        app.screen.query_one("#admitted").value = later
        app.screen.query_one("#admitted").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert dialog_error(app) == f"admitted: {later} is in the future (now 10:00Z)"
        app.screen.query_one("#sex").value = "x"
        await pilot.press("enter")
        await settle(pilot)
        assert dialog_error(app) == "sex: 'X' is not F, M or blank"
    assert port.calls == []


@textual_test
async def test_a_refusal_of_the_core_is_shown_not_raised():
    port = RecordingPort(fixed_ward())
    port.refuse = "unknown bed 'bed99'"
    app = VigilApp(port, operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed03(app, pilot)
        await pilot.press("t", *"bed99", "enter")
        await settle(pilot)
        notes = [str(n.message) for n in app._notifications]
        assert "Bed bed03: NOT recorded: unknown bed 'bed99'" in notes, notes
        assert app.actions_done == 0 and isinstance(app.screen, BedsideScreen)


@textual_test
async def test_help_lists_the_bedside_entry_keys():
    app = VigilApp(RecordingPort(fixed_ward()), operator="Ann", blink=False)
    async with app.run_test(size=(100, 60)) as pilot:
        await open_bed03(app, pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.text
    for key, words in (
        ("o", "record oxygen"),
        ("c", "record consciousness"),
        ("p", "SpO2 scale"),
        ("i", "admit a patient"),
        ("t", "transfer"),
        ("x", "discharge"),
    ):
        assert any(line.startswith(f"  {key} ") and words in line for line in text.splitlines()), (
            key,
            text,
        )


@textual_test
async def test_a_news2_alarm_alone_shows_the_banner_rings_and_sorts_first():
    """A ward that uses NEWS2 only has no model alarm: NEWS2's must be as loud."""
    state = fixed_state(alarm_bed=None)
    state.record_news2_alarm("bed04", level="alarm", state="active")
    port = RecordingPort(ward_view(state.snapshot()))
    app = VigilApp(port, operator="Ann", blink=False)
    rings = []
    app.bell = lambda: rings.append(1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert rings == [1]
        rows = [r.bed.bed for r in app.screen.query(BedRow)]
        assert rows[0] == "bed04"
        text = app.screen_text()
        assert "⚠ ALARM  BED bed04" in text and "NEWS2 ALARM" in text, text
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, BedsideScreen))
        text = app.screen_text()
        assert "⚠ NEWS2 ALARM BED bed04  NEWS2 " in text, text
        assert "│ NEWS2 ALARM" in text, text  # beside the model's level
        await pilot.press("a")
        await until(pilot, lambda: app.actions_done == 1)
    assert port.calls == [("acknowledge", "bed04", "Ann")]


@textual_test
async def test_keys_of_other_screens_typed_into_a_form_are_text():
    """A scanned id or a reason may hold q, w, e or ?: typed into a field they are text,
    never quit, ward, events or help."""
    port = RecordingPort(fixed_ward())
    app = VigilApp(port, operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed03(app, pilot)
        await pilot.press("i", *"qwe", "question_mark", *"-7", "enter", "enter", "enter", "enter")
        await until(pilot, lambda: app.actions_done == 1)
        await pilot.press("p", "2", *"copd, was qe", "question_mark", "enter")
        await until(pilot, lambda: app.actions_done == 2)
        assert isinstance(app.screen, BedsideScreen)
    assert [c[3] for c in port.calls] == ["qwe?-7", 2]
    assert port.calls[1][4] == "copd, was qe?"
