"""Chaos: the hub is SIGKILLed mid-run and restarted; its persistent broker session
queues what arrives meanwhile, and what it had not committed is redelivered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.broker import needs_mosquitto
from tests.support.chaos import Rig, check_exactly_once

pytestmark = [
    needs_mosquitto,
    pytest.mark.slow,
]


@pytest.mark.timeout(150)
def test_hub_killed_and_restarted_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        rig.start_hub()
        rig.start_gateway()
        rig.wait_hub_grows(15)
        rig.kill_hub()
        n = rig.hub_risk()
        time.sleep(4)  # the gateway publishes on; the broker queues for the hub
        assert rig.hub_risk() == n
        rig.start_hub()
        rig.wait_hub_grows(15, timeout=60)
        rig.drain()
        rig.stop_hub()
        got = check_exactly_once(rig.gw_db, rig.hub_db, alarms=True)
        assert got["risk"] >= 30
    finally:
        rig.close()
