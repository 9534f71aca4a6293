"""The nurse terminal shows the model version the hub rolled out: real gateway, real
Mosquitto, a signed release from `cloud_hub.rollout`, the real Textual app over the
gateway's state (edge_agent.ui.gateway_port)."""

from __future__ import annotations

import asyncio
import time

import pytest

from cloud_hub.keys import open_provider
from cloud_hub.rollout.ledger import Ledger
from cloud_hub.rollout.release import connect, make_release, publish_release, read_bundle_folder
from contracts.broker import BrokerSettings
from contracts.bundle import generate_key
from contracts.paths import default_bundle_dir, default_trusted_keys_dir
from edge_agent.config import load_config
from edge_agent.gateway import Gateway
from edge_agent.model_hook import attach_updater
from edge_agent.ui.app import VigilApp
from edge_agent.ui.gateway_port import GatewayPort
from tests.support.broker import needs_mosquitto

pytestmark = [pytest.mark.anyio, needs_mosquitto]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_terminal_shows_the_new_model_version_after_a_rollout(broker, tmp_path):
    key, pub, _ = generate_key(tmp_path / "keys")
    toml = tmp_path / "gw.toml"
    toml.write_text(
        f'gateway_id = "ward-ui"\nstore_path = "{tmp_path / "gw" / "gw.sqlite"}"\n'
        f'trusted_keys = ["{default_trusted_keys_dir()}", "{pub}"]\n'
        '[[beds]]\nid = "bed-1"\nsource = { type = "serial", port = "/dev/null-not-a-port" }\n'
        f"[mqtt]\nport = {broker.port}\n"
    )
    gw = Gateway(load_config(toml))
    attach_updater(gw)
    gw.start(sources=False)
    hub = connect(BrokerSettings("127.0.0.1", broker.port, client_id="hub-ui"))
    try:
        app = VigilApp(GatewayPort(gw), operator="Ann", blink=False, refresh_seconds=0.1)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.3)
            assert "vigil-sepsis 2" in app.screen_text()
            manifest, blob = read_bundle_folder(default_bundle_dir())
            release = make_release(
                dict(manifest, version="7"), blob, "stable", open_provider(key), seq=100
            )
            publish_release(hub, release, Ledger(tmp_path / "ledger"))
            deadline = time.monotonic() + 15
            while "vigil-sepsis 7" not in app.screen_text() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                await pilot.pause()
            assert "vigil-sepsis 7" in app.screen_text(), app.screen_text()
    finally:
        hub.disconnect()
        hub.loop_stop()
        gw.stop(1.0)
