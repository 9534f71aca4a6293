"""The bedside entries through the nurse terminal's keys, on the real gateway core.

A real `Gateway` (verified LiteRT bundle, NEWS2 and alarm machines, SQLite store,
outbox, publisher) is fed the hourly vitals of a real PhysioNet 2019 stay; the real
app, driven by the Pilot, records oxygen and ACVPU, sets the SpO2 scale, admits,
transfers and discharges. Each entry must change what NEWS2 scores and the screen
shows, be in the store with who and when, and leave as a `vigil.observation/1` event
(queued in the outbox while the broker is down; at a subscriber standing in for the
hub with a real Mosquitto).
"""

from __future__ import annotations

import math
import re
import time
from datetime import timedelta

import pytest

from contracts import topics
from contracts.messages import Observation, parse_message
from contracts.vitals import VITAL_NAMES
from edge_agent.config import AdmissionConfig
from edge_agent.decoder import Reading
from edge_agent.gateway import Gateway
from edge_agent.ui.app import VigilApp
from edge_agent.ui.gateway_port import GatewayPort
from edge_agent.ui.screens import BedsideScreen
from edge_agent.ui.screens.entries import EntryScreen
from tests.support.broker import Subscriber
from tests.support.edge import T0, edge_settings, physionet_stay
from tests.support.net import free_port
from tests.support.ui import settle, textual_test, until

GW = "ward-bedside"
STAY = "p015180"  # a real septic stay of set A (tests/test_ui_gateway.py)


@pytest.fixture(scope="module")
def stay_rows():
    return physionet_stay(STAY)


def make_gateway(tmp_path, port: int, **kw) -> Gateway:
    settings = edge_settings(
        tmp_path,
        port=port,
        gateway_id=GW,
        beds=["bed-1", "bed-2"],
        mqtt={"reconnect_min_seconds": 0.2, "reconnect_max_seconds": 0.5},
        **kw,
    )
    gw = Gateway(settings)
    assert gw.model is not None, f"the default bundle must verify: {gw.refused}"
    gw.start(sources=False)  # readings are fed by the test (recorded data)
    return gw


def feed(gw: Gateway, bed: str, rows, hours: range, *, patient: str = "pn-stay") -> None:
    """Feed hours `hours` of a stay's hourly rows to `bed`, two readings an hour.

    `patient` "" is a monitor that names no patient and no ICU admission (a site
    without ADT): the bed's bedside admission completes its readings."""
    for row in rows[hours.start : hours.stop]:
        hour = float(row["ICULOS"])
        for k in range(2):
            obs = T0 + timedelta(hours=hour, minutes=30 * k)
            values = {
                n: (None if math.isnan(float(row[n])) else float(row[n])) for n in VITAL_NAMES
            }
            static = {
                "Age": float(row["Age"]),
                "Gender": float(row["Gender"]),
                "HospAdmTime": float(row["HospAdmTime"]),
                "ICULOS": hour + k / 2,
            }
            admit = T0 if patient else None
            seq = int(hour * 2 + k)
            gw.process_reading(
                bed,
                Reading(bed, patient, "MON01", seq, obs, values, static, icu_admit=admit),
            )


def news2_of(gw: Gateway, bed: str):
    n2 = gw.state.snapshot().bed(bed).news2
    assert n2 is not None, f"bed {bed} has no NEWS2 yet"
    return n2


async def open_bed(app: VigilApp, pilot, bed: str) -> None:  # noqa: ANN001
    """From the ward, down the list to `bed` and Enter."""
    await settle(pilot)
    for _ in range(len(app.ward.beds)):
        if app.screen.query_one("ListView").highlighted_child.bed.bed == bed:
            break
        await pilot.press("down")
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, BedsideScreen), poll=True)
    assert app.screen.bed == bed


