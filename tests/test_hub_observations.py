"""Nurse observations from a real gateway to the hub store (issue 15): a gateway
records oxygen and ACVPU at a bed, its outbox sends them through a real Mosquitto,
and `vigil hub serve`'s worker stores them (SQLite and PostgreSQL, migration 0005)
with the NEWS2 alarm they raise (`source` news2); bad observations are dead-lettered
with the reason, like every other kind."""

from __future__ import annotations

import json
import uuid

from sqlalchemy import func, select

from cloud_hub.ingest import HubWorker
from cloud_hub.settings import HubSettings
from cloud_hub.store.models import AlarmEvent, DeadLetter, ObservationEvent
from contracts import topics
from contracts.messages import Observation
from edge_agent.gateway import Gateway
from tests.support.bedside import Clock, hour_start, reading
from tests.support.broker import needs_mosquitto
from tests.support.edge import edge_settings
from tests.support.hub import Publisher
from tests.support.waiting import wait_until

pytestmark = needs_mosquitto
GW = "gw-hubobs"


def rows(engine, model, *where) -> list:
    with engine.connect() as c:
        return c.execute(select(model.__table__).where(*where).order_by(model.id)).all()


def count(engine, model) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(model)).scalar_one()


def test_observations_and_the_news2_alarm_reach_the_hub_store(broker, engine, tmp_path):
    hub = HubWorker(
        HubSettings(
            mqtt_port=broker.port,
            worker_id=f"t-{uuid.uuid4().hex[:8]}",
            batch_ms=20,
            share_group=f"g{uuid.uuid4().hex[:6]}",
        ),
        engine,
    ).start(migrate_store=False)
    assert hub.wait_ready(), "hub worker did not subscribe"
    clock = Clock()
    t0 = hour_start(clock)
    gw = Gateway(edge_settings(tmp_path, port=broker.port, gateway_id=GW), clock=clock)
    gw.start(sources=False)
    try:
        gw.set_oxygen("b1", by="nurse jo", on_oxygen=True, device="high-flow", flow_l_min=40)
        gw.set_acvpu("b1", by="nurse jo", level="P")
        gw.set_spo2_scale("b1", by="dr lee", scale=2, reason="hypercapnic respiratory failure")
        for h in (0, 1):
            gw.process_reading("b1", reading("b1", h, t0=t0))
        assert gw.publisher.wait_idle(10)
        wait_until(lambda: count(engine, ObservationEvent) == 3, what="observations stored")
        got = rows(engine, ObservationEvent)
        assert [(r.gw, r.bed, r.kind, r.value, r.by) for r in got] == [
            (GW, "b1", "oxygen", "oxygen", "nurse jo"),
            (GW, "b1", "acvpu", "P", "nurse jo"),
            (GW, "b1", "spo2_scale", "2", "dr lee"),
        ]
        assert (got[0].device, got[0].flow_l_min) == ("high-flow", 40.0)
        assert got[2].reason == "hypercapnic respiratory failure"
        assert {r.event_id for r in got} == {r["event_id"] for r in gw.store.rows("observations")}
        wait_until(
            lambda: rows(engine, AlarmEvent, AlarmEvent.source == "news2"), what="NEWS2 alarm"
        )
        # NEWS2 8 (oxygen 2, pain 3, SpO2 97 % on oxygen on scale 2: 3): high, above
        # the site's level (medium), so raised and escalated at once
        wait_until(lambda: len(rows(engine, AlarmEvent, AlarmEvent.source == "news2")) == 2)
        alarms = rows(engine, AlarmEvent, AlarmEvent.source == "news2")
        assert [a.action for a in alarms] == ["raised", "escalated"]
        assert all(a.model_name is None and a.risk is None for a in alarms)
        assert "NEWS2 8 (high)" in alarms[0].reason
    finally:
        gw.stop()
        hub.stop(drain_seconds=1, retire=True)


def test_a_bad_observation_is_dead_lettered_with_the_reason(broker, engine):
    hub = HubWorker(
        HubSettings(
            mqtt_port=broker.port,
            worker_id=f"t-{uuid.uuid4().hex[:8]}",
            batch_ms=20,
            share_group=f"g{uuid.uuid4().hex[:6]}",
        ),
        engine,
    ).start(migrate_store=False)
    assert hub.wait_ready(), "hub worker did not subscribe"
    good = Observation(gw="gw1", bed="b1", stay="s1", kind="acvpu", value="A", by="nurse jo")
    data = json.loads(good.to_json())
    topic = topics.observation("gw1", "b1")
    bad = [
        {**data, "value": "Q"},  # not on the ACVPU scale
        {**data, "kind": "spo2_scale", "value": "2"},  # scale 2 without a reason
        {**data, "kind": "oxygen", "value": "air", "flow_l_min": 2.0},  # air with a flow
        {**data, "by": ""},  # nobody
    ]
    pub = Publisher(broker.port)
    try:
        pub.send_many([(topic, json.dumps(b).encode()) for b in bad] + [(topic, good.to_json())])
        wait_until(lambda: count(engine, DeadLetter) == 4, what="dead letters")
        wait_until(lambda: count(engine, ObservationEvent) == 1, what="the good one stored")
        reasons = [r.reason for r in rows(engine, DeadLetter)]
        assert all(r.startswith("schema 'vigil.observation/1'") for r in reasons), reasons
        assert "must be one of" in reasons[0] and "needs a reason" in reasons[1]
        assert "device and flow_l_min" in reasons[2] and "by" in reasons[3]
    finally:
        pub.close()
        hub.stop(drain_seconds=1, retire=True)
