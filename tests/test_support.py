"""The tests' own helpers (tests/support/): a broker's config overrides, the `broker`
fixture's marker, wait_until, edge_settings."""

from __future__ import annotations

import socket

import pytest

from tests.support.broker import Mosquitto, needs_mosquitto
from tests.support.edge import edge_settings
from tests.support.waiting import wait_until


def test_overrides_change_add_and_drop_config_lines(tmp_path):
    m = Mosquitto(
        tmp_path,
        port=1234,
        max_queued_messages=10,
        set_tcp_nodelay=None,
        log_type=("error",),
        allow_zero_length_clientid=True,
    )
    lines = m.config().splitlines()
    assert lines[0] == "listener 1234 127.0.0.1"
    assert "max_queued_messages 10" in lines and "persistence false" in lines
    assert not any(line.startswith("set_tcp_nodelay") for line in lines)
    assert [line for line in lines if line.startswith("log_type")] == ["log_type error"]
    assert "allow_zero_length_clientid true" in lines


@needs_mosquitto
@pytest.mark.mosquitto(max_queued_messages=7)
def test_the_broker_fixture_takes_its_overrides_from_the_marker(broker):
    assert "max_queued_messages 7\n" in broker.conf.read_text()
    with socket.create_connection(("127.0.0.1", broker.port), timeout=2):
        pass
    port = broker.port
    broker.restart()
    assert broker.port == port and broker.proc.poll() is None


def test_wait_until_returns_true_or_fails_naming_what_it_waited_for():
    assert wait_until(lambda: True)
    with pytest.raises(AssertionError, match="waiting for the moon"):
        wait_until(lambda: False, timeout=0.1, what="the moon")
    with pytest.raises(AssertionError, match="state 3"):
        wait_until(lambda: False, timeout=0.1, what=lambda: "state 3")


def test_edge_settings_puts_the_store_in_the_folder_and_names_beds(tmp_path):
    s = edge_settings(tmp_path, port=1884, beds=["b1", "b2"], mqtt={"keepalive": 5})
    assert s.store_path == tmp_path / "gw.sqlite" and s.gateway_id == "gw-test"
    assert [b.id for b in s.beds] == ["b1", "b2"] and s.beds[0].source.port == 1
    assert (s.mqtt.port, s.mqtt.keepalive) == (1884, 5)


def _chaos_dbs(tmp_path, risk_order: list[int], alarms: int = 1):
    """A gateway's and a hub's tables as check_exactly_once reads them: 4 steps and 4
    risk events on bed-1; the hub stored the risks in `risk_order`."""
    import sqlite3

    gw_db, hub_db = tmp_path / "gw.db", tmp_path / "hub.db"
    gw, hub = sqlite3.connect(gw_db), sqlite3.connect(hub_db)
    gw.execute("CREATE TABLE steps (bed, stay, step_start)")
    gw.execute("CREATE TABLE risk (event_id, bed)")
    gw.execute("CREATE TABLE alarms (event_id, source DEFAULT 'model')")
    hub.execute("CREATE TABLE vitals_summaries (id INTEGER PRIMARY KEY, gw, bed, stay, step_start)")
    hub.execute("CREATE TABLE risk_events (id INTEGER PRIMARY KEY, gw, event_id, bed, window_end)")
    hub.execute("CREATE TABLE alarms (id INTEGER PRIMARY KEY, gw, event_id)")
    for i in range(4):
        start = f"2026-03-01 0{i}:00:00.000"
        gw.execute("INSERT INTO steps VALUES ('bed-1', 's', ?)", (start,))
        gw.execute("INSERT INTO risk VALUES (?, 'bed-1')", (f"r{i}",))
        hub.execute(
            "INSERT INTO vitals_summaries (gw, bed, stay, step_start) "
            "VALUES ('chaos-gw', 'bed-1', 's', ?)",
            (start,),
        )
    for i in risk_order:
        hub.execute(
            "INSERT INTO risk_events (gw, event_id, bed, window_end) "
            "VALUES ('chaos-gw', ?, 'bed-1', '')",
            (f"r{i}",),
        )
    for i in range(alarms):
        gw.execute("INSERT INTO alarms (event_id) VALUES (?)", (f"a{i}",))
        hub.execute("INSERT INTO alarms (gw, event_id) VALUES ('chaos-gw', ?)", (f"a{i}",))
    for c in (gw, hub):
        c.commit()
        c.close()
    return gw_db, hub_db


def test_check_exactly_once_judges_order_after_a_replay_and_wants_alarms(tmp_path):
    import pytest

    from tests.support.chaos import chains, check_exactly_once

    assert [chains(s) for s in ([0, 1, 2, 3], [0, 2, 1, 3], [2, 1, 0], [])] == [1, 2, 3, 0]
    cases = {"ok": [0, 1, 2, 3], "late": [0, 2, 3, 1], "shuffled": [3, 2, 1, 0]}
    for name in cases:
        (tmp_path / name).mkdir()
    gw, hub = _chaos_dbs(tmp_path / "ok", cases["ok"])
    assert check_exactly_once(gw, hub, alarms=True) == {"steps": 4, "risk": 4, "alarms": 1}
    # One event arrived late (lost, then replayed): out of order without a replay,
    # in order with one.
    gw, hub = _chaos_dbs(tmp_path / "late", cases["late"])
    with pytest.raises(AssertionError, match="risk out of order"):
        check_exactly_once(gw, hub)
    check_exactly_once(gw, hub, replayed=1)
    # Any order is not "a live stream plus one replay".
    gw, hub = _chaos_dbs(tmp_path / "shuffled", cases["shuffled"])
    with pytest.raises(AssertionError, match="risk out of order"):
        check_exactly_once(gw, hub, replayed=1)
    # No alarm at all: "none lost" would say nothing.
    (tmp_path / "quiet").mkdir()
    gw, hub = _chaos_dbs(tmp_path / "quiet", cases["ok"], alarms=0)
    with pytest.raises(AssertionError, match="alarm path was not exercised"):
        check_exactly_once(gw, hub, alarms=True)
    assert check_exactly_once(gw, hub)["alarms"] == 0
