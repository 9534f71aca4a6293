"""Outbox-first publishing on a real Mosquitto: an outage of any length loses nothing."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contracts import topics
from contracts.messages import Command, parse_message
from edge_agent.store import Store
from tests.support.broker import Subscriber
from tests.support.edge import edge_settings, event, make_publisher

GW = "gw-test"  # edge_settings' default gateway


def test_broker_down_for_a_while_every_event_arrives_once_in_order(broker, tmp_path):
    s = edge_settings(
        tmp_path,
        port=broker.port,
        mqtt={"reconnect_min_seconds": 1.0, "reconnect_max_seconds": 2.0},
    )
    store = Store(s.store_path)
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    commands: list[Command] = []
    pub, state = make_publisher(s, store, on_command=commands.append)
    topic = topics.risk(GW, "b1")
    try:
        assert pub._connected.wait(10)
        for i in range(50):
            pub.publish(topic, event(i))
        assert len(sub.wait_for(50, 10)) == 50
        broker.stop()
        deadline = time.monotonic() + 10
        while pub.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not state.snapshot().broker_connected
        for i in range(50, 550):  # published while the broker is down
            pub.publish(topic, event(i))
        time.sleep(1.5)
        assert store.outbox_size() == 500
        assert state.snapshot().outbox == 500 and state.snapshot().buffering
        sub.ready.clear()
        broker.start()
        assert sub.ready.wait(10)
        got = sub.wait_for(550, 30)
        assert pub.wait_idle(10)
        # A marker after the replay: the broker delivers one client's messages in order,
        # so a duplicate from the outbox would arrive before it.
        pub.publish(topic, event(550))
        got = sub.wait_for(551, 10)
        with sub.lock:
            risk = [json.loads(p)["n"] for t, p, _ in sub.messages if t == topic]
        assert risk == list(range(551)), f"got {len(got)}; first diffs: {risk[:5]}..."
        assert store.outbox_size() == 0 and state.snapshot().outbox == 0
        online = [p for t, p, _ in sub.messages if t == topics.status(GW)]
        assert parse_message(online[-1]).state == "online"
        # Subscribed again after the reconnect (SUBACK): a command from the hub arrives.
        assert pub.subscribed.wait(10)
        cmd = Command(gw="hub", command="report_status").to_json()
        sub.client.publish(topics.cmd(GW), cmd, qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while not commands and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [c.command for c in commands] == ["report_status"]
    finally:
        pub.stop()
        sub.close()


def test_outbox_survives_a_gateway_stop_and_restart_and_last_will_says_offline(broker, tmp_path):
    s = edge_settings(tmp_path, port=broker.port)
    store = Store(s.store_path)
    broker.stop()
    pub, _ = make_publisher(s, store)
    topic = topics.vitals(GW, "b1")
    for i in range(20):
        pub.publish(topic, event(i))
    pub.stop(timeout=0.2)  # stopped while the broker is away (power cuts: test_durability)
    store.close()
    assert Store(s.store_path).outbox_size() == 20
    broker.start()
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    pub2, _ = make_publisher(s, Store(s.store_path))
    try:
        got = sub.wait_for(20, 20, "/vitals")
        assert [json.loads(p)["n"] for _, p, _ in got] == list(range(20))
        # An unclean death (socket dropped, no DISCONNECT): the broker sends the will.
        pub2._stop.set()
        pub2.client.socket().close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with sub.lock:
                st = [parse_message(p) for t, p, _ in sub.messages if t == topics.status(GW)]
            if st and st[-1].state == "offline":
                break
            time.sleep(0.05)
        assert st[-1].state == "offline" and st[-1].gw == GW
    finally:
        pub2.client.loop_stop()
        sub.close()


def test_commands_and_invalid_payloads_on_cmd_are_handled_and_counted(broker, tmp_path):
    s = edge_settings(tmp_path, port=broker.port)
    store = Store(s.store_path)
    got: list[Command] = []
    pub, state = make_publisher(s, store, on_command=got.append)
    try:
        assert pub.subscribed.wait(10)  # SUBACK: the non-retained commands reach it
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        cmd = Command(gw="hub", command="report_status")
        c.publish(topics.cmd(GW), cmd.to_json(), qos=1).wait_for_publish(5)
        c.publish(topics.cmd(GW), b"not json", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(store.rows("inbox")) < 2:
            time.sleep(0.05)
        c.disconnect()
        c.loop_stop()
        rows = store.rows("inbox")
        assert [r["valid"] for r in rows] == [1, 0] and "not JSON" in rows[1]["reason"]
        assert [g.command for g in got] == ["report_status"]
        assert state.snapshot().counters["mqtt_invalid"] == 1
    finally:
        pub.stop()


def test_a_retained_model_release_reaches_the_release_hook(broker, tmp_path):
    import base64

    from contracts.messages import ModelRelease

    release = ModelRelease(
        gw="hub",
        channel="stable",
        manifest={"name": "m", "version": "9"},
        signature={"algorithm": "ed25519", "key_id": "k", "signature": "x"},
        model_b64=base64.b64encode(b"tflite").decode(),
    )
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    c.publish(topics.models("stable"), release.to_json(), qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    got: list[ModelRelease] = []
    s = edge_settings(tmp_path, port=broker.port)
    pub, _ = make_publisher(s, Store(s.store_path), on_release=got.append)
    try:
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got and got[0].manifest["version"] == "9" and got[0].channel == "stable"
    finally:
        pub.stop()
