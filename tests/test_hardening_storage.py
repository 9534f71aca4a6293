"""Issue 18, item 3: a failing disk never silences a bed (the patient-facing path first).

On REAL files: the gateway's store on a 2 MiB tmpfs of its own (mounted here; we run
as root), filled up to the last byte while two septic beds (simulated monitors) send;
a REAL Mosquitto with a subscriber. With the disk full the alarms are raised as with a
healthy disk, the nurse's state and the `vigil.status/1` on MQTT say storage failing,
the messages still reach the broker; when space returns the state clears and what was
kept in memory reaches the store and the broker (counts compared). A store locked by
another process beyond its timeout: the alarm path does not wait for it.

Order check: every test records, at each step written to the store, whether that
step's risk and alarm were already shown (`scored_before_stored`): moving scoring back
after storage in `Gateway._on_step` fails them.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from contracts import topics
from contracts.messages import Alarm, Risk, Vitals, parse_message
from edge_agent.gateway import Gateway
from edge_agent.store import Store, storage_problem
from edge_agent.ui.view import GatewayView
from edge_agent.ui.widgets.status_line import status_text
from tests.support.broker import Subscriber
from tests.support.edge import edge_settings
from tests.support.storage import (
    BEDS,
    GW,
    T0,
    Disk,
    alarms_on,
    feed,
    order_spy,
    raised,
    scored_before_stored,
    statuses,
)
from tests.support.waiting import wait_until


def test_full_disk_alarms_still_raised_status_says_storage_failing_and_data_kept(
    broker, tmpfs_disk: Disk, septic_beds: dict, healthy_run: dict, tmp_path: Path
) -> None:
    assert healthy_run["scored_first"]
    assert healthy_run["raised"][("bed-1", "raised")] == 1
    assert healthy_run["raised"][("bed-2", "raised")] == 1
    s = edge_settings(
        tmpfs_disk.path, port=broker.port, gateway_id=GW, beds=BEDS, store="gw.sqlite",
        mqtt={"status_interval_seconds": 1.0},
    )  # fmt: skip
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    gw = Gateway(s)
    seen = order_spy(gw)
    gw.start(sources=False)
    try:
        wait_until(lambda: gw.publisher.connected, 10, "gateway connected")
        feed(gw, septic_beds, 0, 90)  # three healthy hours first
        assert gw.store.failing is None
        tmpfs_disk.fill()
        t0 = time.monotonic()
        feed(gw, septic_beds, 90)
        fed_in = time.monotonic() - t0

        # The disk is full: every alarm is raised as on a healthy disk, and shown.
        assert gw.store.failing == "full"
        assert raised(gw) == healthy_run["raised"]
        snap = gw.state.snapshot()
        assert snap.storage == "full" and snap.storage_failing
        assert {b.alarm_level for b in snap.beds} == {"escalated"}
        assert any(e.kind == "storage" and "STORAGE FAILING" in e.text for e in snap.events)
        assert scored_before_stored(seen)
        assert fed_in < 10, f"the full disk slowed the beds down: {fed_in:.1f} s"
        # ... on MQTT too: a status saying so, and the alarms themselves (sent directly).
        wait_until(
            lambda: any(st.storage == "full" for st in statuses(sub)), 10, "status storage=full"
        )
        wait_until(
            lambda: {m.bed for m in alarms_on(sub, "model") if m.action == "raised"} == set(BEDS),
            10,
            lambda: f"alarms on MQTT while the disk is full: {alarms_on(sub)}",
        )
        gw._mirror_counters()
        view = GatewayView(
            gw=GW, broker_connected=True, outbox=0, serial_link="ok", model_name="m",
            model_version="1", now=T0, counters=dict(gw.state.snapshot().counters),
            storage="full",
        )  # fmt: skip
        assert status_text(view, "nurse").startswith("⚠ STORAGE FAILING (disk full)")
        kept_now = gw.store.kept()[0]
        assert kept_now > 0 and gw.store.storage_counters["dropped"] == 0

        # Space returns: the state clears and what was kept reaches the store, in order.
        tmpfs_disk.free()
        wait_until(lambda: gw.store.failing is None, 10, "storage recovered")
        wait_until(lambda: gw.state.snapshot().storage == "ok", 5, "state storage ok")
        wait_until(
            lambda: statuses(sub) and statuses(sub)[-1].storage == "ok", 10, "status storage=ok"
        )
        assert gw.publisher.wait_idle(15)
        assert len(gw.store.rows("steps")) == healthy_run["steps"]
        assert len(gw.store.rows("risk")) == healthy_run["risk"]
        assert len(gw.store.rows("alarms")) == healthy_run["alarms"]
        c = gw.store.storage_counters
        assert c["dropped"] == 0 and c["flush_errors"] == 0 and c["failures"] == 1
        assert c["flushed"] >= kept_now
        # Steps stored in observation order per bed (kept writes replayed in order).
        for bed in BEDS:
            starts = [r["step_start"] for r in gw.store.rows("steps", "bed = ?", [bed])]
            assert starts == sorted(starts)
        # Every message reached the broker (at least once; the hub de-duplicates).
        n_msgs = healthy_run["risk"] * 2 + healthy_run["alarms"]
        wait_until(
            lambda: len(_unique(sub, ("/risk", "/vitals", "/alarm"))) == n_msgs,
            15,
            lambda: f"{len(_unique(sub, ('/risk', '/vitals', '/alarm')))} of {n_msgs} on MQTT",
        )
        # ... and the gateway filed every one as sent (resendable), none lost.
        sent = gw.store.rows("outbox_sent")
        gw_topics = [r for r in sent if "/bed/" in r["topic"]]
        assert len({parse_message(r["payload"]).event_id for r in gw_topics}) == n_msgs
    finally:
        gw.stop()
        sub.close()


def _unique(sub: Subscriber, parts: tuple[str, ...]) -> set:
    out = set()
    for t, p, _ in list(sub.messages):
        if any(x in t for x in parts):
            m = parse_message(p)
            assert isinstance(m, Risk | Vitals | Alarm)
            out.add(m.event_id)
    return out


def test_store_locked_by_another_process_never_delays_an_alarm(
    tmpfs_disk: Disk, septic_beds: dict, healthy_run: dict
) -> None:
    """A store locked beyond its timeout (5 s per write): scoring and alarms never wait."""
    s = edge_settings(tmpfs_disk.path, port=1, gateway_id=GW, beds=BEDS)
    gw = Gateway(s)
    seen = order_spy(gw)
    other = sqlite3.connect(s.store_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    try:
        threads = [  # one thread per bed, as the gateway runs them
            threading.Thread(target=feed, args=(gw, {bed: septic_beds[bed]}), daemon=True)
            for bed in BEDS
        ]
        for t in threads:
            t.start()
        # The first step is shown while its write still waits for the lock (held by
        # `other` until below): shown before stored, whatever the machine's speed.
        wait_until(
            lambda: all(b.risk_history for b in gw.state.snapshot().beds), 30, "first steps shown"
        )
        assert other.in_transaction  # the lock was held all along
        for t in threads:
            t.join(60)
        assert raised(gw) == healthy_run["raised"]
        assert gw.store.failing == "locked" and gw.state.snapshot().storage == "locked"
        assert scored_before_stored(seen)
        other.execute("ROLLBACK")
        assert gw.store.retry() and gw.store.failing is None
        assert len(gw.store.rows("risk")) == healthy_run["risk"]
        assert len(gw.store.rows("alarms")) == healthy_run["alarms"]
        assert gw.store.outbox_size() == healthy_run["outbox"]
    finally:
        other.close()
        gw.store.close()


def test_memory_bound_drops_the_oldest_and_counts_them(tmpfs_disk: Disk) -> None:
    """Kept writes are bounded: the oldest go first, counted, and the status says so."""
    store = Store(tmpfs_disk.path / "s.sqlite", max_kept=50)
    changes: list[str | None] = []
    store.on_storage = changes.append
    try:
        tmpfs_disk.fill()
        ids = [store.enqueue(f"vigil/v1/gw/g/bed/b/risk/{i}", b"x" * 100) for i in range(80)]
        assert ids == [0] * 80  # none stored, none raised
        assert store.failing == "full" and changes == ["full"]
        assert store.kept()[0] == 50 and store.storage_counters["dropped"] == 30
        assert not store.retry()  # still full
        tmpfs_disk.free()
        assert store.retry() and changes == ["full", None]
        topics_kept = [r.topic for r in store.pending(0, 100)]
        assert topics_kept == [f"vigil/v1/gw/g/bed/b/risk/{i}" for i in range(30, 80)]
    finally:
        store.close()


def test_acks_and_refusals_on_a_full_disk_are_filed_on_recovery(tmpfs_disk: Disk) -> None:
    store = Store(tmpfs_disk.path / "s.sqlite")
    try:
        rows = [store.enqueue(topics.risk("g", "b"), b"m%d" % i) for i in range(3)]
        assert all(rows)
        tmpfs_disk.fill()
        store.acked(rows[:2])  # the broker's PUBACKs: cannot be filed now, nor raise
        store.reject(rows[2], "not authorised")
        assert store.failing == "full" and store.outbox_size() == 3
        tmpfs_disk.free()
        assert store.retry()
        assert store.outbox_size() == 0 and store.sent_size() == 2
        assert [r["reason"] for r in store.rows("outbox_rejected")] == ["not authorised"]
    finally:
        store.close()


def test_storage_problem_tells_the_disk_from_a_bad_row(tmp_path: Path) -> None:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    con.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as e:
        con.execute("INSERT INTO t VALUES (1)")
    assert storage_problem(e.value) is None  # a bad row: raised, never kept forever
    assert storage_problem(OSError(errno.ENOSPC, "full")) == "full"
    assert storage_problem(OSError(errno.EROFS, "ro")) == "read_only"
    ro = tmp_path / "ro.sqlite"
    sqlite3.connect(ro).execute("CREATE TABLE t (k)").connection.commit()
    con = sqlite3.connect(f"file:{ro}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as e:
        con.execute("INSERT INTO t VALUES (1)")
    assert storage_problem(e.value) == "read_only"
