"""The hub asks the gateways to resend after it lost its broker connection.

A broker restarted without its state (here: persistence off, as a SIGKILLed broker
loses what it held since its last save) has acknowledged gateway messages that it
never delivered to the hub. On its reconnect the hub publishes a `resend` command to
every gateway in its registry, `since` = the last time it stored anything from that
gateway minus the margin.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, timedelta

from hub_support import Mosquitto, Publisher, fresh_engine, needs_mosquitto, risk, wait_until
from sqlalchemy import select

from cloud_hub.ingest import HubSettings, HubWorker
from cloud_hub.store.models import Gateway
from contracts.messages import Command, parse_message
from tests.test_edge_outbox import Subscriber

pytestmark = needs_mosquitto


def _commands(sub: Subscriber) -> list[tuple[str, Command]]:
    with sub.lock:
        return [(t.split("/")[3], parse_message(p, gateway_only=False)) for t, p, _ in sub.messages]


def _worker(port: int, engine) -> HubWorker:
    s = HubSettings(
        mqtt_port=port,
        worker_id=f"t-{uuid.uuid4().hex[:8]}",
        batch_ms=20,
        resend_margin_seconds=30,
    )
    w = HubWorker(s, engine).start(migrate_store=False)
    assert w.wait_ready(), "hub worker did not subscribe"
    return w


def test_hub_sends_resend_to_every_known_gateway_after_a_session_loss(tmp_path):
    broker = Mosquitto(tmp_path).start()
    engine = fresh_engine(f"sqlite:///{tmp_path}/hub.db")
    sub = Subscriber(broker.port, "vigil/v1/gw/+/cmd")
    w = w2 = None
    try:
        w = _worker(broker.port, engine)
        pub = Publisher(broker.port)
        pub.send_messages([risk(gw="gw1"), risk(gw="gw2")])
        pub.close()
        with engine.connect() as c:
            wait_until(lambda: len(c.execute(select(Gateway.gw)).all()) == 2, what="registry")
            seen = {g: t.replace(tzinfo=t.tzinfo or UTC) for g, t in c.execute(
                select(Gateway.gw, Gateway.last_seen))}  # fmt: skip
        assert _commands(sub) == [], "no resend while nothing was lost"

        sub.ready.clear()
        broker.restart()  # the hub's session and subscriptions are gone
        assert sub.ready.wait(10)
        wait_until(lambda: len(_commands(sub)) >= 2, what="resend commands", timeout=20)
        got = dict(_commands(sub))
        assert set(got) == {"gw1", "gw2"}
        for gw, cmd in got.items():
            assert cmd.command == "resend" and cmd.gw == "hub"
            want = seen[gw] - timedelta(seconds=30)
            assert abs(cmd.since - want) < timedelta(milliseconds=2), (gw, cmd.since, want)
        assert w.resends_sent == 2

        # A worker starting afresh (no session on the broker) also asks, from the registry
        # (its loss, a missing session, comes after the requests above: not covered).
        w2 = _worker(broker.port, engine)
        wait_until(lambda: len(_commands(sub)) >= 4, what="resend from a new worker")
        assert sorted(g for g, _ in _commands(sub)[2:]) == ["gw1", "gw2"]
    finally:
        for x in (w, w2):
            if x is not None:
                x.stop(drain_seconds=1, retire=True)
        sub.close()
        engine.dispose()
        broker.stop()


def test_two_workers_reconnecting_together_send_one_resend_per_gateway(tmp_path):
    """N workers on one shared subscription: the store decides which one asks."""
    broker = Mosquitto(tmp_path).start()
    engine = fresh_engine(f"sqlite:///{tmp_path}/hub.db")
    sub = Subscriber(broker.port, "vigil/v1/gw/+/cmd")
    workers = []
    try:
        first = _worker(broker.port, engine)
        pub = Publisher(broker.port)
        pub.send_messages([risk(gw=f"gw{i}") for i in range(5)])
        pub.close()
        with engine.connect() as c:
            wait_until(lambda: len(c.execute(select(Gateway.gw)).all()) == 5, what="registry")
        first.stop(drain_seconds=1, retire=True)
        # Both new workers know all 5 gateways (from the registry), as after a restart.
        workers = [_worker(broker.port, engine), _worker(broker.port, engine)]
        for w in workers:  # a first connect with no session asks at once: not this test
            wait_until(lambda w=w: w._resend_due is None, what="start-up resends")
        time.sleep(0.5)
        with sub.lock:
            sub.messages.clear()
        sent_before = sum(w.resends_sent for w in workers)

        sub.ready.clear()
        broker.restart()
        assert sub.ready.wait(10)
        wait_until(lambda: len(_commands(sub)) >= 5, what="resend commands", timeout=20)
        wait_until(lambda: all(w._subscribed.is_set() for w in workers), what="resubscribed")
        time.sleep(2.0)  # room for a second, duplicate round to show up
        got = sorted(g for g, _ in _commands(sub))
        assert got == [f"gw{i}" for i in range(5)], got
        assert sum(w.resends_sent for w in workers) - sent_before == 5
        with engine.connect() as c:
            claims = c.execute(select(Gateway.resend_since, Gateway.resend_at)).all()
        assert all(since is not None and at is not None for since, at in claims)
    finally:
        for w in workers:
            w.stop(drain_seconds=1, retire=True)
        sub.close()
        engine.dispose()
        broker.stop()


def test_a_restarted_worker_asks_again_even_when_the_broker_kept_its_session(tmp_path):
    """The kept session may have overflowed its queue while the hub was down: ask."""
    broker = Mosquitto(tmp_path).start()
    engine = fresh_engine(f"sqlite:///{tmp_path}/hub.db")
    sub = Subscriber(broker.port, "vigil/v1/gw/+/cmd")
    s = HubSettings(mqtt_port=broker.port, worker_id="kept", batch_ms=20)
    w = again = None
    try:
        w = HubWorker(s, engine).start(migrate_store=False)
        assert w.wait_ready()
        pub = Publisher(broker.port)
        pub.send_messages([risk(gw="gw1")])
        pub.close()
        with engine.connect() as c:
            wait_until(lambda: len(c.execute(select(Gateway.gw)).all()) == 1, what="registry")
        w.stop(drain_seconds=1)  # not retired: the broker keeps its session
        w = None
        with sub.lock:
            sub.messages.clear()
        again = HubWorker(s, engine).start(migrate_store=False)
        assert again.wait_ready()
        wait_until(lambda: len(_commands(sub)) >= 1, what="resend after restart")
        ((gw, cmd),) = _commands(sub)
        assert gw == "gw1" and cmd.command == "resend"
    finally:
        for x in (w, again):
            if x is not None:
                x.stop(drain_seconds=1, retire=True)
        sub.close()
        engine.dispose()
        broker.stop()
