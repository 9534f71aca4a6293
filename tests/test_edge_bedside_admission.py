"""Admission at the bed (issue 15) on a real gateway and real SQLite: admit (the typed id
pseudonymised exactly as the ADT path does, never stored), transfer (the stay and its
observations move), discharge (the stay, its windows and observations end), and
`[admission] require = true`: an unadmitted bed's vitals are shown but not scored."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from contracts.timeutil import iso_ms
from edge_agent.gateway import NO_PATIENT, Gateway
from tests.support.bedside import Clock, hour_start, reading
from tests.support.broker import Subscriber
from tests.support.edge import edge_settings
from tests.support.waiting import wait_until

GW = "gw-adm"
MRN = "MRN-778899"


def gateway(tmp_path, clock: Clock, port: int | None = None, **kw) -> Gateway:
    return Gateway(
        edge_settings(tmp_path, port=port, gateway_id=GW, beds=("b1", "b2"), **kw), clock=clock
    )


def everything_stored(gw: Gateway) -> str:
    """Every row of every table of the gateway's store, as text."""
    tables = [r[0] for r in gw.store.db.conn.execute("SELECT name FROM sqlite_master")]
    rows = [gw.store.rows(t) for t in tables if not t.startswith("sqlite")]
    return json.dumps(rows, default=str)


def test_admit_transfer_discharge_at_the_bedside(broker, tmp_path):
    clock = Clock()
    t0 = hour_start(clock)
    admitted_at = t0 - timedelta(hours=3)
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/status")
    gw = gateway(tmp_path, clock, broker.port)
    gw.start(sources=False)
    try:
        wait_until(lambda: gw.publisher.connected, what="the gateway's broker connection")
        adm = gw.admit(
            "b1", by="nurse jo", patient_id=MRN, age=71, sex="M", admitted_at=admitted_at
        )
        assert adm.source == "bedside" and adm.stay == gw.stay_pseudonym(MRN, admitted_at)
        assert adm.patient == gw.stay_pseudonym(MRN, None)  # as an ADT A01 would
        snap = gw.state.snapshot().bed("b1")
        assert (snap.admission.source, snap.admission.stay) == ("bedside", adm.stay)
        assert (snap.admission.age, snap.admission.sex, snap.admission.since) == (
            71.0,
            "M",
            clock.now,
        )
        # a monitor that sends no patient id: its readings are the admitted stay's,
        # hours counted from the admission
        for h in (0, 1):
            gw.process_reading("b1", reading("b1", h, t0=t0, patient=""))
        step = gw.beds["b1"].windows.last_step
        assert step.stay == adm.stay and step.iculos_hours == 3.0
        assert step.static["Age"] == 71.0 and step.static["Gender"] == 1.0
        gw.set_oxygen("b1", by="nurse jo", on_oxygen=True, device="simple mask", flow_l_min=6)
        # transfer: admission and observations move; b1 is empty again
        clock.advance(minutes=10)
        moved = gw.transfer("b1", by="nurse kim", to_bed="b2")
        assert moved.stay == adm.stay and moved.bed == "b2"
        assert gw.admission("b1") is None and gw.admission("b2").stay == adm.stay
        b1, b2 = gw.state.snapshot().bed("b1"), gw.state.snapshot().bed("b2")
        assert b1.observations == () and b1.admission is None and b1.news2 is None
        assert [(o.kind, o.value, o.by) for o in b2.observations] == [
            ("oxygen", "oxygen", "nurse jo")
        ]
        assert b2.observations[0].age_seconds == 600.0  # its age goes with it
        assert gw.beds["b1"].windows.stay is None  # b1's windows ended with the stay
        gw.process_reading("b2", reading("b2", 2, t0=t0, patient=""))
        gw.process_reading("b2", reading("b2", 3, t0=t0, patient=""))
        assert gw.state.snapshot().bed("b2").news2.subscores["oxygen"] == 2  # carried
        assert [r["bed"] for r in gw.store.rows("admissions")] == ["b2"]
        # discharge: the stay ends, its observations with it
        gone = gw.discharge("b2", by="nurse kim")
        assert gone.stay == adm.stay and gw.admission("b2") is None
        b2 = gw.state.snapshot().bed("b2")
        assert b2.observations == () and b2.risk is None and b2.news2 is None
        assert gw.store.rows("admissions") == [] and gw.beds["b2"].windows.stay is None
        texts = [(e.text, e.by) for e in gw.state.snapshot().events if e.kind == "admission"]
        assert [by for _, by in texts] == ["nurse jo", "nurse kim", "nurse kim", "nurse kim"]
        assert "admitted at the bedside" in texts[0][0] and "discharged" in texts[-1][0]
        # the raw id is nowhere: not in the store, the events, or what was published
        assert MRN not in everything_stored(gw)
        assert all(MRN not in e.text for e in gw.state.snapshot().events)
        assert gw.publisher.wait_idle(10)
        assert not any(MRN.encode() in p for _, p, _ in sub.wait_for(1, 10, "/status"))
        statuses = [json.loads(p) for _, p, _ in sub.messages]
        assert any(b["stay"] == adm.stay for s in statuses for b in s["beds"])
    finally:
        gw.stop()
        sub.close()


