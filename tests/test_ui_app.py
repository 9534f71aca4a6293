"""The nurse terminal's own behaviour, on fixed data: keys, screens, sign-in, help.

The same actions against the real gateway core (store, outbox) are in
tests/test_ui_gateway.py.
"""

from __future__ import annotations

import pytest

from edge_agent.ui.app import VigilApp
from edge_agent.ui.screens import (
    BedsideScreen,
    EventsScreen,
    HelpScreen,
    LoginScreen,
    QuitScreen,
    WardScreen,
)
from edge_agent.ui.widgets import BedRow
from tests.support.ui import FixedPort, fixed_ward, settle, textual_test, until


@textual_test
async def test_ward_lists_every_bed_sickest_first_and_enter_opens_it():
    app = VigilApp(FixedPort(fixed_ward(n_beds=12)), operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, WardScreen)
        order = [row.bed.bed for row in app.screen.query(BedRow)]
        assert len(order) == 12
        assert order[0] == "bed03"  # the unacknowledged alarm
        assert order[1] == "bed01"  # watch
        risks = [app.ward.bed(b).risk for b in order[2:]]
        scored = [r for r in risks if r is not None]
        assert scored == sorted(scored, reverse=True)
        await pilot.press("down", "down", "enter")
        await until(pilot, lambda: isinstance(app.screen, BedsideScreen))
        assert isinstance(app.screen, BedsideScreen)
        assert app.screen.bed == order[2]
        await pilot.press("escape")
        assert isinstance(app.screen, WardScreen)


@textual_test
async def test_cursor_stays_on_its_bed_when_the_ward_resorts_but_jumps_to_a_new_alarm():
    port = FixedPort(fixed_ward(n_beds=6, alarm_bed=None))
    app = VigilApp(port, operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("down", "down")
        chosen = app.screen.query(BedRow)[2].bed.bed
        lv = app.screen.query_one("ListView")
        # bed05's alarm, already acknowledged, moves it to the top: the cursor stays put.
        port.view = fixed_ward(n_beds=6, alarm_bed=5, alarm_state="acknowledged")
        app.poll()
        await settle(pilot)
        rows = list(app.screen.query(BedRow))
        assert rows[0].bed.bed == "bed05"
        assert rows[lv.index].bed.bed == chosen != "bed05"
        # A new, unacknowledged alarm: the cursor goes to it, Enter opens it.
        port.view = fixed_ward(n_beds=6, alarm_bed=4)
        app.poll()
        await settle(pilot)
        assert rows[lv.index].bed.bed == "bed04"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, BedsideScreen))
        assert app.screen.bed == "bed04"


@textual_test
async def test_actions_carry_the_operator_and_the_chosen_options():
    port = FixedPort(fixed_ward())
    app = VigilApp(port, operator="Ann", blink=False, silence_choices=(60, 300))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("enter")  # bed03, in alarm
        await until(pilot, lambda: isinstance(app.screen, BedsideScreen))
        await pilot.press("a")
        await settle(pilot)
        await pilot.press("s", "2")
        await settle(pilot)
        await pilot.press("f", *"probe off", "enter")
        await settle(pilot)
        await pilot.press("d", "enter")  # no note
        await settle(pilot)
        await pilot.press("d", "escape")  # cancelled: nothing sent
        await until(pilot, lambda: app.actions_done == 4)
        await settle(pilot)
        assert port.calls == [
            ("acknowledge", "bed03", "Ann"),
            ("silence", "bed03", "Ann", 300),
            ("feedback", "bed03", "Ann", "false_alarm", "probe off"),
            ("feedback", "bed03", "Ann", "deteriorating", None),
        ]
        assert app.actions_done == 4


@textual_test
async def test_without_a_configured_operator_the_terminal_asks_a_name_first():
    port = FixedPort(fixed_ward())
    app = VigilApp(port, operator=None, blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, LoginScreen)
        await pilot.press("enter")  # empty: refused
        assert isinstance(app.screen, LoginScreen)
        await pilot.press(*"Bo", "enter")
        await settle(pilot)
        assert app.operator == "Bo"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, BedsideScreen))
        await pilot.press("a")
        await until(pilot, lambda: app.actions_done == 1)
        assert port.calls == [("acknowledge", "bed03", "Bo")]


@textual_test
async def test_help_lists_every_key_of_every_screen():
    app = VigilApp(FixedPort(fixed_ward()), operator="Ann", blink=False)
    async with app.run_test(size=(100, 60)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.text
        for cls in (VigilApp, BedsideScreen, EventsScreen):
            for binding in cls.BINDINGS:
                assert binding.tooltip in text, binding
        for key in ("?", "w", "e", "q", "a", "s", "d", "f", "Esc", "Enter"):
            assert f"  {key} " in text, key
        await pilot.press("escape")
        assert isinstance(app.screen, WardScreen)


@textual_test
async def test_events_screen_shows_alarms_model_and_connection():
    app = VigilApp(FixedPort(fixed_ward()), operator="Ann", blink=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, EventsScreen)
        table = app.screen.query_one("DataTable")
        kinds = {table.get_row_at(i)[2] for i in range(table.row_count)}
        assert kinds == {"alarm", "model", "connection"}
        assert table.get_row_at(0)[1] == "bed03"  # newest first: the alarm
        await pilot.press("enter")  # opens the event's bed
        await until(pilot, lambda: isinstance(app.screen, BedsideScreen))
        assert app.screen.bed == "bed03"


@textual_test
async def test_a_new_alarm_rings_the_bell_once():
    port = FixedPort(fixed_ward(alarm_bed=None))
    app = VigilApp(port, operator="Ann", blink=False)
    rings = []
    app.bell = lambda: rings.append(1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert rings == []
        port.view = fixed_ward(alarm_bed=4)
        app.poll()
        await settle(pilot)
        app.poll()
        await settle(pilot)
        assert rings == [1]


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
@textual_test
async def test_quit_asks_first(size):
    app = VigilApp(FixedPort(fixed_ward()), operator="Ann", blink=False)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("q", "n")
        assert isinstance(app.screen, WardScreen)
        await pilot.press("ctrl+q")  # Textual's quit key asks too
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, WardScreen)
        await pilot.press("q", "y")
        await pilot.pause()
        assert app.return_code == 0 or not app.is_running
