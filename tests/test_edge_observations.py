"""Nurse observations at the bedside (issue 15) on a real gateway, real Mosquitto and
real SQLite: supplemental oxygen and ACVPU change NEWS2 and its response band at the
next step, are shown with who and when, stored, sent through the outbox; an entry
older than `[news2] reassess_minutes` is flagged (the gateway's clock is moved, not
slept on); the NEWS2 response alarm follows the site's `[news2] alarm` setting."""

from __future__ import annotations

import dataclasses

import pytest

from contracts.messages import Alarm, Observation, Risk, parse_message
from edge_agent.alarms import ActionRefused
from edge_agent.gateway import Gateway
from tests.support.bedside import Clock, hour_start, reading
from tests.support.broker import Subscriber
from tests.support.edge import edge_settings

GW = "gw-obs"


def start(tmp_path, broker, clock: Clock, **kw) -> Gateway:
    gw = Gateway(edge_settings(tmp_path, port=broker.port, gateway_id=GW, **kw), clock=clock)
    gw.start(sources=False)
    return gw


def feed(gw: Gateway, t0, *hours: int, bed: str = "b1", **values: float) -> None:
    for h in hours:
        gw.process_reading(bed, reading(bed, h, t0=t0, **values))


def test_oxygen_and_acvpu_change_news2_and_its_band_at_the_next_step(broker, tmp_path):
    clock = Clock()
    t0 = hour_start(clock)
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    gw = start(tmp_path, broker, clock)
    try:
        feed(gw, t0, 0, 1)  # hour 0 closes: calm vitals, nothing recorded
        n = gw.state.snapshot().bed("b1").news2
        assert (n.total, n.risk, n.assumed) == (0, "low", ("oxygen", "consciousness"))
        clock.advance(minutes=5)
        gw.set_oxygen("b1", by="nurse jo", on_oxygen=True, device="nasal cannula", flow_l_min=2)
        gw.set_acvpu("b1", by="nurse jo", level="c")
        snap = gw.state.snapshot().bed("b1")
        obs = {o.kind: o for o in snap.observations}
        assert (obs["oxygen"].value, obs["oxygen"].device, obs["oxygen"].flow_l_min) == (
            "oxygen",
            "nasal cannula",
            2.0,
        )
        assert obs["acvpu"].value == "C" and obs["acvpu"].by == "nurse jo"
        assert obs["acvpu"].at == clock.now and obs["acvpu"].age_seconds == 0.0
        assert not obs["acvpu"].reassess
        assert snap.news2.total == 0  # changes at the next step, not before
        assert [e.by for e in gw.state.snapshot().events if e.kind == "observation"] == [
            "nurse jo",
            "nurse jo",
        ]
        feed(gw, t0, 2)  # hour 1 closes with oxygen and new confusion
        snap = gw.state.snapshot().bed("b1")
        n = snap.news2
        assert (n.total, n.risk, n.assumed) == (5, "medium", ())
        assert (n.subscores["oxygen"], n.subscores["consciousness"]) == (2, 3)
        assert snap.news2_alarm_level == "alarm"  # [news2] alarm_at = "medium" (default)
        # stored with who and when
        rows = gw.store.rows("observations")
        assert [(r["kind"], r["value"], r["by"]) for r in rows] == [
            ("oxygen", "oxygen", "nurse jo"),
            ("acvpu", "C", "nurse jo"),
        ]
        assert rows[0]["device"] == "nasal cannula" and rows[0]["flow_l_min"] == 2.0
        news2_alarms = [r for r in gw.store.rows("alarms") if r["source"] == "news2"]
        assert [(r["action"], r["by"], r["risk"]) for r in news2_alarms] == [
            ("raised", "system", None)
        ]
        # sent through the outbox and delivered
        got = [parse_message(p) for _, p, _ in sub.wait_for(2, 10, "/observation")]
        assert all(isinstance(m, Observation) for m in got)
        assert [(m.kind, m.value, m.by) for m in got] == [
            ("oxygen", "oxygen", "nurse jo"),
            ("acvpu", "C", "nurse jo"),
        ]
        assert {str(m.event_id) for m in got} == {r["event_id"] for r in rows}
        risks = [parse_message(p) for _, p, _ in sub.wait_for(2, 10, "/risk")]
        assert isinstance(risks[-1], Risk) and risks[-1].news2.total == 5
        assert risks[-1].news2.risk == "medium" and risks[-1].news2.assumed == []
        alarms = [parse_message(p) for _, p, _ in sub.wait_for(1, 10, "/alarm")]
        n2_alarm = [a for a in alarms if isinstance(a, Alarm) and a.source == "news2"]
        assert len(n2_alarm) == 1 and n2_alarm[0].model is None and n2_alarm[0].risk is None
        assert "NEWS2 5 (medium)" in n2_alarm[0].reason
        assert gw.publisher.wait_idle(10) and gw.store.outbox_size() == 0
        # back on air and alert: NEWS2 falls and its alarm resolves
        gw.set_oxygen("b1", by="nurse kim", on_oxygen=False)
        gw.set_acvpu("b1", by="nurse kim", level="A")
        feed(gw, t0, 3)
        snap = gw.state.snapshot().bed("b1")
        assert (snap.news2.total, snap.news2.risk) == (0, "low")
        assert snap.news2_alarm_level == "none"
        assert [r["action"] for r in gw.store.rows("alarms") if r["source"] == "news2"] == [
            "raised",
            "resolved",
        ]
    finally:
        gw.stop()
        sub.close()


