"""The real gateway (edge_agent.gateway.Gateway) with model updates attached, on a real
Mosquitto: a hub release switches the model it scores with and what its state (the
nurse terminal's source) shows; join_channel moves it to canary; a bad canary bundle is
refused and the running model stays."""

from __future__ import annotations

import time

import pytest

from cloud_hub.keys import open_provider
from cloud_hub.rollout.ledger import Ledger
from cloud_hub.rollout.release import (
    assign,
    connect,
    make_release,
    publish_release,
    read_bundle_folder,
)
from cloud_hub.rollout.watch import FleetWatch
from contracts import topics
from contracts.broker import BrokerSettings
from contracts.paths import default_bundle_dir, default_trusted_keys_dir
from edge_agent.config import load_config
from edge_agent.gateway import Gateway
from edge_agent.model_hook import attach_updater
from tests.support.broker import needs_mosquitto
from tests.support.waiting import wait_until

pytestmark = needs_mosquitto
GW = "ward-roll"


@pytest.fixture
def setup(broker, tmp_path):
    from contracts.bundle import generate_key

    key, pub, _ = generate_key(tmp_path / "keys")
    toml = tmp_path / "gw.toml"
    toml.write_text(
        f'gateway_id = "{GW}"\nstore_path = "{tmp_path / "gw" / "gw.sqlite"}"\n'
        f'bundle_dirs = ["{default_bundle_dir()}"]\n'
        f'trusted_keys = ["{default_trusted_keys_dir()}", "{pub}"]\n'
        '[[beds]]\nid = "bed-1"\nsource = { type = "serial", port = "/dev/null-not-a-port" }\n'
        f"[mqtt]\nport = {broker.port}\nstatus_interval_seconds = 1\n"
    )
    gw = Gateway(load_config(toml))
    updater = attach_updater(gw)
    gw.start(sources=False)
    hub = connect(BrokerSettings("127.0.0.1", broker.port, client_id="hub-test"))
    yield gw, updater, hub, open_provider(key), tmp_path
    hub.disconnect()
    hub.loop_stop()
    gw.stop(1.0)


def test_the_real_gateway_switches_models_joins_canary_and_refuses_a_bad_bundle(setup):
    gw, updater, hub, provider, tmp = setup
    assert gw.model.version == "2" and updater.current().source == "default"
    watch = FleetWatch(hub)
    manifest, blob = read_bundle_folder(default_bundle_dir())
    led = Ledger(tmp / "ledger")
    assert wait_until(lambda: gw.publisher.connected)

    publish_release(
        hub, make_release(dict(manifest, version="7"), blob, "stable", provider, seq=100), led
    )
    assert wait_until(
        lambda: gw.model.version == "7", what=lambda: f"v7: {gw.state.snapshot().events[-3:]}"
    )
    assert gw.state.snapshot().model_version == "7"  # what the nurse terminal shows
    assert all(b.alarm.params.threshold == gw.model.threshold for b in gw.beds.values())
    assert wait_until(
        lambda: any(
            s.state == "active" and s.version == "7" for _, s in watch.snapshot()[GW].states
        )
    )

    assign(hub, GW, "canary")
    assert wait_until(lambda: updater.channel == "canary")
    assert wait_until(lambda: watch.snapshot()[GW].channel == "canary")

    bad = dict(manifest, version="8")
    bad["golden"] = [dict(bad["golden"][0], expected=0.999)]
    publish_release(hub, make_release(bad, blob, "canary", provider, seq=200, check=False), led)
    assert wait_until(lambda: any(s.state == "refused" for _, s in watch.snapshot()[GW].states))
    refused = [s for _, s in watch.snapshot()[GW].states if s.state == "refused"][-1]
    assert refused.reason.startswith("golden_mismatch") and refused.active.version == "7"
    assert gw.model.version == "7"
    # A release on the channel it left is not applied.
    publish_release(
        hub, make_release(dict(manifest, version="9"), blob, "stable", provider, seq=300), led
    )
    time.sleep(0.5)
    assert gw.model.version == "7"
    # A restart: the active bundle and the channel are what the gateway comes back with.
    again = Gateway(load_config(tmp / "gw.toml"))
    try:
        attach_updater(again)
        assert again.model.version == "7" and again.updater.current().source == "active"
        assert again.publisher.topic_models == topics.models("canary")
        assert again.settings.channel == "canary"
    finally:
        again.store.close()


def test_a_staged_rollout_halts_when_a_canary_gateway_stays_silent_or_none_is_there(
    broker, tmp_path
):
    """A canary gateway that is online but never answers halts the rollout after the
    stage timeout; with no canary gateway at all the rollout does not start."""
    from cloud_hub.rollout.watch import staged_rollout
    from contracts.bundle import generate_key
    from contracts.messages import Status

    key, _, _ = generate_key(tmp_path / "keys")
    hub = connect(BrokerSettings("127.0.0.1", broker.port, client_id="hub-halt"))
    try:
        manifest, blob = read_bundle_folder(default_bundle_dir())
        led = Ledger(tmp_path / "ledger")
        provider = open_provider(key)
        report = staged_rollout(hub, manifest, blob, provider, led, echo=lambda _: None)
        assert report.halted and "channel canary has 0 online gateway(s)" in report.reason
        assert led.current("canary") is None and led.current("stable") is None
        ghost = Status(gw="gw-ghost", state="online", channel="canary")
        hub.publish(topics.status("gw-ghost"), ghost.to_json(), qos=1, retain=True)
        report = staged_rollout(
            hub, manifest, blob, provider, led, stage_timeout=1.0, echo=lambda _: None
        )
        assert report.halted and "gw-ghost did not answer in 1 s" in report.reason
        assert report.stages[0].silent == ["gw-ghost"]
        assert led.current("canary") is not None and led.current("stable") is None
    finally:
        hub.disconnect()
        hub.loop_stop()
