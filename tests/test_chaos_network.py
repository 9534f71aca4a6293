"""Chaos: the network between gateway and broker is cut (a loopback proxy that stops
passing bytes, no RST: only keepalives notice) and restored; nothing lost or doubled."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.broker import needs_mosquitto
from tests.support.chaos import Rig, check_exactly_once
from tests.support.waiting import wait_until

pytestmark = [
    needs_mosquitto,
    pytest.mark.slow,
]

CUT_SECONDS = float(
    os.environ.get("VIGIL_CHAOS_CUT_SECONDS", "20")
)  # > 1.5 x the gateway's 5 s keepalive: the connection is declared dead


@pytest.mark.timeout(160 + CUT_SECONDS)
def test_network_cut_between_gateway_and_broker_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    try:
        rig.start_hub()
        rig.start_gateway(via_proxy=True)
        rig.wait_hub_grows(15)
        assert rig.proxy is not None
        rig.proxy.cut()
        n = rig.hub_risk()
        time.sleep(CUT_SECONDS)
        assert rig.hub_risk() <= n + 5  # at most what was already on its way
        backlog = rig.outbox()
        assert backlog > 10, "the gateway should be buffering while cut off"
        log = (tmp_path / "gateway.log").read_text()
        assert "broker connection lost" in log  # the keepalive noticed the dead link
        rig.proxy.restore()
        wait_until(lambda: rig.outbox() < backlog / 2, 60, "the backlog to drain")
        rig.drain()
        rig.stop_hub()
        got = check_exactly_once(rig.gw_db, rig.hub_db, alarms=True)
        assert got["risk"] >= 30
    finally:
        rig.close()