def test_an_entry_older_than_reassess_minutes_is_flagged_still_used(broker, tmp_path):
    clock = Clock()
    t0 = hour_start(clock)
    gw = start(tmp_path, broker, clock, news2={"reassess_minutes": 30})
    try:
        gw.set_oxygen("b1", by="nurse jo", on_oxygen=True, device="venturi", flow_l_min=4)
        gw.set_acvpu("b1", by="nurse jo", level="A")
        gw.set_spo2_scale("b1", by="dr lee", scale=2, reason="COPD, type 2 respiratory failure")
        clock.advance(minutes=30)
        snap = gw.state.snapshot().bed("b1")
        assert not any(o.reassess for o in snap.observations)  # 30 min: not older yet
        clock.advance(seconds=1)
        snap = gw.state.snapshot().bed("b1")
        flags = {o.kind: (o.reassess, o.age_seconds) for o in snap.observations}
        assert flags == {
            "oxygen": (True, 1801.0),
            "acvpu": (True, 1801.0),
            "spo2_scale": (False, 1801.0),  # a standing clinical decision: never flagged
        }
        feed(gw, t0, 0, 1)
        n = gw.state.snapshot().bed("b1").news2
        assert n.reassess == ("oxygen", "acvpu") and n.scale == 2
        # still used: oxygen 2, and SpO2 97 % on oxygen scores 3 on scale 2
        assert (n.subscores["oxygen"], n.subscores["spo2"], n.total) == (2, 3, 5)
        gw.set_acvpu("b1", by="nurse kim", level="A")  # re-assessed
        feed(gw, t0, 2)
        assert gw.state.snapshot().bed("b1").news2.reassess == ("oxygen",)
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("call", "kw", "error", "match"),
    [
        ("set_acvpu", {"bed": "b9", "by": "jo", "level": "A"}, LookupError, "unknown bed 'b9'"),
        ("set_acvpu", {"bed": "b1", "by": "jo", "level": "X"}, ValueError, "ACVPU level"),
        ("set_acvpu", {"bed": "b1", "by": " ", "level": "A"}, ValueError, "must be named"),
        (
            "set_spo2_scale",
            {"bed": "b1", "by": "dr lee", "scale": 2, "reason": " "},
            ValueError,
            "needs a reason",
        ),
        (
            "set_spo2_scale",
            {"bed": "b1", "by": "dr lee", "scale": 3, "reason": "x"},
            ValueError,
            "SpO2 scale must be 1 or 2",
        ),
        (
            "set_oxygen",
            {"bed": "b1", "by": "jo", "on_oxygen": False, "device": "venturi"},
            ValueError,
            "on air has no oxygen device",
        ),
        (
            "set_oxygen",
            {"bed": "b1", "by": "jo", "on_oxygen": True, "flow_l_min": 81},
            ValueError,
            "0-80 L/min",
        ),
        (
            "set_oxygen",
            {"bed": "b1", "by": "jo", "on_oxygen": True, "device": "tent"},
            ValueError,
            "oxygen device must be one of",
        ),
    ],
)
def test_a_bad_entry_is_refused_in_words_and_nothing_is_kept(tmp_path, call, kw, error, match):
    gw = Gateway(edge_settings(tmp_path, gateway_id=GW), clock=Clock())
    try:
        bed = kw.pop("bed")
        with pytest.raises(error, match=match):
            getattr(gw, call)(bed, **kw)
        assert gw.store.rows("observations") == [] and gw.store.outbox_size() == 0
        assert gw.state.snapshot().bed("b1").observations == ()
    finally:
        gw.store.close()


