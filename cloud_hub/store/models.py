"""The hub's tables (SQLAlchemy 2 declarative models).

Every gateway message table keys on `event_id` (unique), so a message the broker
delivers twice is stored once. Columns the fleet view, the labels and the export
need are real columns; the rest of a message (vital values, NEWS2 sub-scores) is
kept as JSON. The schema is created and changed only by the Alembic migrations in
`migrations/versions/` (applied by `db.migrate`), never by `create_all`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints so migrations are reproducible on both dialects.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}

TS = DateTime(timezone=True)
EVENT_ID = String(36)  # UUID text: portable across SQLite and PostgreSQL


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Gateway(Base):
    """The fleet registry: one row per gateway, from its status (retained / last will)."""

    __tablename__ = "gateways"
    gw: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64), default="stable")
    outbox: Mapped[int] = mapped_column(Integer, default=0)
    beds: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    status_ts: Mapped[datetime | None] = mapped_column(TS)  # the status message's own ts
    status_received_at: Mapped[datetime | None] = mapped_column(TS)
    model_state: Mapped[str | None] = mapped_column(String(16))  # last vigil.model/1 state
    model_state_version: Mapped[str | None] = mapped_column(String(64))
    model_state_reason: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(TS)
    last_seen: Mapped[datetime] = mapped_column(TS)  # any message from it
    # The last `resend` a hub worker asked of it (ingest.HubWorker._claim_resend): so
    # that N workers reconnecting together send one command, not N.
    resend_since: Mapped[datetime | None] = mapped_column(TS)
    resend_at: Mapped[datetime | None] = mapped_column(TS)
    # Gateway faults from its last status: its local store ("ok" or what fails, with the
    # writes kept in memory and dropped) and its thread supervisor (restarts so far,
    # threads given up and their names).
    storage: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    storage_kept: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    storage_dropped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    thread_restarts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    threads_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed_threads: Mapped[list[str] | None] = mapped_column(JSON)


class GatewayStatus(Base):
    """Every status message (history; the registry row above is the latest)."""

    __tablename__ = "gateway_status"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(EVENT_ID, unique=True)
    gw: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(TS)
    state: Mapped[str] = mapped_column(String(16))
    agent_version: Mapped[str] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    outbox: Mapped[int] = mapped_column(Integer)
    beds: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    retained: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(TS)


class Stay(Base):
    """A pseudonymous ICU stay and the bed/gateway it was seen on."""

    __tablename__ = "stays"
    stay: Mapped[str] = mapped_column(String(64), primary_key=True)
    gw: Mapped[str] = mapped_column(String(64), index=True)
    bed: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(TS)
    last_seen: Mapped[datetime] = mapped_column(TS)


class VitalsSummary(Base):
    __tablename__ = "vitals_summaries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(EVENT_ID, unique=True)
    gw: Mapped[str] = mapped_column(String(64))
    bed: Mapped[str] = mapped_column(String(64))
    stay: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(TS)
    step_start: Mapped[datetime] = mapped_column(TS)
    step_seconds: Mapped[int] = mapped_column(Integer)
    iculos_hours: Mapped[float] = mapped_column(Float)
    values: Mapped[dict[str, float | None]] = mapped_column(JSON)
    readings: Mapped[int] = mapped_column(Integer)
    static: Mapped[dict[str, float | None]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(TS)


class RiskEvent(Base):
    __tablename__ = "risk_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(EVENT_ID, unique=True)
    gw: Mapped[str] = mapped_column(String(64))
    bed: Mapped[str] = mapped_column(String(64))
    stay: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(TS)
    risk: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    alarm_level: Mapped[str] = mapped_column(String(16))
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    news2_total: Mapped[int] = mapped_column(Integer)
    news2_risk: Mapped[str] = mapped_column(String(32))
    news2: Mapped[dict[str, Any]] = mapped_column(JSON)
    observed: Mapped[int] = mapped_column(Integer)
    insufficient_data: Mapped[bool] = mapped_column(Boolean)
    window_end: Mapped[datetime] = mapped_column(TS)
    received_at: Mapped[datetime] = mapped_column(TS)


class AlarmEvent(Base):
    """Alarm changes (who and when) and nurse feedback (action='feedback')."""

    __tablename__ = "alarms"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(EVENT_ID, unique=True)
    gw: Mapped[str] = mapped_column(String(64))
    bed: Mapped[str] = mapped_column(String(64))
    stay: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(TS)
    action: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    risk: Mapped[float | None] = mapped_column(Float)
    model_name: Mapped[str | None] = mapped_column(String(128))
    model_version: Mapped[str | None] = mapped_column(String(64))
    silence_seconds: Mapped[int | None] = mapped_column(Integer)
    feedback: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(TS)
    # The model's risk alarm or the NEWS2 response alarm (migration 0005).
    source: Mapped[str] = mapped_column(String(16), server_default="model")


class ObservationEvent(Base):
    """Nurse observations at the bedside (`vigil.observation/1`): supplemental oxygen
    with device and flow, ACVPU, SpO2 scale with its reason; who and when."""

    __tablename__ = "observations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(EVENT_ID, unique=True)
    gw: Mapped[str] = mapped_column(String(64))
    bed: Mapped[str] = mapped_column(String(64))
    stay: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(TS)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(16))
    device: Mapped[str | None] = mapped_column(String(32))
    flow_l_min: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(TS)


class ShadowSummaryEvent(Base):
    """Shadow evaluation summaries (`vigil.shadow/1`, migration 0006): per gateway and
    period, the active and the shadow model's steps, risk histogram, alarm steps and
    alarms raised, and their agreement per step; what `vigil hub rollout --gate shadow`
    reads (cloud_hub/rollout/gate.py). Refused/dropped candidates carry the reason."""

    __tablename__ = "shadow_summaries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(EVENT_ID, unique=True)
    gw: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(TS)
    channel: Mapped[str] = mapped_column(String(64), index=True)
    trigger: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    candidate_name: Mapped[str | None] = mapped_column(String(128))
    candidate_version: Mapped[str | None] = mapped_column(String(64))
    period_start: Mapped[datetime] = mapped_column(TS)
    period_end: Mapped[datetime] = mapped_column(TS)
    step_seconds: Mapped[int] = mapped_column(Integer)
    active: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    shadow: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    shadow_name: Mapped[str | None] = mapped_column(String(128))
    shadow_version: Mapped[str | None] = mapped_column(String(64))
    both: Mapped[int] = mapped_column(Integer)
    only_active: Mapped[int] = mapped_column(Integer)
    only_shadow: Mapped[int] = mapped_column(Integer)
    neither: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(TS)


class ModelStateEvent(Base):
    __tablename__ = "model_states"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(EVENT_ID, unique=True)
    gw: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(TS)
    state: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    active_name: Mapped[str | None] = mapped_column(String(128))
    active_version: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(TS)


class OutcomeLabel(Base):
    """What is known of a stay's outcome.

    source 'records' (hospital records, `vigil hub labels import`): kind 'onset' with
    onset_time, or 'no_sepsis'; one per stay, a re-import corrects it.
    source 'feedback' (nurse feedback on an alarm): kind 'deteriorating' or
    'false_alarm' at the feedback's time; one per feedback event.
    """

    __tablename__ = "outcome_labels"
    __table_args__ = (
        UniqueConstraint("source", "source_ref", name="uq_outcome_labels_source_ref"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stay: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(16))
    source_ref: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    onset_time: Mapped[datetime | None] = mapped_column(TS)
    by: Mapped[str] = mapped_column(String(128), default="")
    recorded_at: Mapped[datetime] = mapped_column(TS)


class ChannelRelease(Base):
    """A signed model release on vigil/v1/models/{channel}: the hub's release ledger.

    Written by `vigil hub rollout/rollback` when they publish (cloud_hub/rollout/ledger.py
    `StoreLedger`) and by every ingest worker that sees the retained release on the
    broker, idempotently by (channel, seq). The fleet view joins a gateway's channel
    to its newest release (the gateway's target); a rollback republishes an earlier
    one from `payload` (the whole signed release JSON), so the ledger lives in the
    hub store, shared by every hub replica, not on one host's disk.
    """

    __tablename__ = "channel_releases"
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(128))
    rollback: Mapped[bool] = mapped_column(Boolean, default=False)
    issued_at: Mapped[datetime | None] = mapped_column(TS)
    received_at: Mapped[datetime] = mapped_column(TS)
    payload: Mapped[bytes | None] = mapped_column(LargeBinary)  # the ModelRelease JSON


class DeadLetter(Base):
    """A message that could not be stored, kept with the reason (never dropped)."""

    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    gw: Mapped[str | None] = mapped_column(String(64), index=True)
    reason_kind: Mapped[str] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # raw bytes, possibly truncated
    size: Mapped[int] = mapped_column(Integer)  # bytes received
    truncated: Mapped[bool] = mapped_column(Boolean)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(TS)
