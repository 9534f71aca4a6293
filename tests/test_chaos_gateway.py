"""Chaos: the gateway is SIGKILLed mid-run and restarted; its outbox (SQLite, written
before sending) carries what it had not delivered, nothing is lost or doubled."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.broker import needs_mosquitto
from tests.support.chaos import Rig, check_exactly_once, count

pytestmark = [
    needs_mosquitto,
    pytest.mark.slow,
]


@pytest.mark.timeout(150)
def test_gateway_sigkilled_and_restarted_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        rig.start_hub()
        rig.start_gateway(via_proxy=True)
        rig.wait_hub_grows(15)
        # Cut the gateway off first so its outbox has a backlog when the crash comes.
        assert rig.proxy is not None
        rig.proxy.cut()
        time.sleep(3)
        before = rig.outbox()
        assert before > 0
        rig.kill_gateway()  # SIGKILL with unsent messages in its outbox
        assert count(rig.gw_db, "outbox") >= before  # the backlog survived the crash
        rig.proxy.restore()
        rig.start_gateway(via_proxy=True)
        rig.wait_hub_grows(before + 10, timeout=60)
        rig.drain()
        rig.stop_hub()
        got = check_exactly_once(rig.gw_db, rig.hub_db, gateway_crashed=True, alarms=True)
        assert got["risk"] >= 30
    finally:
        rig.close()
