"""Acknowledged outbox rows are kept for a while and replayed on the hub's `resend`.

A PUBACK only means the broker took a message; a broker killed before delivering it
loses it. The store keeps acknowledged rows (`outbox_sent`, pruned after the
retention) and `resend(since)` queues them again, same payloads, in order.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from contracts import topics
from contracts.messages import Command
from edge_agent.store import Store
from tests.support.broker import Subscriber
from tests.support.edge import edge_settings, event, make_publisher
from tests.support.waiting import wait_until

GW = "gw-test"  # edge_settings' default gateway


def _ack_all(store: Store) -> list[int]:
    ids = [r.id for r in store.pending(0, 10_000)]
    store.acked(ids)
    return ids


def test_acked_rows_are_kept_with_acked_at_and_leave_the_backlog(tmp_path):
    store = Store(tmp_path / "gw.sqlite")
    for i in range(5):
        store.enqueue(topics.risk(GW, "b1"), event(i))
    ids = _ack_all(store)
    assert store.outbox_size() == 0  # the backlog: only what the broker has not taken
    sent = store.rows("outbox_sent")
    assert [r["id"] for r in sent] == ids
    assert [json.loads(r["payload"])["n"] for r in sent] == list(range(5))
    assert all(r["acked_at"] >= r["created"] for r in sent)


def test_resend_requeues_exactly_own_unretained_messages_since_in_order(tmp_path):
    store = Store(tmp_path / "gw.sqlite")
    own, other = topics.risk(GW, "b1"), topics.risk("gw-other", "b1")
    for i in range(3):
        store.enqueue(own, event(i))
    time.sleep(0.01)  # `created` has millisecond resolution
    since = datetime.now(UTC)
    time.sleep(0.01)
    for i in range(3, 8):
        store.enqueue(own, event(i))
        store.enqueue(topics.vitals(GW, "b1"), event(100 + i))
    store.enqueue(topics.status(GW), b'{"retained": true}', retain=True)
    store.enqueue(other, event(999))  # not this gateway's topic: never replayed
    _ack_all(store)
    store.enqueue(own, event(8))  # not yet acknowledged: still pending, not doubled
    prefix = f"{topics.PREFIX}/gw/{GW}/"
    assert store.requeue_since(since, prefix) == 10
    pending = store.pending(0, 100)
    assert [json.loads(r.payload)["n"] for r in pending] == [
        8, 3, 103, 4, 104, 5, 105, 6, 106, 7, 107
    ]  # fmt: skip
    assert not any(r.retain for r in pending)
    # Acknowledging the replay does not file the messages a second time.
    n_sent = len(store.rows("outbox_sent"))
    _ack_all(store)
    assert len(store.rows("outbox_sent")) == n_sent + 1  # only the new original (8)
    assert store.requeue_since(since, prefix) == 11
    # A since in the future: nothing; a naive since is read as UTC.
    _ack_all(store)
    assert store.requeue_since(datetime.now(UTC) + timedelta(minutes=1), prefix) == 0
    assert store.requeue_since(since.replace(tzinfo=None), prefix) == 11


def test_prune_drops_only_rows_past_retention_and_in_bounded_batches(tmp_path):
    store = Store(tmp_path / "gw.sqlite")
    for i in range(7):
        store.enqueue(topics.risk(GW, "b1"), event(i))
    _ack_all(store)
    assert store.prune_sent(datetime.now(UTC) - timedelta(hours=1)) == 0
    later = datetime.now(UTC) + timedelta(seconds=1)
    assert store.prune_sent(later, limit=3) == 3  # bounded, oldest first
    assert [json.loads(r["payload"])["n"] for r in store.rows("outbox_sent")] == [3, 4, 5, 6]
    assert store.prune_sent(later, limit=100) == 4
    assert store.sent_size() == 0


def test_publisher_replays_on_resend_and_prunes_by_retention(broker, tmp_path):
    s = edge_settings(tmp_path, port=broker.port, mqtt={"sent_retention_hours": 1.0})
    store = Store(s.store_path)
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/#")
    pub, _ = make_publisher(s, store)
    topic = topics.risk(GW, "b1")
    try:
        assert pub._connected.wait(10)
        for i in range(10):
            pub.publish(topic, event(i))
        assert len(sub.wait_for(10, 10)) == 10 and pub.wait_idle(10)
        since = datetime.now(UTC)
        time.sleep(0.01)
        for i in range(10, 20):
            pub.publish(topic, event(i))
        assert len(sub.wait_for(20, 10)) == 20 and pub.wait_idle(10)
        assert pub.resend(since) == 10
        got = sub.wait_for(30, 10)
        assert [json.loads(p)["n"] for _, p, _ in got] == list(range(20)) + list(range(10, 20))
        assert pub.wait_idle(10) and store.sent_size() == 20
        # Retention 1 h: nothing goes now, everything an hour and a bit later.
        assert pub.prune() == 0
        assert pub.prune(now=datetime.now(UTC) + timedelta(hours=1, seconds=1)) == 20
        assert pub.counters["resent"] == 10 and pub.counters["pruned"] == 20
    finally:
        pub.stop()
        sub.close()


def test_gateway_handles_the_resend_command_from_mqtt(broker, tmp_path):
    """The command as the hub sends it (contract, topic) reaches `Publisher.resend`."""
    from edge_agent.gateway import Gateway

    s = edge_settings(tmp_path, port=broker.port)
    gw = Gateway(s)
    sub = Subscriber(broker.port, f"vigil/v1/gw/{GW}/bed/+/risk")
    try:
        gw.start(sources=False)
        assert gw.publisher.subscribed.wait(10)  # SUBACK of its cmd subscription
        since = datetime.now(UTC)
        time.sleep(0.01)
        for i in range(4):
            gw.publisher.publish(topics.risk(GW, "b1"), event(i))
        assert len(sub.wait_for(4, 10)) == 4 and gw.publisher.wait_idle(10)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        cmd = Command(gw="hub", command="resend", since=since).to_json()
        c.publish(topics.cmd(GW), cmd, qos=1).wait_for_publish(5)
        bad = Command(gw="hub", command="resend").to_json()  # no since: refused, counted
        c.publish(topics.cmd(GW), bad, qos=1).wait_for_publish(5)
        got = sub.wait_for(8, 10)
        c.disconnect()
        c.loop_stop()
        assert [json.loads(p)["n"] for _, p, _ in got] == [0, 1, 2, 3, 0, 1, 2, 3]
        wait_until(
            lambda: gw.state.snapshot().counters.get("mqtt_invalid") == 1,
            10,
            "the resend without since refused and counted",
        )
        assert gw.state.snapshot().counters.get("mqtt_invalid") == 1
    finally:
        gw.stop(1.0)
        sub.close()
