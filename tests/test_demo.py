"""`vigil demo --headless` end to end: a real broker (Mosquitto, or the in-process amqtt
that the demo falls back to where Mosquitto is not installed), the hub as a child
process, a gateway replaying real ICU stays with the committed bundle; events reach the
hub's SQLite store, and SIGINT stops everything with no process left behind."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support.broker import needs_mosquitto
from tests.support.data import needs_physionet


def _query(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _wait_scored(db: Path, proc: subprocess.Popen, n: int, timeout: float) -> int:
    sql = "SELECT count(*) FROM risk_events WHERE risk IS NOT NULL"
    return _wait_count(db, proc, sql, n, timeout)


def _wait_count(db: Path, proc: subprocess.Popen, sql: str, n: int, timeout: float) -> int:
    """Poll the hub store until `sql` counts `n` (the demo must stay up meanwhile)."""
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"demo exited early with {proc.returncode}: {out[-3000:]}")
        if db.is_file():
            try:
                got = _query(db, sql)[0][0]
            except sqlite3.OperationalError:  # not migrated yet
                got = 0
            if got >= n:
                return got
        time.sleep(0.5)
    return got


@pytest.mark.timeout(240)
@needs_physionet
@pytest.mark.parametrize("broker", [pytest.param("mosquitto", marks=needs_mosquitto), "amqtt"])
def test_headless_demo_fills_the_hub_store_and_stops_cleanly_on_sigint(
    tmp_path: Path, broker: str
) -> None:
    work = tmp_path / "demo"
    # Real stays, as the README promises: the demo imports the table from the shared
    # archive when it is missing (the archive's absence skips the test, not a fallback).
    stays = "auto"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vigil_cli.main",
            "demo",
            "--headless",
            "--beds",
            "3",
            "--speed",
            "1800",
            "--every",
            "1",
            "--stays",
            stays,
            "--workdir",
            str(work),
            "--broker",
            broker,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "VIGIL_LOG_LEVEL": "WARNING"},
    )
    db = work / "hub.db"
    try:
        scored = _wait_scored(db, proc, 6, 120)
        assert scored >= 6, f"only {scored} scored risk events reached the hub store"
        # README: a septic bed's risk rises past the threshold and its alarm is raised.
        raised = _wait_count(
            db,
            proc,
            "SELECT count(*) FROM alarms WHERE action='raised' AND risk IS NOT NULL",
            1,
            90,
        )
        assert raised >= 1, "no risk alarm was raised in the demo"
        children = psutil.Process(proc.pid).children(recursive=True)
        names = {c.name() for c in children}
        if broker == "mosquitto":
            assert any("mosquitto" in n for n in names), names
            assert len(children) >= 2  # broker and hub
        else:  # amqtt runs inside the demo process; the hub speaks MQTT 3.1.1 to it
            assert not any("mosquitto" in n for n in names), names
            assert any("--mqtt-protocol" in c.cmdline() for c in children), names
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    # Every child gone: the broker and the hub were stopped, not orphaned.
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(c.pid, c.name()) for c in left]

    # What the operator saw: one line per bed with a risk and the model's version.
    assert "bed-1" in out and "vigil-sepsis v" in out and "NEWS2" in out, out[-2000:]
    assert "stopped (hub exit 0)" in out, out[-2000:]
    assert ("in-process amqtt" in out) == (broker == "amqtt"), out[:2000]

    # The hub store holds vitals summaries, risk with the model version, a status.
    vit = _query(db, "SELECT count(*) FROM vitals_summaries WHERE gw='demo-ward'")[0][0]
    risk = _query(db, "SELECT DISTINCT model_name, model_version FROM risk_events")
    status = _query(db, "SELECT state FROM gateway_status ORDER BY id")
    assert vit >= 6
    assert risk and all(name and version and name != "none" for name, version in risk), risk
    assert status[-1][0] == "offline"  # the clean stop published its offline status
    beds = {b for (b,) in _query(db, "SELECT DISTINCT bed FROM risk_events")}
    assert beds == {"bed-1", "bed-2", "bed-3"}

    # A clean stop drains the gateway's outbox: every risk and alarm event the
    # gateway recorded is in the hub exactly once, and nothing is left to send.
    gw = work / "gateway.sqlite"
    gw_risk = {r for (r,) in _query(gw, "SELECT event_id FROM risk")}
    gw_alarm = {r for (r,) in _query(gw, "SELECT event_id FROM alarms")}
    hub_risk = [r for (r,) in _query(db, "SELECT event_id FROM risk_events")]
    hub_alarm = [r for (r,) in _query(db, "SELECT event_id FROM alarms")]
    assert gw_risk <= set(hub_risk) and len(hub_risk) == len(set(hub_risk))
    assert gw_alarm and gw_alarm <= set(hub_alarm)  # alarms were raised, and all arrived
    assert _query(gw, "SELECT count(*) FROM outbox")[0][0] == 0
    assert _query(db, "SELECT count(*) FROM dead_letters")[0][0] == 0


def test_demo_falls_back_to_the_in_process_broker_without_mosquitto(tmp_path, monkeypatch):
    from vigil_cli import broker as b

    monkeypatch.setattr(b, "mosquitto_path", lambda: None)
    with pytest.raises(RuntimeError, match="mosquitto is not installed"):
        b.embedded_broker(tmp_path, prefer="mosquitto")
    got = b.embedded_broker(tmp_path, prefer="auto")
    try:
        assert got.kind == "amqtt" and got.running
    finally:
        got.stop()
