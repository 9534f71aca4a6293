"""SVG snapshots of the nurse terminal (pytest-textual-snapshot), at 80x24 and 160x48.

Deterministic: fixed clock and readings (tests/support/ui.py), no blinking. Update
after an intended change with `pytest tests/test_ui_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from contracts.news2 import news2
from edge_agent.ui.app import VigilApp
from edge_agent.ui.gateway_port import ward_view
from edge_agent.ui.screens import BedsideScreen
from edge_agent.ui.view import WardView
from tests.support.ui import FIXED_NOW, FixedPort, fixed_state, fixed_ward

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


def ward_with_nurse_entries() -> WardView:
    """bed03 of `fixed_state` with a nurse's oxygen entry 2 h old (past the 1 h re-assess
    time: flagged), ACVPU 'C' 10 min old and scale 1 never set, NEWS2 rescored with
    them (high band) and its own alarm raised, all through the real `GatewayState`."""
    state = fixed_state()
    bed = "bed03"
    state.set_observation(
        bed,
        "oxygen",
        "oxygen",
        by="Ann Nurse",
        at=FIXED_NOW - timedelta(hours=2),
        device="nasal cannula",
        flow_l_min=4.0,
    )
    state.set_observation(bed, "acvpu", "C", by="Bo Nurse", at=FIXED_NOW - timedelta(minutes=10))
    v = {n: s.value for n, s in state.snapshot().bed(bed).vitals.items()}
    n2 = news2(
        resp=v["Resp"],
        spo2=v["O2Sat"],
        sbp=v["SBP"],
        hr=v["HR"],
        temp=v["Temp"],
        on_oxygen=True,
        acvpu="C",
    )
    state.record_risk(
        bed,
        window_end=FIXED_NOW,
        risk=0.83,
        threshold=0.5,
        observed=280,
        insufficient=False,
        news2=dataclasses.replace(n2, reassess=("oxygen",)),
    )
    state.record_news2_alarm(bed, level="alarm", state="active")
    return ward_view(state.snapshot())


@pytest.mark.parametrize("size", SIZES)
def test_bedside_nurse_entries_with_reassess_flag(snap_compare, size):
    app = VigilApp(FixedPort(ward_with_nurse_entries()), operator="Ann Nurse", blink=False)
    assert snap_compare(app, terminal_size=size, run_before=open_bed(0))


@pytest.mark.parametrize("size", SIZES)
def test_ward_news2_band_and_reassess_marker(snap_compare, size):
    app = VigilApp(FixedPort(ward_with_nurse_entries()), operator="Ann Nurse", blink=False)
    assert snap_compare(app, terminal_size=size, run_before=settle)


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param(("o", "down", "enter", "4"), id="oxygen"),
        pytest.param(("i", *"MRN-7", "enter"), id="admit"),
    ],
)
def test_bedside_entry_form_fits_80x24(snap_compare, keys):
    """The oxygen form (device chosen, flow typed) and the admit form (id scanned)."""
    app = VigilApp(FixedPort(ward_with_nurse_entries()), operator="Ann Nurse", blink=False)

    async def run_before(pilot) -> None:
        await open_bed(0)(pilot)
        await pilot.press(*keys)
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
