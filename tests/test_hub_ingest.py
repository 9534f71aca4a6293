"""`vigil hub serve` against a REAL Mosquitto and REAL SQLite / PostgreSQL stores.

Each test starts its own Mosquitto on a free port (the `broker` fixture: topics are
fixed by the contract, so sharing the machine's broker would mix tests); PostgreSQL tests use a
database created for this session and dropped afterwards.
"""

from __future__ import annotations

import json
import urllib.request
import uuid

import pytest
from sqlalchemy import func, select

from cloud_hub.ingest import HubWorker
from cloud_hub.settings import HubSettings
from cloud_hub.store.models import AlarmEvent, DeadLetter, OutcomeLabel, RiskEvent, VitalsSummary
from contracts import topics
from tests.support.broker import needs_mosquitto
from tests.support.hub import (
    Publisher,
    feedback,
    fresh_engine,
    postgres_database,
    risk,
    status,
    topic_of,
    vitals,
)
from tests.support.waiting import wait_until

pytestmark = needs_mosquitto


def settings(broker, **kw) -> HubSettings:
    base = {
        "mqtt_port": broker.port,
        "worker_id": f"t-{uuid.uuid4().hex[:8]}",
        "batch_ms": 20,
        "share_group": f"g{uuid.uuid4().hex[:6]}",
    }
    return HubSettings(**(base | kw))


@pytest.fixture
def hub(broker, engine):
    workers: list[HubWorker] = []

    def start(**kw) -> HubWorker:
        w = HubWorker(settings(broker, **kw), engine).start(migrate_store=False)
        assert w.wait_ready(), "hub worker did not subscribe"
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop(drain_seconds=1, retire=True)


def count(engine, model, *where) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def test_a_message_delivered_twice_is_stored_once(broker, engine, hub):
    hub()
    pub = Publisher(broker.port)
    v, r = vitals(), risk()
    for _ in range(3):  # the gateway's outbox resends after a lost PUBACK
        pub.send_messages([v, r])
    fb = feedback("deteriorating")
    pub.send_messages([fb, fb])
    wait_until(lambda: count(engine, AlarmEvent) == 1 and count(engine, VitalsSummary) == 1)
    wait_until(lambda: count(engine, OutcomeLabel) == 1, what="a label from the feedback")
    # later messages are processed, so the duplicates have been seen by now
    pub.send_messages([vitals(hour=1.0)])
    wait_until(lambda: count(engine, VitalsSummary) == 2)
    assert count(engine, RiskEvent) == 1
    assert count(engine, OutcomeLabel, OutcomeLabel.kind == "deteriorating") == 1
    pub.close()


BAD = [
    ("malformed", lambda: (topics.vitals("gw1", "b1"), b"{not json")),
    ("malformed", lambda: (topics.risk("gw1", "b1"), b"[1, 2, 3]")),
    ("oversized", lambda: (topics.vitals("gw1", "b1"), b'{"x":"' + b"a" * 300_000 + b'"}')),
    ("schema", lambda: (topics.vitals("gw1", "b1"), json.dumps({"gw": "gw1"}).encode())),
    (
        "schema",
        lambda: (
            topics.vitals("gw1", "b1"),
            vitals().to_json().replace(b'"step_seconds":300', b'"step_seconds":"x"'),
        ),
    ),
    ("topic_mismatch", lambda: (topics.vitals("gw2", "b1"), vitals(gw="gw1").to_json())),
    ("topic_mismatch", lambda: (topics.vitals("gw1", "b9"), vitals(bed="b1").to_json())),
    ("topic_mismatch", lambda: (topics.risk("gw1", "b1"), vitals().to_json())),
]


def test_bad_messages_are_dead_lettered_with_reasons_and_ingest_goes_on(broker, engine, hub):
    w = hub()
    pub = Publisher(broker.port)
    good_before = [vitals(hour=h) for h in range(3)]
    pub.send_messages(good_before)
    bad = [make() for _, make in BAD]
    pub.send_many(bad)
    good_after = [vitals(hour=h) for h in range(3, 8)] + [risk()]
    pub.send_messages(good_after)
    wait_until(lambda: count(engine, DeadLetter) == len(BAD), what="dead letters")
    wait_until(lambda: count(engine, VitalsSummary) == 8 and count(engine, RiskEvent) == 1)
    with engine.connect() as c:
        rows = c.execute(select(DeadLetter.__table__).order_by(DeadLetter.id)).all()
    assert [r.reason_kind for r in rows] == [k for k, _ in BAD]
    for (topic, payload), d in zip(bad, rows, strict=True):
        assert d.topic == topic and d.size == len(payload) and d.reason
        assert d.payload == payload[: len(d.payload)] and d.truncated == (len(payload) > 65536)
    reasons = [r.reason for r in rows]
    assert "not JSON" in reasons[0] and "oversized" in reasons[2]
    assert "step_seconds" in reasons[4] and "gw2" in reasons[5] and "b9" in reasons[6]
    # counted in the metrics, by reason
    wait_until(lambda: w.totals["dead"] == len(BAD))
    assert w.metrics.dead_lettered.labels(reason="topic_mismatch")._value.get() == 3
    assert w.metrics.dead_lettered.labels(reason="malformed")._value.get() == 2


