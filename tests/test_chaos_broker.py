"""Chaos: the broker is SIGKILLed mid-run and restarted; nothing is lost or doubled."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos_support import Rig, check_exactly_once
from vigil_cli.broker import mosquitto_path

pytestmark = [
    pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed"),
    pytest.mark.slow,
]


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Mosquitto 2.0.11 restores plain subscriptions of a persistent session after a "
    "restart but not $share ones, and the hub subscribes only through $share/hub/...: what "
    "the gateways publish between the broker's restart and the hub's re-subscribe is "
    "acknowledged and dropped (hub issue, see BENCHMARKS 'Chaos and load')",
)
@pytest.mark.timeout(150)
def test_broker_killed_and_restarted_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    try:
        rig.start_hub()
        rig.start_gateway()
        rig.wait_hub_grows(15)
        rig.broker.kill()  # SIGKILL: no clean save, no goodbye to the clients
        time.sleep(4)  # the gateway keeps scoring into its outbox meanwhile
        assert rig.outbox() > 0, "the gateway should have buffered during the outage"
        rig.broker.start()  # same port, same persistence folder
        rig.wait_hub_grows(15, timeout=60)
        rig.drain()
        rig.stop_hub()
        got = check_exactly_once(rig.gw_db, rig.hub_db)
        assert got["risk"] >= 30
    finally:
        rig.close()
