"""Issue 18, what the first hardening pass left open: on REAL files, a REAL Mosquitto
and a REAL hub.

- A gateway that boots on a full disk (a 2 MiB tmpfs filled before it starts) or on a
  read-only store folder starts anyway, in the storage-failing mode: two septic beds
  raise their alarms, the nurse's state and `vigil.status/1` say storage failing, and
  the hub's `vigil hub fleet --json` shows it; when space returns (or the folder is
  writable again) the store opens, what was kept is written, and the fleet says ok.
- The gateway's clock window for commands: a gateway whose clock is 3 days behind
  refuses the hub's commands `stale_or_future` by default (counted), and reads them
  with `max_message_ahead_seconds` widened.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloud_hub.ingest import HubWorker
from cloud_hub.settings import HubSettings
from cloud_hub.store import migrate, open_engine
from contracts import topics
from contracts.messages import Command
from contracts.timeutil import utc_now
from edge_agent.gateway import Gateway
from edge_agent.privacy import generated_secret
from tests.support.broker import Subscriber, needs_mosquitto
from tests.support.chaos import Rig, check_exactly_once
from tests.support.edge import edge_settings
from tests.support.hub import Publisher
from tests.support.storage import (
    BEDS,
    Disk,
    alarms_on,
    feed,
    raised,
    statuses,
)
from tests.support.waiting import wait_until
from vigil_cli.main import app
from vigil_cli.procs import vigil_argv

pytestmark = needs_mosquitto


def fleet_json(url: str) -> dict[str, dict]:
    res = CliRunner().invoke(app, ["hub", "fleet", "--json", "--db", url])
    assert res.exit_code == 0, res.output
    return {r["gw"]: r for r in json.loads(res.output)}


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["full", "read_only"])
def test_gateway_boots_on_a_failing_disk_alarms_and_the_fleet_shows_it(
    broker,
    tmpfs_disk: Disk,
    septic_beds: dict,
    healthy_run: dict,
    tmp_path: Path,
    fault: str,
) -> None:
    gw_id = f"gw-boot-{uuid.uuid4().hex[:6]}"
    # A gateway installed before: its stay secret is on the disk (never made up anew).
    generated_secret(tmpfs_disk.path)
    if fault == "full":
        tmpfs_disk.fill()
    else:
        _remount(tmpfs_disk.path, "ro")
    url = f"sqlite:///{tmp_path}/hub.db"
    engine = open_engine(url)
    migrate(engine)
    hub = HubWorker(
        HubSettings(mqtt_port=broker.port, worker_id=uuid.uuid4().hex[:8], batch_ms=20), engine
    ).start(migrate_store=False)
    s = edge_settings(
        tmpfs_disk.path, port=broker.port, gateway_id=gw_id, beds=BEDS, store="gw.sqlite",
        mqtt={"status_interval_seconds": 1.0},
    )  # fmt: skip
    sub = Subscriber(broker.port, f"vigil/v1/gw/{gw_id}/#")
    gw = Gateway(s)  # boots: before, a failing store raised here and no bed was read
    try:
        assert hub.wait_ready()
        problem = "full" if fault == "full" else "read_only"
        assert not gw.store.opened and gw.store.failing == problem
        snap = gw.state.snapshot()
        assert snap.storage == problem and snap.storage_failing
        assert any(e.kind == "storage" and "STORAGE FAILING" in e.text for e in snap.events)
        gw.start(sources=False)
        wait_until(lambda: gw.publisher.connected, 10, "gateway connected")
        feed(gw, septic_beds)
        # Every alarm raised as on a healthy disk, shown and on MQTT.
        assert raised(gw) == healthy_run["raised"]
        wait_until(
            lambda: {m.bed for m in alarms_on(sub, "model") if m.action == "raised"} == set(BEDS),
            10,
            lambda: f"alarms on MQTT while the store cannot open: {alarms_on(sub)}",
        )
        wait_until(lambda: any(st.storage == problem for st in statuses(sub)), 10, "status")
        # The hub's fleet view says so (column and --json).
        # A status after the first kept writes (one a second) says how many are kept.
        wait_until(
            lambda: (
                fleet_json(url).get(gw_id, {}).get("storage") == problem
                and (fleet_json(url).get(gw_id, {}).get("storage_kept") or 0) > 0
            ),
            15,
            lambda: f"fleet: {fleet_json(url).get(gw_id)}",
        )
        row = fleet_json(url)[gw_id]
        assert f"storage {problem}" in row["faults"] and row["storage_kept"] > 0
        table = CliRunner().invoke(app, ["hub", "fleet", "--db", url]).output
        assert f"STORAGE {problem.upper()}" in table and "1 with faults" in table

        # Space returns / the folder is writable again: the store opens, the kept
        # writes are written in order, and the fleet says ok.
        if fault == "full":
            tmpfs_disk.free()
        else:
            _remount(tmpfs_disk.path, "rw")
        wait_until(lambda: gw.store.failing is None, 15, "storage recovered")
        assert gw.store.opened
        wait_until(lambda: gw.state.snapshot().storage == "ok", 5, "state storage ok")
        assert gw.publisher.wait_idle(15)
        assert len(gw.store.rows("steps")) == healthy_run["steps"]
        assert len(gw.store.rows("risk")) == healthy_run["risk"]
        assert len(gw.store.rows("alarms")) == healthy_run["alarms"]
        for bed in BEDS:
            starts = [r["step_start"] for r in gw.store.rows("steps", "bed = ?", [bed])]
            assert starts == sorted(starts)
        c = gw.store.storage_counters
        assert c["dropped"] == 0 and c["flush_errors"] == 0
        wait_until(
            lambda: (
                fleet_json(url)[gw_id]["storage"] == "ok" and fleet_json(url)[gw_id]["faults"] == []
            ),
            15,
            lambda: f"fleet after recovery: {fleet_json(url).get(gw_id)}",
        )
        # The real file holds what the beds produced (opened by another reader).
        assert (tmpfs_disk.path / "gw.sqlite").stat().st_size > 0
    finally:
        gw.stop()
        sub.close()
        hub.stop(drain_seconds=1, retire=True)
        p = Publisher(broker.port)
        p.send(topics.status(gw_id), b"", retain=True)
        p.close()
        engine.dispose()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ahead_days", [None, 4])
def test_gateway_clock_days_behind_refuses_commands_unless_the_window_is_widened(
    broker, tmp_path: Path, ahead_days: int | None
) -> None:
    gw_id = f"gw-clock-{uuid.uuid4().hex[:6]}"
    extra = {} if ahead_days is None else {"max_message_ahead_seconds": ahead_days * 86400.0}
    s = edge_settings(tmp_path, port=broker.port, gateway_id=gw_id, beds=("b1",), **extra)
    gw = Gateway(s, clock=lambda: utc_now() - timedelta(days=3))
    gw.start(sources=False)
    pub = Publisher(broker.port)
    try:
        wait_until(gw.publisher.subscribed.is_set, 10, "gateway subscribed (SUBACK)")
        cmd = Command(gw="hub", command="report_status")  # stamped by the hub's clock
        pub.send(topics.cmd(gw_id), cmd.to_json())
        wait_until(lambda: gw.publisher.counters["received"] >= 1, 10, "command delivered")
        wait_until(
            lambda: (
                gw.publisher.refusals.get("stale_or_future", 0)
                + sum(e.kind == "command" for e in gw.state.snapshot().events)
                >= 1
            ),
            10,
            "command handled",
        )
        wait_until(lambda: gw.store.rows("inbox"), 5, "the command in the inbox")
        commands = [e for e in gw.state.snapshot().events if e.kind == "command"]
        inbox = gw.store.rows("inbox")
        if ahead_days is None:
            assert gw.publisher.refusals == {"stale_or_future": 1}
            assert commands == []
            gw._mirror_counters()
            assert gw.state.snapshot().counters.get("mqtt_invalid_stale_or_future") == 1
            assert [r["valid"] for r in inbox] == [0]
            assert "ahead of the receiver's clock" in inbox[0]["reason"]
        else:
            assert gw.publisher.refusals == {}
            assert [e.text for e in commands] == ["command report_status from hub"]
            assert [r["valid"] for r in inbox] == [1]
    finally:
        pub.close()
        gw.stop()


# -- the hub's store full or read-only while it runs ----------------------------------
@pytest.fixture
def hub_disk(tmp_path: Path) -> Iterator[Disk]:
    """A 16 MiB tmpfs for the hub's SQLite store (room for a few minutes of a gateway)."""
    d = tmp_path / "hubdisk"
    d.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in this sandbox: {r.stderr.strip()}")
    try:
        yield Disk(d)
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", ["full", "read_only"])
def test_hub_store_full_or_read_only_acks_nothing_unstored_and_loses_nothing(
    tmp_path: Path, hub_disk: Disk, fault: str
) -> None:
    """A real gateway (`vigil edge run`) and a real hub (`vigil hub serve`) on a real
    Mosquitto, the hub's SQLite file on its own tmpfs. The disk fills up (or turns
    read-only) while they run: the hub says its store fails (log), commits nothing and
    acknowledges nothing, so the broker keeps the messages for the hub's persistent
    session. Read-only: the hub is even killed meanwhile and started again after. Once
    the store takes writes again, every message the gateway recorded is in the hub
    exactly once."""
    rig = Rig(tmp_path / "rig")
    rig.hub_db = hub_disk.path / "hub.db"
    log = rig.folder / "hub.log"
    try:
        rig.start_hub()
        rig.start_gateway()
        rig.wait_hub_grows(15)
        hub_disk.fill()
        wait_until(lambda: "event=store_retry" in log.read_text(), 30, "the hub to see it")
        time.sleep(4)  # the gateway publishes on; the hub stores (and acks) none of it
        text = log.read_text()
        assert "transient=True" in text and "event=store_retry" in text
        if fault == "read_only":
            # The kernel refuses to remount a file system read-only while the hub holds
            # its files open for writing (EBUSY): so the hub is killed while its store
            # fails (what it held unacknowledged goes back to the broker's queue), the
            # store turns read-only, and a hub started on it refuses with one line
            # before it subscribes (acknowledges nothing).
            rig.kill_hub()
            hub_disk.free()
            _remount(hub_disk.path, "ro")
            r = subprocess.run(
                vigil_argv(
                    "hub", "serve", "--host", "127.0.0.1", "--port", str(rig.broker.port),
                    "--db", f"sqlite:///{rig.hub_db}", "--worker-id", "chaos-hub",
                ),
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert r.returncode != 0 and "Traceback" not in r.stderr
            assert "Read-only file system" in r.stderr, r.stderr
            _remount(hub_disk.path, "rw")
            rig.start_hub()
        else:
            hub_disk.free()
        rig.wait_hub_grows(15, timeout=90)
        rig.drain(timeout=60)
        rig.stop_hub()
        got = check_exactly_once(rig.gw_db, rig.hub_db)
        assert got["risk"] >= 30
    finally:
        rig.close()
        if fault == "read_only":
            with contextlib.suppress(subprocess.CalledProcessError):
                _remount(hub_disk.path, "rw")


# -- gateway faults from the status to the fleet (SQLite and PostgreSQL) --------------
def test_thread_faults_and_storage_reach_the_fleet_registry(engine) -> None:
    from cloud_hub.fleet import fleet, render_table
    from cloud_hub.store import Accepted, write_batch
    from tests.support.hub import status

    now = utc_now()
    faulty = status(gw="gwF").model_copy(
        update={
            "storage": "read_only",
            "storage_kept": 12,
            "storage_dropped": 3,
            "thread_restarts": 7,
            "threads_failed": 1,
            "failed_threads": ["mllp-0.0.0.0:2575"],
        }
    )
    write_batch(engine, [Accepted(faulty, now)])
    (g,) = fleet(engine)
    assert (g.storage, g.storage_kept, g.storage_dropped) == ("read_only", 12, 3)
    assert (g.thread_restarts, g.threads_failed, g.failed_threads) == (
        7,
        1,
        ("mllp-0.0.0.0:2575",),
    )
    d = g.as_json()
    assert d["faults"] == [
        "storage read_only",
        "3 writes dropped",
        "1 threads failed (mllp-0.0.0.0:2575)",
    ]
    assert json.dumps(d)  # the --json row is plain JSON
    text = render_table([g], now=now)
    assert "STORAGE READ_ONLY" in text and "1 with faults" in text
    # A healthy status clears it; an 'offline' last will leaves the last report as is.
    write_batch(engine, [Accepted(status(gw="gwF"), now + timedelta(seconds=1))])
    (g,) = fleet(engine)
    assert g.faults == [] and g.storage == "ok" and g.failed_threads == ()
    assert "with faults" not in render_table([g], now=now)


def test_a_thread_the_supervisor_gave_up_is_in_the_gateways_status(tmp_path: Path) -> None:
    """The supervisor's counters and the failed thread's name, in `vigil.status/1`."""
    import threading

    gw = Gateway(edge_settings(tmp_path, port=1, gateway_id="gw-sup"))
    try:
        gw.supervisor.max_restarts = 1
        gw.supervisor.backoff_min = gw.supervisor.backoff_max = 0.01

        def boom() -> None:
            raise RuntimeError("bug")

        gw.supervisor.spawn("doomed", boom)
        wait_until(lambda: gw.supervisor.failed() == ["doomed"], 5, "given up")
        st = gw.publisher._status("online")
        assert (st.thread_restarts, st.threads_failed, st.failed_threads) == (1, 1, ["doomed"])
        # ... and it survives the contract the hub parses it with.
        from contracts.messages import parse_message

        back = parse_message(st.to_json())
        assert back.failed_threads == ["doomed"] and back.threads_failed == 1
        assert threading.active_count() >= 1
    finally:
        gw._stop.set()
        gw.store.close()


def test_the_clock_window_settings_take_an_environment_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_EDGE__MAX_MESSAGE_AHEAD_SECONDS", "345600")
    s = edge_settings(tmp_path, port=1)
    assert s.max_message_ahead_seconds == 345600.0 and s.max_message_age_seconds == 365 * 86400
    monkeypatch.setenv("VIGIL_EDGE__MAX_MESSAGE_AHEAD_SECONDS", "0")
    with pytest.raises(ValueError, match="max_message_ahead_seconds"):
        edge_settings(tmp_path, port=1)


@pytest.mark.timeout(120)
def test_hub_store_full_metrics_say_so_and_nothing_unstored_is_acked(
    broker, hub_disk: Disk
) -> None:
    """In-process hub on a full SQLite tmpfs: `vigil_hub_store_ok` 0, the retry delay
    and the store errors in the metrics, nothing counted stored; space back: every
    message stored exactly once, `vigil_hub_store_ok` 1."""
    from sqlalchemy import func, select

    from cloud_hub.store.models import VitalsSummary
    from tests.support.hub import vitals

    url = f"sqlite:///{hub_disk.path}/hub.db"
    engine = open_engine(url)
    migrate(engine)
    gw_id = f"gw-hf-{uuid.uuid4().hex[:6]}"
    hub = HubWorker(
        HubSettings(mqtt_port=broker.port, worker_id=uuid.uuid4().hex[:8], batch_ms=20), engine
    ).start(migrate_store=False)
    pub = Publisher(broker.port)

    def sample(name: str) -> float:
        for metric in hub.metrics.registry.collect():
            for smp in metric.samples:
                if smp.name == name:
                    return smp.value
        return 0.0

    def stored() -> int:
        with engine.connect() as c:
            q = select(func.count()).select_from(VitalsSummary).where(VitalsSummary.gw == gw_id)
            return c.execute(q).scalar_one()

    try:
        assert hub.wait_ready()
        pub.send_messages([vitals(gw=gw_id, hour=i / 12) for i in range(50)])
        wait_until(lambda: stored() == 50, 15, "the first 50 stored")
        assert sample("vigil_hub_store_ok") == 1
        hub_disk.fill()
        before = hub.totals["stored"]
        pub.send_messages([vitals(gw=gw_id, hour=50 + i / 12) for i in range(150)])
        wait_until(lambda: sample("vigil_hub_store_errors_total") >= 2, 20, "store errors")
        assert sample("vigil_hub_store_ok") == 0
        assert sample("vigil_hub_store_retry_delay_seconds") > 0
        assert hub.totals["stored"] == before  # nothing counted stored (nor acked)
        hub_disk.free()
        wait_until(lambda: stored() == 200, 40, lambda: f"{stored()} of 200 stored")
        wait_until(lambda: sample("vigil_hub_store_ok") == 1, 5, "store ok again")
        assert hub.totals["dead"] == 0
    finally:
        pub.close()
        hub.stop(drain_seconds=1, retire=True)
        engine.dispose()