def _medium(gw: Gateway, t0) -> None:
    """Two closed steps with NEWS2 5 (oxygen 2 + new confusion 3): medium."""
    gw.set_oxygen("b1", by="nurse jo", on_oxygen=True)
    gw.set_acvpu("b1", by="nurse jo", level="C")
    feed(gw, t0, 0, 1, 2)


@pytest.mark.parametrize(
    ("news2", "model_alarm", "news2_alarm"),
    [
        ({}, True, "alarm"),  # "both" (default)
        ({"alarm": "news2"}, False, "alarm"),
        ({"alarm": "model"}, True, "none"),
        ({"alarm_at": "high"}, True, "watch"),  # medium: the band below the site's level
        ({"alarm_at": "low-medium"}, True, "escalated"),  # medium: the band above it
    ],
)
def test_the_news2_alarm_follows_the_site_setting(
    broker, tmp_path, news2, model_alarm, news2_alarm
):
    clock = Clock()
    gw = start(tmp_path, broker, clock, news2=news2)
    try:
        bed = gw.beds["b1"]  # a model threshold of 0: every scored step is above it
        bed.alarm.params = dataclasses.replace(bed.alarm.params, threshold=0.0)
        _medium(gw, hour_start(clock))
        snap = gw.state.snapshot().bed("b1")
        assert snap.news2.risk == "medium"
        assert snap.risk is not None and snap.model_version  # the model is always scored
        assert (snap.alarm_level != "none") == model_alarm
        assert snap.news2_alarm_level == news2_alarm
        raised = news2_alarm in ("alarm", "escalated")
        sources = {r["source"] for r in gw.store.rows("alarms")}
        assert sources == {s for s, on in (("model", model_alarm), ("news2", raised)) if on}
    finally:
        gw.stop()


def test_acknowledge_and_silence_reach_the_news2_alarm_too(broker, tmp_path):
    clock = Clock()
    gw = start(tmp_path, broker, clock, news2={"alarm": "news2"})
    try:
        with pytest.raises(ActionRefused, match="nothing to acknowledge"):
            gw.acknowledge("b1", "nurse jo")
        _medium(gw, hour_start(clock))
        assert gw.state.snapshot().bed("b1").news2_alarm_level == "alarm"
        gw.silence("b1", "nurse jo", 120)
        assert gw.state.snapshot().bed("b1").news2_alarm_state == "silenced"
        gw.acknowledge("b1", "nurse kim")
        snap = gw.state.snapshot().bed("b1")
        assert (snap.news2_alarm_state, snap.alarm_state) == ("acknowledged", "none")
        rows = [(r["action"], r["by"]) for r in gw.store.rows("alarms") if r["source"] == "news2"]
        assert rows == [
            ("raised", "system"),
            ("silenced", "nurse jo"),
            ("acknowledged", "nurse kim"),
        ]
    finally:
        gw.stop()


def test_another_stay_on_the_monitor_ends_the_last_patients_entries(tmp_path):
    clock = Clock()
    t0 = hour_start(clock)
    gw = Gateway(edge_settings(tmp_path, gateway_id=GW), clock=clock)
    try:
        feed(gw, t0, 0)
        gw.set_acvpu("b1", by="nurse jo", level="U")
        feed(gw, t0, 1)
        assert gw.state.snapshot().bed("b1").news2.subscores["consciousness"] == 3
        gw.store.close()
        # a restart keeps them for the bed's stay (that of its last stored step)
        gw = Gateway(edge_settings(tmp_path, gateway_id=GW), clock=clock)
        assert [o.value for o in gw.state.snapshot().bed("b1").observations] == ["U"]
        feed(gw, t0, 2, 3)
        assert gw.state.snapshot().bed("b1").news2.subscores["consciousness"] == 3
        # the monitor now sends another patient: that one was never assessed
        for h in (4, 5):
            gw.process_reading("b1", reading("b1", h, t0=t0, patient="MRN-0002"))
        snap = gw.state.snapshot().bed("b1")
        assert snap.observations == () and snap.news2.assumed == ("oxygen", "consciousness")
        assert snap.news2.subscores["consciousness"] == 0
        assert (
            "observations cleared"
            in [e for e in snap_events(gw) if e.kind == "observation"][-1].text
        )
    finally:
        gw.store.close()


def snap_events(gw: Gateway) -> list:
    return list(gw.state.snapshot().events)