async def record_oxygen_and_acvpu(app: VigilApp, gw: Gateway, rows) -> tuple:  # noqa: ANN001
    """Open bed-1, record 4 L/min by nasal cannula and ACVPU 'V' by keys; score an
    hour more. Returns NEWS2 before and after."""
    async with app.run_test(size=(80, 24)) as pilot:
        await open_bed(app, pilot, "bed-1")
        before = news2_of(gw, "bed-1")
        text = app.screen_text()
        assert "O2 air assumed (never recorded)" in text, text
        assert "ACVPU A assumed (never recorded)" in text, text
        await pilot.press("o", "down", "enter", "4", "enter")  # nasal cannula, 4 L/min
        await until(pilot, lambda: app.actions_done == 1, poll=True)
        await pilot.press("c", "v")
        await until(pilot, lambda: app.actions_done == 2, poll=True)
        await until(pilot, lambda: "ACVPU V voice" in app.screen_text(), poll=True)
        text = app.screen_text()
        assert re.search(rf"O2 4 L/min nasal cannula, \ds ago, {app.operator} \(not yet", text)
        assert re.search(rf"ACVPU V voice, \ds ago, {app.operator} \(not yet scored\)", text)
        # NEWS2 uses the entries from the next scored step on.
        feed(gw, "bed-1", rows, range(8, 10))
        after = news2_of(gw, "bed-1")
        await until(
            pilot,
            lambda: f"NEWS2 {after.total} {after.risk.upper()}" in app.screen_text(),
            poll=True,
        )
        assert "assumed" not in app.screen_text().split("NEWS2", 1)[1]
    return before, after


def assert_news2_changed(before, after) -> None:  # noqa: ANN001
    assert before.subscores["oxygen"] == 0 and before.subscores["consciousness"] == 0
    assert set(before.assumed) == {"oxygen", "consciousness"}
    assert after.subscores["oxygen"] == 2 and after.subscores["consciousness"] == 3
    assert after.assumed == ()
    assert after.total >= 5  # ACVPU 3 and oxygen 2 alone reach the medium band
    assert after.risk in ("medium", "high") and after.risk != before.risk


@textual_test
async def test_oxygen_and_acvpu_by_keys_change_news2_and_are_stored_and_queued(tmp_path, stay_rows):
    gw = make_gateway(tmp_path, free_port())  # nothing listens: everything stays queued
    try:
        feed(gw, "bed-1", stay_rows, range(0, 8))
        queued_before = gw.store.outbox_size()
        app = VigilApp(GatewayPort(gw), operator="Nurse Ann", blink=False)
        before, after = await record_oxygen_and_acvpu(app, gw, stay_rows)
        assert_news2_changed(before, after)

        rows = gw.store.rows("observations", "bed = ?", ["bed-1"])
        assert [(r["kind"], r["value"], r["device"], r["flow_l_min"], r["by"]) for r in rows] == [
            ("oxygen", "oxygen", "nasal cannula", 4.0, "Nurse Ann"),
            ("acvpu", "V", None, None, "Nurse Ann"),
        ]
        queued = [
            parse_message(bytes(r["payload"]))
            for r in gw.store.db.query("SELECT payload FROM outbox ORDER BY id")
        ]
        obs = [m for m in queued if isinstance(m, Observation)]
        assert [(m.kind, m.value, m.by, m.bed) for m in obs] == [
            ("oxygen", "oxygen", "Nurse Ann", "bed-1"),
            ("acvpu", "V", "Nurse Ann", "bed-1"),
        ]
        assert {str(m.event_id) for m in obs} == {r["event_id"] for r in rows}
        assert gw.store.outbox_size() > queued_before + 1
        events = [e for e in gw.state.snapshot().events if e.kind == "observation"]
        assert [e.by for e in events] == ["Nurse Ann", "Nurse Ann"]
    finally:
        gw.stop(flush_timeout=0.1)


