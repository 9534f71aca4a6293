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
