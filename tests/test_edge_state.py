"""The observable gateway state the nurse terminal reads."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from contracts.news2 import News2 as News2Snapshot
from edge_agent.state import GatewayState


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t


def test_snapshot_reports_reading_age_risk_alarm_and_gateway_health():
    clock = Clock()
    st = GatewayState("gw1", ["b1", "b2"], clock=clock)
    changes = st.changes()
    obs = datetime(2020, 5, 1, tzinfo=UTC)
    st.record_reading("b1", "s1", obs, {"HR": 80.0, "O2Sat": None})
    clock.t += timedelta(seconds=7)
    st.record_risk(
        "b1",
        window_end=obs,
        risk=0.4,
        threshold=0.3,
        observed=20,
        insufficient=False,
        news2=News2Snapshot(3, "low", {"hr": 0}, ("temp",)),
    )
    st.record_alarm(
        "b1", level="alarm", state="silenced", silenced_until=clock.t + timedelta(seconds=60)
    )
    st.set_broker(True)
    st.set_outbox(3)
    st.set_model("gru", "1.0")
    st.set_link("b2", "stale")
    st.count("frames_bad", 2)
    snap = st.snapshot()
    b1 = snap.bed("b1")
    assert b1.vitals["HR"].value == 80.0 and b1.vitals["HR"].age_seconds == 7.0
    assert b1.vitals["O2Sat"].value is None and b1.vitals["Temp"].age_seconds is None
    assert b1.risk == 0.4 and b1.risk_history[-1].risk == 0.4 and b1.news2.total == 3
    assert b1.alarm_level == "alarm" and b1.silenced_seconds_left == 60.0
    assert b1.model_version == "1.0" and snap.model_name == "gru"
    assert snap.serial_link == "stale" and snap.buffering and snap.outbox == 3
    assert snap.counters["frames_bad"] == 2
    kinds = []
    while not changes.empty():
        kinds.append(changes.get_nowait().kind)
    assert kinds == ["reading", "risk", "alarm", "broker", "outbox", "model", "link"]


def test_snapshot_is_consistent_under_concurrent_writers():
    st = GatewayState("gw1", ["b1"])
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            st.record_reading("b1", "s", datetime.now(UTC), {"HR": float(i % 200 + 30)})
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(200):
            snap = st.snapshot()
            b = snap.bed("b1")
            assert b.vitals["HR"].history == tuple(b.vitals["HR"].history)
            assert b.readings >= len(b.vitals["HR"].history)
    finally:
        stop.set()
        t.join()