def test_a_bedside_admission_survives_a_restart_with_its_observations(tmp_path):
    clock = Clock()
    gw = gateway(tmp_path, clock)
    adm = gw.admit("b1", by="nurse jo", patient_id=MRN, age=None, sex=None)
    gw.set_acvpu("b1", by="nurse jo", level="V")
    gw.store.close()
    clock.advance(minutes=20)
    again = gateway(tmp_path, clock)
    try:
        assert again.admission("b1") == adm
        snap = again.state.snapshot().bed("b1")
        assert snap.admission.source == "bedside" and snap.admission.sex is None
        assert [(o.kind, o.value, o.age_seconds) for o in snap.observations] == [
            ("acvpu", "V", 1200.0)
        ]
    finally:
        again.store.close()


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (lambda gw: gw.admit("b9", by="jo", patient_id=MRN, age=1, sex="F"), LookupError, "b9"),
        (lambda gw: gw.admit("b2", by="jo", patient_id=" ", age=1, sex="F"), ValueError, "empty"),
        (lambda gw: gw.admit("b2", by="jo", patient_id="X1", age=1, sex="x"), ValueError, "M or F"),
        (
            lambda gw: gw.admit("b2", by="jo", patient_id="X1", age=130, sex=None),
            ValueError,
            "0-120",
        ),
        (lambda gw: gw.admit("b2", by="", patient_id="X1", age=1, sex=None), ValueError, "named"),
        (
            lambda gw: gw.admit("b1", by="jo", patient_id="X1", age=1, sex="F"),
            ValueError,
            "already",
        ),
        (
            lambda gw: gw.admit("b2", by="jo", patient_id=MRN, age=1, sex="F"),
            ValueError,
            "transfer",
        ),
        (
            lambda gw: gw.admit(
                "b2",
                by="jo",
                patient_id="X1",
                age=1,
                sex=None,
                admitted_at=gw.clock() + timedelta(hours=1),
            ),
            ValueError,
            "future",
        ),
        (lambda gw: gw.transfer("b2", by="jo", to_bed="b1"), ValueError, "no patient admitted"),
        (lambda gw: gw.transfer("b1", by="jo", to_bed="b1"), ValueError, "already in bed"),
        (lambda gw: gw.transfer("b1", by="jo", to_bed="b7"), LookupError, "b7"),
        (lambda gw: gw.discharge("b2", by="jo"), ValueError, "no patient admitted to bed b2"),
    ],
)
def test_a_bad_admission_action_is_refused_in_words(tmp_path, action, error, match):
    gw = gateway(tmp_path, Clock())
    try:
        gw.admit("b1", by="jo", patient_id=MRN, age=50, sex="F")
        before = gw.store.rows("admissions")
        with pytest.raises(error, match=match):
            action(gw)
        assert gw.store.rows("admissions") == before
    finally:
        gw.store.close()


def test_with_require_an_unadmitted_bed_is_shown_not_scored_and_says_why(tmp_path):
    clock = Clock()
    t0 = hour_start(clock)
    gw = gateway(tmp_path, clock, admission={"require": True})
    try:
        for h in (0, 1, 2):
            gw.process_reading("b1", reading("b1", h, t0=t0))
        snap = gw.state.snapshot().bed("b1")
        assert snap.unscored_reason == NO_PATIENT == "no patient admitted to this bed"
        assert snap.vitals["HR"].value == 80.0 and snap.readings == 3  # shown
        assert snap.risk is None and snap.news2 is None and snap.news2_alarm_level == "none"
        assert gw.store.rows("risk") == [] and gw.store.rows("steps") == []
        assert gw.store.outbox_size() == 0  # nothing scored, nothing sent
        gw.admit("b1", by="nurse jo", patient_id="MRN-0001", age=70, sex="F", admitted_at=t0)
        assert gw.state.snapshot().bed("b1").unscored_reason is None  # at once
        for h in (3, 4):
            gw.process_reading("b1", reading("b1", h, t0=t0))
        snap = gw.state.snapshot().bed("b1")
        assert snap.unscored_reason is None and snap.news2 is not None
        assert [r["window_end"] for r in gw.store.rows("risk")] == [iso_ms(t0 + timedelta(hours=4))]
        gw.discharge("b1", by="nurse jo")
        assert gw.state.snapshot().bed("b1").unscored_reason == NO_PATIENT
    finally:
        gw.store.close()


def test_without_require_the_monitors_patient_is_scored_and_shown_as_such(tmp_path):
    clock = Clock()
    t0 = hour_start(clock)
    gw = gateway(tmp_path, clock)
    try:
        for h in (0, 1):
            gw.process_reading("b1", reading("b1", h, t0=t0))
        snap = gw.state.snapshot().bed("b1")
        assert snap.unscored_reason is None and snap.news2 is not None
        assert (snap.admission.source, snap.admission.age, snap.admission.sex) == (
            "monitor",
            70.0,
            "F",
        )
        assert snap.admission.stay == snap.stay and MRN not in snap.stay
    finally:
        gw.store.close()