@textual_test
async def test_entries_reach_the_hub_side_of_a_real_broker(broker, tmp_path, stay_rows):
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/bed/+/observation")
    gw = make_gateway(tmp_path, broker.port, operator="Nurse Bo")
    try:
        feed(gw, "bed-1", stay_rows, range(0, 8))
        port = GatewayPort(gw)
        app = VigilApp(port, operator=port.configured_operator(), blink=False)
        before, after = await record_oxygen_and_acvpu(app, gw, stay_rows)
        assert_news2_changed(before, after)
        assert gw.publisher.wait_idle(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with sub.lock:
                got = [parse_message(p) for _, p, _ in sub.messages]
            if len(got) >= 2:
                break
            time.sleep(0.05)
        assert [(m.kind, m.value, m.device, m.flow_l_min, m.by) for m in got] == [
            ("oxygen", "oxygen", "nasal cannula", 4.0, "Nurse Bo"),
            ("acvpu", "V", None, None, "Nurse Bo"),
        ]
        assert [t for t, _, _ in sub.messages][:1] == [topics.observation(GW, "bed-1")]
        stored = {r["event_id"] for r in gw.store.rows("observations")}
        assert {str(m.event_id) for m in got} == stored
    finally:
        gw.stop(flush_timeout=2)
        sub.close()


@textual_test
async def test_scale_2_without_a_reason_is_refused_with_a_message(tmp_path, stay_rows):
    gw = make_gateway(tmp_path, free_port())
    try:
        feed(gw, "bed-1", stay_rows, range(0, 4))
        app = VigilApp(GatewayPort(gw), operator="Dr Cy", blink=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await open_bed(app, pilot, "bed-1")
            await pilot.press("p", "2", "enter")
            await settle(pilot)
            assert isinstance(app.screen, EntryScreen)  # the form stays, and says why
            assert "reason: scale 2 needs one" in app.screen_text()
            await pilot.press(*"COPD", "enter")
            await until(pilot, lambda: app.actions_done == 1, poll=True)
            await until(
                pilot,
                lambda: re.search(r"SpO2 scale 2 \(COPD\), \ds ago, Dr Cy", app.screen_text()),
                poll=True,
            )
            # The core refuses what the form cannot know: a transfer to no such bed.
            await pilot.press("t", *"bed-9", "enter")
            await settle(pilot)
            notes = [str(n.message) for n in app._notifications]
            assert "Bed bed-1: NOT recorded: unknown bed 'bed-9'" in notes, notes
            assert app.actions_done == 1 and isinstance(app.screen, BedsideScreen)
        rows = gw.store.rows("observations", "bed = ?", ["bed-1"])
        assert [(r["kind"], r["value"], r["reason"], r["by"]) for r in rows] == [
            ("spo2_scale", "2", "COPD", "Dr Cy")
        ]
        feed(gw, "bed-1", stay_rows, range(4, 6))
        assert news2_of(gw, "bed-1").scale == 2
    finally:
        gw.stop(flush_timeout=0.1)


@textual_test
async def test_admit_transfer_discharge_by_keys(tmp_path, stay_rows):
    gw = make_gateway(tmp_path, free_port(), admission=AdmissionConfig(require=True))
    try:
        feed(gw, "bed-1", stay_rows, range(0, 3), patient="")
        bed = gw.state.snapshot().bed("bed-1")
        assert bed.news2 is None and bed.unscored_reason
        app = VigilApp(GatewayPort(gw), operator="Nurse Di", blink=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            row = next(line for line in app.screen_text().splitlines() if "bed-1 " in line)
            assert row.rstrip().endswith("not scored"), row
            await open_bed(app, pilot, "bed-1")
            text = app.screen_text()
            assert "NOT SCORED: no patient" in text and "monitor's stay" in text, text
            assert f"NEWS2 --  {bed.unscored_reason}" in text, text
            # A scanner types the id and Enter; then age, sex, and the default time.
            await pilot.press("i", *"MRN-0042", "enter", *"71", "enter", "m", "enter", "enter")
            await until(pilot, lambda: app.actions_done == 1, poll=True)
            adm = gw.store.rows("admissions", "bed = ?", ["bed-1"])
            assert len(adm) == 1 and adm[0]["source"] == "bedside"
            assert "MRN-0042" not in str(adm)  # pseudonymised at the gateway
            feed(gw, "bed-1", stay_rows, range(3, 6), patient="")
            await until(pilot, lambda: "bedside stay st-" in app.screen_text(), poll=True)
            title = str(app.screen.query_one("#title").render())  # 80 columns cut it
            assert "bedside stay st-" in title and " 71y M adm " in title, title
            assert "NOT SCORED" not in app.screen_text()
            assert gw.state.snapshot().bed("bed-1").news2 is not None

            await pilot.press("t", *"bed-2", "enter")
            await until(pilot, lambda: app.actions_done == 2, poll=True)
            assert gw.store.rows("admissions", "bed = ?", ["bed-1"]) == []
            assert len(gw.store.rows("admissions", "bed = ?", ["bed-2"])) == 1
            await until(pilot, lambda: "no patient admitted" in app.screen_text(), poll=True)

            await pilot.press("w")
            await open_bed(app, pilot, "bed-2")
            await pilot.press("x", "y")
            await until(pilot, lambda: app.actions_done == 3, poll=True)
        assert gw.store.rows("admissions") == []
        events = [e for e in gw.state.snapshot().events if e.kind == "admission"]
        assert [e.by for e in events][-4:] == ["Nurse Di"] * 4  # admit, out, in, discharge
    finally:
        gw.stop(flush_timeout=0.1)
