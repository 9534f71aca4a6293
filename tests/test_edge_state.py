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
    """Every snapshot's fields belong to one moment: writer k's n-th reading carries the
    value n in every vital and the observation time T0 + n s, so in any snapshot a bed's
    reading count, last observation time, every vital's value, obs_time and the last
    entry of every history must name the same n. A snapshot built without the lock
    mixes moments (a vital of reading n beside one of n-1) and this fails."""
    import sys

    from contracts.vitals import VITAL_NAMES

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    beds = ["b1", "b2", "b3"]
    st = GatewayState("gw1", beds)
    stop = threading.Event()
    written = dict.fromkeys(beds, 0)

    def writer(bed: str) -> None:
        n = 0
        while not stop.is_set() and n < 200_000:
            n += 1
            values = dict.fromkeys(VITAL_NAMES, float(n))
            st.record_reading(bed, "s", t0 + timedelta(seconds=n), values)
            written[bed] = n

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    threads = [threading.Thread(target=writer, args=(b,)) for b in beds]
    for t in threads:
        t.start()
    checked = 0
    try:
        for _ in range(3000):
            snap = st.snapshot()
            for b in snap.beds:
                n = b.readings
                if n == 0:
                    continue
                checked += 1
                assert b.last_obs_time == t0 + timedelta(seconds=n), (b.bed, n, b.last_obs_time)
                for name in VITAL_NAMES:
                    v = b.vitals[name]
                    assert v.value == float(n), (b.bed, name, n, v.value)
                    assert v.obs_time == b.last_obs_time, (b.bed, name, n, v.obs_time)
                    assert v.history[-1] == float(n), (b.bed, name, n, v.history[-1])
                    assert len(v.history) == min(n, len(v.history))
                    # the history is the run of readings up to n, oldest first
                    assert v.history == tuple(
                        float(k) for k in range(n - len(v.history) + 1, n + 1)
                    )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        sys.setswitchinterval(old)
    assert not any(t.is_alive() for t in threads)
    assert checked > 0
    assert all(written[b] > 0 for b in beds)
    final = st.snapshot()
    assert [final.bed(b).readings for b in beds] == [written[b] for b in beds]
