"""The bed's risk alarm state machine: minimum duration, hysteresis, escalation, silence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.messages import ALARM_RANK as RANK
from edge_agent.alarms import ActionRefused, AlarmMachine, AlarmParams

T0 = datetime(2026, 1, 1, tzinfo=UTC)
P = AlarmParams(
    threshold=0.5,
    hysteresis=0.05,
    min_steps=2,
    escalate_after_steps=3,
    escalate_margin=0.2,
    watch_fraction=0.8,
    max_silence_seconds=600,
)


def run(m: AlarmMachine, risks, start=T0, step=timedelta(hours=1)):
    out = []
    for i, r in enumerate(risks):
        out.append([e.action for e in m.on_step(r, start + i * step)])
    return out


def test_one_step_above_threshold_does_not_alarm_two_do():
    m = AlarmMachine(P)
    assert run(m, [0.6, 0.3, 0.6]) == [[], [], []]
    assert m.s.level == "watch"  # 0.6 >= 0.8 x threshold: shown, not alarmed
    assert run(m, [0.6]) == [["raised"]] and m.s.level == "alarm" and m.s.state == "active"


def test_hysteresis_holds_the_alarm_until_risk_falls_below_the_band():
    m = AlarmMachine(P)
    run(m, [0.6, 0.6])
    assert run(m, [0.47]) == [[]] and m.s.level == "alarm"  # inside the band
    assert run(m, [0.44]) == [["resolved"]] and m.s.level == "watch"
    assert run(m, [0.1]) == [[]] and m.s.level == "none"


def test_band_values_neither_reset_nor_grow_the_persistence_count():
    m = AlarmMachine(P)
    assert run(m, [0.55, 0.48, 0.55]) == [[], [], ["raised"]]


def test_escalation_after_persistence_and_on_a_high_risk():
    m = AlarmMachine(P)
    assert run(m, [0.6, 0.6, 0.6, 0.6]) == [[], ["raised"], [], ["escalated"]]
    m2 = AlarmMachine(P)
    assert run(m2, [0.6, 0.75]) == [[], ["raised", "escalated"]]
    assert m2.s.level == "escalated"


def test_escalation_reactivates_an_acknowledged_alarm():
    m = AlarmMachine(P)
    run(m, [0.6, 0.6])
    m.acknowledge("nurse a", T0)
    assert m.s.state == "acknowledged" and m.s.acknowledged_by == "nurse a"
    assert run(m, [0.8]) == [["escalated"]] and m.s.state == "active"


def test_silence_expires_into_a_re_alarm_if_still_raised():
    m = AlarmMachine(P)
    run(m, [0.6, 0.6])
    ev = m.silence("nurse b", 120, T0)
    assert ev.action == "silenced" and ev.by == "nurse b" and ev.silence_seconds == 120
    assert m.tick(T0 + timedelta(seconds=119)) == []
    (re,) = m.tick(T0 + timedelta(seconds=120))
    assert re.action == "re-alarmed" and re.by == "system" and m.s.state == "active"


def test_actions_that_do_not_apply_are_refused_with_a_reason():
    m = AlarmMachine(P)
    with pytest.raises(ActionRefused, match="nothing to acknowledge"):
        m.acknowledge("n", T0)
    with pytest.raises(ActionRefused, match="nothing to silence"):
        m.silence("n", 60, T0)
    run(m, [0.6, 0.6])
    with pytest.raises(ActionRefused, match="silence must be"):
        m.silence("n", 601, T0)
    with pytest.raises(ActionRefused, match="feedback must be"):
        m.feedback("n", "meh", None, T0)
    ev = m.feedback("n", "false_alarm", "patient was moving", T0)
    assert ev.feedback == "false_alarm" and ev.note == "patient was moving" and m.s.level == "alarm"


def test_insufficient_data_neither_raises_nor_resolves():
    m = AlarmMachine(P)
    assert run(m, [0.6, None, 0.6]) == [[], [], ["raised"]]
    assert run(m, [None, None]) == [[], []] and m.s.level == "alarm"


risks = st.lists(st.one_of(st.none(), st.floats(0, 1)), max_size=60)


@settings(max_examples=400, deadline=None)
@given(risks, st.lists(st.sampled_from(["ack", "silence", "tick", "none"]), max_size=60))
def test_alarm_invariants_hold_for_any_risk_sequence_and_nurse_actions(seq, actions):
    m = AlarmMachine(P)
    scored: list[float] = []
    now = T0
    raised = resolved = 0
    for i, r in enumerate(seq):
        now += timedelta(minutes=30)
        before = m.s
        events = m.on_step(r, now)
        if r is not None:
            scored.append(r)
        for e in events:
            assert e.by == "system" and e.reason
            if e.action == "raised":
                raised += 1
                assert len(scored) >= P.min_steps
                assert all(x >= P.threshold - P.hysteresis for x in scored[-P.min_steps :])
                assert r is not None and r >= P.threshold
            if e.action == "resolved":
                resolved += 1
                assert r is not None and r < P.threshold - P.hysteresis
                assert RANK[before.level] >= RANK["alarm"]
        if r is None and not any(e.action == "re-alarmed" for e in events):
            assert (m.s.level, m.s.above) == (before.level, before.above)
        assert m.s.level in RANK
        a = actions[i] if i < len(actions) else "none"
        try:
            if a == "ack":
                m.acknowledge("n", now)
            elif a == "silence":
                m.silence("n", 60, now)
            elif a == "tick":
                m.tick(now + timedelta(seconds=61))
        except ActionRefused:
            assert RANK[m.s.level] < RANK["alarm"] or m.s.state == "acknowledged"
    alarming = RANK[m.s.level] >= RANK["alarm"]
    assert raised == resolved + int(alarming)
