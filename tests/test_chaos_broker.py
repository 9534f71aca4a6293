"""Chaos: the broker is SIGKILLed mid-run and restarted; nothing is lost or doubled.

What the broker acknowledged and then lost (its memory since the last save, and
what came in before the hub's shared subscriptions were made again) is replayed:
the hub sends the gateway a `resend` command on its reconnect (cloud_hub/ingest.py).
"""

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
        # The hub asked for a replay on its reconnect (Mosquitto 2.0.11 does not restore
        # its $share subscriptions; a SIGKILLed broker loses what it held), and the
        # gateway queued its acknowledged messages again: what the broker took in the
        # gap and handed to nobody is replayed, the rest is deduplicated by event_id.
        hub_log = (tmp_path / "hub.log").read_text()
        assert "event=resend_requested gw=chaos-gw" in hub_log, hub_log[-2000:]
        assert "resend from hub:" in (tmp_path / "gateway.log").read_text()
        replays = hub_log.count("event=resend_requested gw=chaos-gw")
        got = check_exactly_once(rig.gw_db, rig.hub_db, replayed=replays, alarms=True)
        assert got["risk"] >= 30
    finally:
        rig.close()
