"""SVG snapshots of the nurse terminal (pytest-textual-snapshot), at 80x24 and 160x48.

Deterministic: fixed clock and readings (tests/support/ui.py), no blinking. Update
after an intended change with `pytest tests/test_ui_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import pytest

from edge_agent.ui.app import VigilApp
from edge_agent.ui.screens import BedsideScreen
from tests.support.ui import FixedPort, fixed_ward

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


def make_app(**ward_kw) -> VigilApp:
    return VigilApp(FixedPort(fixed_ward(**ward_kw)), operator="Ann Nurse", blink=False)


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def open_bed(bed_index: int):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press(*["down"] * bed_index, "enter")
        for _ in range(500):  # bounded: 10 s, then a clear failure instead of a hang
            if isinstance(pilot.app.screen, BedsideScreen):
                break
            await pilot.pause(0.02)
        else:
            raise AssertionError(f"Enter did not open the bedside: {pilot.app.screen!r}")
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_ward_sorted_by_risk_with_alarm_banner(snap_compare, size):
    assert snap_compare(make_app(n_beds=24), terminal_size=size, run_before=settle)


@pytest.mark.parametrize("size", SIZES)
def test_bedside_alarm_banner_tiles_risk_news2(snap_compare, size):
    # bed03 is in alarm and sorts first: Enter opens it.
    assert snap_compare(make_app(), terminal_size=size, run_before=open_bed(0))


def test_bedside_stale_blood_pressure_greyed_with_age(snap_compare):
    # bed01 (watch, stale BP) sorts second.
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=open_bed(1))


def test_bedside_acknowledged_alarm_no_banner_broker_buffering(snap_compare):
    app = make_app(alarm_state="acknowledged", broker_connected=False, outbox=412)
    assert snap_compare(app, terminal_size=(80, 24), run_before=open_bed(0))


def test_help_lists_keys(snap_compare):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)