def test_two_workers_on_one_shared_subscription_store_every_message_exactly_once(
    broker, engine, hub
):
    group = f"g{uuid.uuid4().hex[:6]}"
    a, b = hub(share_group=group, batch_size=20), hub(share_group=group, batch_size=20)
    pubs = [Publisher(broker.port) for _ in range(2)]
    n = 400
    msgs = [
        vitals(gw=f"gw{i % 4}", bed=f"b{i % 3}", stay=f"s{i % 7}", hour=i / 10) for i in range(n)
    ]
    for i, p in enumerate(pubs):
        p.send_messages(msgs[i::2])
    wait_until(lambda: count(engine, VitalsSummary) == n, timeout=30, what=f"{n} rows")
    wait_until(lambda: a.totals["received"] + b.totals["received"] >= n)
    assert a.totals["stored"] + b.totals["stored"] == n
    assert a.totals["duplicates"] + b.totals["duplicates"] == 0
    assert a.totals["stored"] > 0 and b.totals["stored"] > 0, (a.totals, b.totals)
    with engine.connect() as c:
        ids = set(c.execute(select(VitalsSummary.event_id)).scalars())
    assert ids == {str(m.event_id) for m in msgs}
    for p in pubs:
        p.close()


def test_qos1_messages_published_while_the_hub_is_down_are_not_lost(broker, engine, hub):
    worker_id = f"restart-{uuid.uuid4().hex[:6]}"
    group = f"g{uuid.uuid4().hex[:6]}"
    first = hub(worker_id=worker_id, share_group=group)
    pub = Publisher(broker.port)
    pub.send_messages([vitals(hour=h) for h in range(5)])
    wait_until(lambda: count(engine, VitalsSummary) == 5)
    first.stop(drain_seconds=2)
    down = [vitals(hour=5 + h / 10) for h in range(50)]
    pub.send_messages(down)  # the broker queues them in the hub's persistent session
    second = hub(worker_id=worker_id, share_group=group)
    wait_until(lambda: second.totals["stored"] == 50, what="the queued messages")
    assert count(engine, VitalsSummary) == 55
    pub.close()


def test_metrics_endpoint_reports_ingest(broker, engine, hub):
    from tests.support.net import free_port

    port = free_port()
    w = hub(metrics_port=port, metrics_addr="127.0.0.1")
    pub = Publisher(broker.port)
    pub.send_messages([vitals(gw="gwm"), status(gw="gwm")])
    pub.send(topics.vitals("gwm", "b1"), b"garbage")
    wait_until(lambda: w.totals["received"] == 3)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'vigil_hub_messages_stored_total{kind="vitals"} 1.0' in text
    assert 'vigil_hub_messages_dead_lettered_total{reason="malformed"} 1.0' in text
    assert 'vigil_hub_gateway_last_seen_timestamp_seconds{gw="gwm"}' in text
    assert "vigil_hub_ingest_lag_seconds_count 2.0" in text
    pub.close()


def test_topic_of_helper_matches_contract():
    # guards the helper the other tests rely on
    assert topic_of(vitals(gw="g", bed="b")) == "vigil/v1/gw/g/bed/b/vitals"


def test_a_retired_worker_takes_in_its_queue_and_stops_getting_a_share(broker, engine, hub):
    group = f"g{uuid.uuid4().hex[:6]}"
    gone_id = f"gone-{uuid.uuid4().hex[:6]}"
    a = hub(share_group=group)
    gone = hub(share_group=group, worker_id=gone_id)
    gone.stop(drain_seconds=1)  # stopped, not retired: the broker keeps its share
    pub = Publisher(broker.port)
    pub.send_messages([vitals(hour=h / 10) for h in range(40)])
    a.wait_idle()
    assert 0 < a.totals["stored"] < 40, a.totals  # the rest waits in gone's session
    back = hub(share_group=group, worker_id=gone_id)
    wait_until(lambda: count(engine, VitalsSummary) == 40, what="the queued share")
    back.stop(drain_seconds=2, retire=True)
    before = a.totals["stored"]
    pub.send_messages([vitals(hour=10 + h / 10) for h in range(20)])
    wait_until(lambda: a.totals["stored"] == before + 20, what="every message at the survivor")
    assert count(engine, VitalsSummary) == 60
    pub.close()


def test_the_hub_reconnects_and_subscribes_again_after_a_broker_restart(broker, engine, hub):
    w = hub()
    pub = Publisher(broker.port)
    pub.send_messages([vitals(hour=0)])
    wait_until(lambda: count(engine, VitalsSummary) == 1)
    pub.close()
    broker.restart()  # the broker forgets every session and subscription
    wait_until(
        lambda: w._generation >= 2 and w._connected.is_set(),
        timeout=40,
        what="the hub to reconnect",
    )
    wait_until(lambda: w.metrics.connected._value.get() == 1)
    pub = Publisher(broker.port)
    wait_until(
        lambda: (pub.send_messages([vitals(hour=1)]) or True) and count(engine, VitalsSummary) >= 2,
        timeout=20,
        interval=0.5,
        what="a message after the restart to be stored",
    )
    pub.close()


def test_a_store_outage_holds_the_acks_and_nothing_is_lost(broker):
    import psycopg

    from tests.support.hub import PG

    with postgres_database("vigil_hub_outage") as url:
        engine = fresh_engine(url)
        name = engine.url.database
        w = HubWorker(settings(broker), engine).start(migrate_store=False)
        pub = Publisher(broker.port)
        try:
            assert w.wait_ready()
            pub.send_messages([vitals(hour=h) for h in range(5)])
            wait_until(lambda: w.totals["stored"] == 5)
            with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
                admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
            pub.send_messages([vitals(hour=5 + h / 10) for h in range(20)])
            wait_until(lambda: w.metrics.store_errors._value.get() >= 2, what="retries")
            assert w.totals["stored"] == 5
            with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
                admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            wait_until(lambda: w.totals["stored"] == 25, timeout=30, what="the held batch")
            assert count(engine, VitalsSummary) == 25 and count(engine, DeadLetter) == 0
        finally:
            pub.close()
            w.stop(drain_seconds=2, retire=True)
            engine.dispose()
