"""The nurse terminal on the real gateway core, fed a recorded septic stay.

A real `Gateway` (verified LiteRT bundle, alarm machine, SQLite store, outbox,
publisher) is fed the hourly vitals of a real PhysioNet 2019 stay until its risk alarm
is raised; then the real app, driven by the Pilot, acknowledges, silences and gives
feedback. Each action must be in the store's `alarms` table and in the outbox as a
`vigil.alarm/1` event with the operator and the time (broker down: it stays queued),
and, with a real Mosquitto, reach a subscriber standing in for the hub.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from contracts.messages import Alarm, parse_message
from edge_agent.gateway import Gateway
from edge_agent.ui.app import VigilApp
from edge_agent.ui.gateway_port import GatewayPort
from edge_agent.ui.screens import BedsideScreen
from tests.support.broker import Subscriber
from tests.support.edge import edge_settings, physionet_stay
from tests.support.net import free_port
from tests.support.ui import replay_until_alarm, settle, textual_test, until

GW = "ward-ui"
SEPTIC = "p015180"  # a real septic stay of set A (tests/test_edge_gateway.py)


@pytest.fixture(scope="module")
def septic_stay():
    return physionet_stay(SEPTIC)


def make_gateway(tmp_path, port: int, operator: str | None = None) -> Gateway:
    settings = edge_settings(
        tmp_path,
        port=port,
        gateway_id=GW,
        operator=operator,
        beds=["bed-1", "bed-2"],
        mqtt={"reconnect_min_seconds": 0.2, "reconnect_max_seconds": 0.5},
    )
    gw = Gateway(settings)
    assert gw.model is not None, f"the default bundle must verify: {gw.refused}"
    gw.start(sources=False)  # readings are fed by the test (recorded data)
    return gw


async def nurse_acts_on_bed_1(app: VigilApp) -> None:
    """Open bed-1 from the ward, acknowledge, silence 5 min, then two feedbacks."""
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        text = app.screen_text()
        assert "⚠ ALARM  BED bed-1" in text, text
        await pilot.press("enter")  # bed-1 alarms, so it is first
        await until(pilot, lambda: isinstance(app.screen, BedsideScreen), poll=True)
        assert isinstance(app.screen, BedsideScreen) and app.screen.bed == "bed-1"
        assert "⚠" in app.screen_text()  # the banner
        await pilot.press("a")
        await until(pilot, lambda: f" ack {app.operator}" in app.screen_text(), poll=True)
        await pilot.press("s", "3")  # third choice: 300 s
        await until(
            pilot,
            lambda: " silenced 4:" in app.screen_text() or " silenced 5:00" in app.screen_text(),
            poll=True,
        )
        await pilot.press("f", *"leads off", "enter")
        await settle(pilot)
        await pilot.press("d", "enter")
        await until(pilot, lambda: app.actions_done == 4, poll=True)
        assert "⚠" not in app.screen_text()  # acknowledged: the banner is gone


def actions_by(rows: list[dict], by: str) -> list[dict]:
    return [r for r in rows if r["by"] == by]


@textual_test
async def test_ack_silence_feedback_reach_store_and_outbox_while_broker_down(tmp_path, septic_stay):
    gw = make_gateway(tmp_path, free_port())  # nothing listens: everything stays queued
    try:
        replay_until_alarm(gw, "bed-1", septic_stay)
        before = gw.store.outbox_size()
        app = VigilApp(GatewayPort(gw), operator="Nurse Ann", blink=False)
        await nurse_acts_on_bed_1(app)

        every = actions_by(gw.store.rows("alarms", "bed = ?", ["bed-1"]), "Nurse Ann")
        rows = [r for r in every if r["source"] == "model"]
        assert [r["action"] for r in rows] == ["acknowledged", "silenced", "feedback", "feedback"]
        # The stay's NEWS2 alarm is up too: acknowledge and silence act on it as well.
        news2 = [r["action"] for r in every if r["source"] == "news2"]
        assert news2 == ["acknowledged", "silenced"]
        assert rows[1]["silence_seconds"] == 300
        assert [(r["feedback"], r["note"]) for r in rows[2:]] == [
            ("false_alarm", "leads off"),
            ("deteriorating", None),
        ]
        assert all(r["version"] == gw.model.version for r in rows)

        queued = [
            parse_message(bytes(r["payload"]))
            for r in gw.store.db.query("SELECT payload FROM outbox ORDER BY id")
        ]
        mine = [m for m in queued if isinstance(m, Alarm) and m.by == "Nurse Ann"]
        assert {str(m.event_id) for m in mine} == {r["event_id"] for r in every}
        mine = [m for m in mine if m.source == "model"]
        assert [m.action for m in mine] == ["acknowledged", "silenced", "feedback", "feedback"]
        assert {str(m.event_id) for m in mine} == {r["event_id"] for r in rows}
        assert all(m.bed == "bed-1" and m.gw == GW and m.model is not None for m in mine)
        assert gw.store.outbox_size() == before + 4 + len(news2)
        ts = [m.ts for m in mine]
        assert ts == sorted(ts) and ts[-1] - ts[0] < timedelta(minutes=1)
        snap = gw.state.snapshot()
        assert snap.bed("bed-1").alarm_state == "silenced"
        assert not snap.broker_connected and snap.outbox >= before + 4
    finally:
        gw.stop(flush_timeout=0.1)


@textual_test
async def test_actions_reach_the_hub_side_of_a_real_broker(broker, tmp_path, septic_stay):
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/bed/+/alarm")
    gw = make_gateway(tmp_path, broker.port, operator="Nurse Bo")
    try:
        replay_until_alarm(gw, "bed-1", septic_stay)
        port = GatewayPort(gw)
        assert port.configured_operator() == "Nurse Bo"  # from the config: no sign-in
        app = VigilApp(port, operator=port.configured_operator(), blink=False)
        await nurse_acts_on_bed_1(app)
        assert gw.publisher.wait_idle(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with sub.lock:
                got = [parse_message(p) for _, p, _ in sub.messages]
            mine = [m for m in got if m.by == "Nurse Bo" and m.source == "model"]
            if len(mine) >= 4:
                break
            time.sleep(0.05)
        assert [m.action for m in mine] == ["acknowledged", "silenced", "feedback", "feedback"]
        assert [m.feedback for m in mine[2:]] == ["false_alarm", "deteriorating"]
        raised = [m for m in got if m.action == "raised" and m.source == "model"]
        assert raised and raised[0].by == "system"
        assert gw.store.outbox_size() == 0
    finally:
        gw.stop(flush_timeout=2)
        sub.close()


@textual_test
async def test_a_refused_action_is_shown_and_not_stored(tmp_path, septic_stay):
    gw = make_gateway(tmp_path, free_port())
    try:
        replay_until_alarm(gw, "bed-1", septic_stay)
        app = VigilApp(GatewayPort(gw), operator="Nurse Ann", blink=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("down", "enter")  # bed-2: never alarmed
            await until(pilot, lambda: isinstance(app.screen, BedsideScreen), poll=True)
            assert app.screen.bed == "bed-2"
            await pilot.press("a")
            await settle(pilot)
            assert app.actions_done == 0
            notes = [n.message for n in app._notifications]
            assert any("nothing to acknowledge" in m for m in notes), notes
        assert not actions_by(gw.store.rows("alarms"), "Nurse Ann")
    finally:
        gw.stop(flush_timeout=0.1)


def test_events_of_the_core_reach_the_view(tmp_path, septic_stay):
    gw = make_gateway(tmp_path, free_port())
    try:
        replay_until_alarm(gw, "bed-1", septic_stay)
        view = GatewayPort(gw).ward_view()
    finally:
        gw.stop(flush_timeout=0.1)
    kinds = {e.kind for e in view.events}
    assert {"model", "alarm"} <= kinds
    bed = view.bed("bed-1")
    assert bed.alarming and bed.model_version == gw.model.version
    assert bed.risk is not None and bed.risk >= bed.threshold
    assert len(bed.risk_history) >= 2 and bed.news2 is not None
    assert view.by_risk()[0].bed == "bed-1"
    assert json.dumps(bed.news2.subscores)  # plain data
