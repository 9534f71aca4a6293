"""Helpers for the hub tests: a real PostgreSQL database per session, a freshly
migrated store, message factories and a QoS 1 publisher."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_hub.store import migrate, open_engine, postgres_url
from contracts import topics
from contracts.messages import Alarm, BedSummary, ModelRef, News2Out, Risk, Status, Vitals

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
WAIT = 15.0


@contextlib.contextmanager
def postgres_database(prefix: str = "vigil_hub_test") -> Iterator[str]:
    """A uniquely named PostgreSQL database for one test session, dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=3, **PG)
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({e}); make test starts it")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_url(name)
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_engine(url: str):
    """A migrated engine on an empty store (tables emptied between tests)."""
    engine = open_engine(url)
    migrate(engine)
    from cloud_hub.store.models import Base

    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    return engine


# -- messages ------------------------------------------------------------------------
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def vitals(gw: str = "gw1", bed: str = "b1", stay: str = "s1", hour: float = 0.0, **values):
    vals = {
        "HR": 80.0,
        "O2Sat": 97.0,
        "Temp": 37.0,
        "SBP": 120.0,
        "MAP": 85.0,
        "DBP": 70.0,
        "Resp": 16.0,
    } | values
    return Vitals(
        gw=gw,
        bed=bed,
        stay=stay,
        step_start=T0 + timedelta(hours=hour),
        step_seconds=300,
        iculos_hours=hour,
        values=vals,
        readings=5,
        static={"Age": 64.0, "Gender": 1.0, "HospAdmTime": -3.0},
    )


def risk(gw: str = "gw1", bed: str = "b1", stay: str = "s1", value: float = 0.2) -> Risk:
    return Risk(
        gw=gw,
        bed=bed,
        stay=stay,
        risk=value,
        threshold=0.5,
        alarm_level="none",
        model=ModelRef(name="vigil-gru", version="3"),
        news2=News2Out(total=2, risk="low", subscores={"HR": 0, "Resp": 2}),
        observed=30,
        window_end=T0,
    )


def feedback(kind: str, gw: str = "gw1", bed: str = "b1", stay: str = "s1", at=None) -> Alarm:
    return Alarm(
        gw=gw,
        bed=bed,
        stay=stay,
        action="feedback",
        level="alarm",
        by="nurse.k",
        feedback=kind,
        ts=at or T0,
    )


def status(gw: str = "gw1", state: str = "online", outbox: int = 0, version: str = "3") -> Status:
    return Status(
        gw=gw,
        state=state,
        agent_version="0.1.0",
        model=ModelRef(name="vigil-gru", version=version),
        channel="stable",
        beds=[BedSummary(bed="b1", stay="s1")],
        outbox=outbox,
    )


def topic_of(m) -> str:
    if isinstance(m, Status):
        return topics.status(m.gw)
    kind = {Vitals: topics.vitals, Risk: topics.risk, Alarm: topics.alarm}[type(m)]
    return kind(m.gw, m.bed)


# -- MQTT ------------------------------------------------------------------------------
class Publisher:
    """A gateway-like MQTT 5 client that publishes QoS 1 and waits for the PUBACKs."""

    def __init__(self, port: int, client_id: str | None = None, will: Status | None = None):
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        if will is not None:
            self.client.will_set(topics.status(will.gw), will.to_json(), qos=1, retain=True)
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(WAIT), "publisher did not connect"

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.send_many([(topic, payload)], retain=retain)

    def send_many(self, items, retain: bool = False) -> None:
        infos = [self.client.publish(t, p, qos=1, retain=retain) for t, p in items]
        for info in infos:
            info.wait_for_publish(WAIT)
            assert info.is_published(), "broker did not acknowledge a publish"

    def send_messages(self, messages, retain: bool = False) -> None:
        self.send_many([(topic_of(m), m.to_json()) for m in messages], retain=retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
