"""Idempotent writes of validated gateway messages (and dead letters) in batches.

One `write_batch` call is one transaction: the ingest commits a batch, then (and
only then) acknowledges its messages to the broker. Rows are inserted with
`INSERT ... ON CONFLICT (event_id) DO NOTHING ... RETURNING event_id` on both
SQLite and PostgreSQL, so a redelivered message is recognised as a duplicate and
the registry side effects (gateway state, stays, labels from feedback) are applied
only for messages stored for the first time.

Errors are told apart by exception TYPE (`is_transient`):
- transient, the store's or the network's fault: sqlalchemy `OperationalError`
  (connection refused or lost, database locked, disk full, read-only file),
  `InterfaceError`, `DisconnectionError`, a pool `TimeoutError`, any DBAPI error that
  invalidated its connection. `write_batch` raises them; the ingest keeps the batch,
  acknowledges nothing and retries with backoff (`vigil_hub_store_errors_total`).
- permanent, the data's fault: everything else (`IntegrityError`, `DataError`,
  `ProgrammingError`, an `OverflowError` or `ValueError` from binding a value, a
  `StatementError`...). The batch is then written again one message per transaction;
  a message still refused is dead-lettered (`store_error`) and the rest are stored.
Dead letters are cleaned (`dead_letter_row`: NUL and control characters escaped,
lengths bounded, a gateway id kept only if it is one) and written one per transaction
when their batch is refused, so the store cannot refuse one for its content; if it
refuses one anyway, the store is faulty (`StoreFault`, retried as transient).
Dead letters never create or touch a gateway in the registry: junk on a made-up
gateway's topic is set aside, not taken as a sign of that gateway (no resend to it).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, or_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from contracts.messages import (
    Alarm,
    ModelRef,
    ModelState,
    Observation,
    Risk,
    ShadowSummary,
    Status,
    Vitals,
    clean_text,
)
from contracts.timeutil import as_utc  # store UTC only: SQLite keeps wall time, no offset
from contracts.topics import check_id

from .models import (
    AlarmEvent,
    ChannelRelease,
    DeadLetter,
    Gateway,
    GatewayStatus,
    ModelStateEvent,
    ObservationEvent,
    OutcomeLabel,
    RiskEvent,
    ShadowSummaryEvent,
    Stay,
    VitalsSummary,
)

log = logging.getLogger(__name__)

# Dead letters keep the raw bytes up to this size (plus the full size and sha256), so
# a flood of oversized junk cannot fill the store.
DEAD_LETTER_KEEP_BYTES = 64 * 1024
DEAD_LETTER_REASON_CHARS = 2000
DEAD_LETTER_TOPIC_CHARS = 1024


class StoreFault(RuntimeError):
    """The store refused a row that cannot be the data's fault (a cleaned dead letter,
    a bounded release): the store is broken, so the batch is retried like a transient
    error and nothing is acknowledged."""


KIND_TABLE: dict[type, Table] = {
    Status: GatewayStatus.__table__,
    Vitals: VitalsSummary.__table__,
    Risk: RiskEvent.__table__,
    Alarm: AlarmEvent.__table__,
    ModelState: ModelStateEvent.__table__,
    Observation: ObservationEvent.__table__,
    ShadowSummary: ShadowSummaryEvent.__table__,
}
KIND_NAME: dict[type, str] = {
    Status: "status",
    Vitals: "vitals",
    Risk: "risk",
    Alarm: "alarm",
    ModelState: "model",
    Observation: "observation",
    ShadowSummary: "shadow",
}

GatewayMessage = Status | Vitals | Risk | Alarm | ModelState | Observation | ShadowSummary


@dataclass(frozen=True)
class Accepted:
    """A validated message and when/how the hub received it."""

    message: GatewayMessage
    received_at: datetime
    retained: bool = False
    topic: str = ""
    payload: bytes = b""  # as received, kept if the store refuses the row


@dataclass(frozen=True)
class Rejected:
    """A message that failed validation: kept as a dead letter with the reason."""

    topic: str
    payload: bytes
    reason_kind: (
        str  # malformed | oversized | schema | topic_mismatch | unknown_topic | store_error
    )
    reason: str
    received_at: datetime
    gw: str | None = None


@dataclass
class BatchResult:
    stored: Counter[str] = field(default_factory=Counter)  # by kind
    duplicates: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)  # by reason_kind
    stored_ids: set[str] = field(default_factory=set)
    last_seen: dict[str, datetime] = field(default_factory=dict)  # gw -> received_at

    def merge(self, other: BatchResult) -> None:
        self.stored.update(other.stored)
        self.duplicates.update(other.duplicates)
        self.dead.update(other.dead)
        self.stored_ids |= other.stored_ids
        for gw, t in other.last_seen.items():
            if gw not in self.last_seen or t > self.last_seen[gw]:
                self.last_seen[gw] = t


def _insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert rows, skipping those whose event_id exists; returns the ids inserted."""
    if not rows:
        return set()
    stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=["event_id"])
    return {r[0] for r in conn.execute(stmt.returning(table.c.event_id), list(rows))}


def _model(ref: ModelRef | None) -> tuple[str | None, str | None]:
    return (ref.name, ref.version) if ref is not None else (None, None)


def message_row(m: GatewayMessage, received_at: datetime, retained: bool = False) -> dict:
    """The row of a message in its kind's table."""
    base = {
        "event_id": str(m.event_id),
        "gw": m.gw,
        "ts": as_utc(m.ts),
        "received_at": as_utc(received_at),
    }
    if isinstance(m, Status):
        name, version = _model(m.model)
        return base | {
            "state": m.state,
            "agent_version": m.agent_version,
            "model_name": name,
            "model_version": version,
            "channel": m.channel,
            "outbox": m.outbox,
            "beds": [b.model_dump() for b in m.beds],
            "retained": retained,
        }
    if isinstance(m, Vitals):
        return base | {
            "bed": m.bed,
            "stay": m.stay,
            "step_start": as_utc(m.step_start),
            "step_seconds": m.step_seconds,
            "iculos_hours": m.iculos_hours,
            "values": m.values,
            "readings": m.readings,
            "static": m.static,
        }
    if isinstance(m, Risk):
        return base | {
            "bed": m.bed,
            "stay": m.stay,
            "risk": m.risk,
            "threshold": m.threshold,
            "alarm_level": m.alarm_level,
            "model_name": m.model.name,
            "model_version": m.model.version,
            "news2_total": m.news2.total,
            "news2_risk": m.news2.risk,
            "news2": m.news2.model_dump(),
            "observed": m.observed,
            "insufficient_data": m.insufficient_data,
            "window_end": as_utc(m.window_end),
        }
    if isinstance(m, Alarm):
        name, version = _model(m.model)
        return base | {
            "bed": m.bed,
            "stay": m.stay,
            "action": m.action,
            "level": m.level,
            "by": m.by,
            "reason": m.reason,
            "risk": m.risk,
            "model_name": name,
            "model_version": version,
            "silence_seconds": m.silence_seconds,
            "feedback": m.feedback,
            "note": m.note,
            "source": m.source,
        }
    if isinstance(m, Observation):
        return base | {
            "bed": m.bed,
            "stay": m.stay,
            "kind": m.kind,
            "value": m.value,
            "device": m.device,
            "flow_l_min": m.flow_l_min,
            "reason": m.reason,
            "by": m.by,
        }
    if isinstance(m, ModelState):
        name, version = _model(m.active)
        return base | {
            "state": m.state,
            "name": m.name,
            "version": m.version,
            "channel": m.channel,
            "reason": m.reason,
            "active_name": name,
            "active_version": version,
        }
    if isinstance(m, ShadowSummary):
        cand_name, cand_version = _model(m.candidate)
        return base | {
            "channel": m.channel,
            "trigger": m.trigger,
            "state": m.state,
            "reason": m.reason,
            "candidate_name": cand_name,
            "candidate_version": cand_version,
            "period_start": as_utc(m.period_start),
            "period_end": as_utc(m.period_end),
            "step_seconds": m.step_seconds,
            "active": m.active.model_dump() if m.active else None,
            "shadow": m.shadow.model_dump() if m.shadow else None,
            "shadow_name": m.shadow.name if m.shadow else cand_name,
            "shadow_version": m.shadow.version if m.shadow else cand_version,
            "both": m.both,
            "only_active": m.only_active,
            "only_shadow": m.only_shadow,
            "neither": m.neither,
        }
    raise TypeError(f"not a gateway message: {type(m).__name__}")


def _gateway_id(gw: str | None) -> str | None:
    try:
        return check_id("gateway", gw) if gw else None
    except (TypeError, ValueError):
        return None


def dead_letter_row(r: Rejected) -> dict:
    """The dead letter of `r`, cleaned so no store refuses it: text without NUL or
    control characters and within its column, the gateway id only if it is one, the raw
    bytes (binary column) cut at DEAD_LETTER_KEEP_BYTES."""
    payload = bytes(r.payload)
    return {
        "topic": clean_text(r.topic or "", DEAD_LETTER_TOPIC_CHARS),
        "gw": _gateway_id(r.gw),
        "reason_kind": clean_text(r.reason_kind, 32),
        "reason": clean_text(r.reason, DEAD_LETTER_REASON_CHARS),
        "payload": payload[:DEAD_LETTER_KEEP_BYTES],
        "size": len(payload),
        "truncated": len(payload) > DEAD_LETTER_KEEP_BYTES,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "received_at": as_utc(r.received_at),
    }


def _touch_gateways(conn: Connection, last_seen: dict[str, datetime]) -> None:
    """Per-gateway last seen (any message), creating unknown gateways on first sight."""
    if not last_seen:
        return
    g = Gateway.__table__
    stmt = _insert(conn, g)
    stmt = stmt.on_conflict_do_update(
        index_elements=["gw"],
        set_={"last_seen": stmt.excluded.last_seen},
        where=g.c.last_seen < stmt.excluded.last_seen,
    )
    rows = [
        {
            "gw": gw,
            "state": "unknown",
            "agent_version": "",
            "channel": "",
            "outbox": 0,
            "beds": [],
            "first_seen": t,
            "last_seen": t,
        }
        for gw, t in sorted(last_seen.items())  # one order for all writers: no deadlocks
    ]
    conn.execute(stmt, rows)


def _apply_status(conn: Connection, s: Status, received_at: datetime) -> None:
    """The registry follows the newest status by arrival: a last will carries the time
    its session started (it was composed at connect), so it is older than the
    'online' it overrides; the broker delivers a topic's messages in order."""
    g = Gateway.__table__
    name, version = _model(s.model)
    values = {
        "state": s.state,
        "agent_version": s.agent_version,
        "model_name": name,
        "model_version": version,
        "channel": s.channel,
        "outbox": s.outbox,
        "beds": [b.model_dump() for b in s.beds],
        "status_ts": as_utc(s.ts),
        "status_received_at": received_at,
        "storage": s.storage,
        "storage_kept": s.storage_kept,
        "storage_dropped": s.storage_dropped,
        "thread_restarts": s.thread_restarts,
        "threads_failed": s.threads_failed,
        "failed_threads": list(s.failed_threads),
    }
    stmt = _insert(conn, g).values(gw=s.gw, first_seen=received_at, last_seen=received_at, **values)
    # 'offline' (usually the last will, composed when the session began) changes the
    # state only: versions, channel, outbox and beds stay as last reported online.
    keys = values if s.state == "online" else ("state", "status_ts", "status_received_at")
    stmt = stmt.on_conflict_do_update(
        index_elements=["gw"],
        set_={k: stmt.excluded[k] for k in keys},
        where=or_(
            g.c.status_received_at.is_(None),
            g.c.status_received_at <= stmt.excluded.status_received_at,
        ),
    )
    conn.execute(stmt)


def _apply_model_state(conn: Connection, m: ModelState) -> None:
    g = Gateway.__table__
    conn.execute(
        g.update()
        .where(g.c.gw == m.gw)
        .values(model_state=m.state, model_state_version=m.version, model_state_reason=m.reason)
    )


def _upsert_stays(conn: Connection, rows: Iterable[dict]) -> None:
    st = Stay.__table__
    latest: dict[str, dict] = {}
    for r in rows:
        cur = latest.get(r["stay"])
        if cur is None or r["received_at"] > cur["last_seen"]:
            latest[r["stay"]] = {
                "stay": r["stay"],
                "gw": r["gw"],
                "bed": r["bed"],
                "first_seen": r["received_at"],
                "last_seen": r["received_at"],
            }
    if not latest:
        return
    stmt = _insert(conn, st)
    stmt = stmt.on_conflict_do_update(
        index_elements=["stay"],
        set_={
            "last_seen": stmt.excluded.last_seen,
            "gw": stmt.excluded.gw,
            "bed": stmt.excluded.bed,
        },
        where=st.c.last_seen < stmt.excluded.last_seen,
    )
    conn.execute(stmt, [latest[k] for k in sorted(latest)])


def _feedback_labels(conn: Connection, alarms: Iterable[Alarm]) -> None:
    rows = [
        {
            "stay": a.stay,
            "source": "feedback",
            "source_ref": str(a.event_id),
            "kind": a.feedback,
            "onset_time": as_utc(a.ts),
            "by": a.by,
            "recorded_at": as_utc(a.ts),
        }
        for a in alarms
        if a.action == "feedback" and a.feedback is not None
    ]
    if rows:
        stmt = _insert(conn, OutcomeLabel.__table__).on_conflict_do_nothing(
            index_elements=["source", "source_ref"]
        )
        conn.execute(stmt, rows)


@dataclass(frozen=True)
class ReleaseSeen:
    """A model release seen on its channel's topic (`channel_releases` row)."""

    channel: str
    seq: int
    name: str
    version: str
    sha256: str
    key_id: str
    rollback: bool
    issued_at: datetime | None
    received_at: datetime
    payload: bytes | None = None  # the release JSON as published (for rollbacks)

    def row(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["received_at"] = as_utc(self.received_at)
        d["issued_at"] = as_utc(self.issued_at) if self.issued_at else None
        return d


def _write_releases(conn: Connection, releases: Sequence[ReleaseSeen], res: BatchResult) -> None:
    rows = list({(r.channel, r.seq): r.row() for r in releases}.values())
    table = ChannelRelease.__table__
    stmt = _insert(conn, table).on_conflict_do_nothing(index_elements=["channel", "seq"])
    new = conn.execute(stmt.returning(table.c.seq), rows).all()
    res.stored["release"] += len(new)
    res.duplicates["release"] += len(releases) - len(new)


def _write(
    conn: Connection,
    accepted: Sequence[Accepted],
    rejected: Sequence[Rejected],
    releases: Sequence[ReleaseSeen] = (),
) -> BatchResult:
    res = BatchResult()
    if releases:
        _write_releases(conn, releases, res)
    by_kind: dict[type, list[Accepted]] = {}
    seen: set[str] = set()
    for a in accepted:
        gw_t = res.last_seen.get(a.message.gw)
        if gw_t is None or a.received_at > gw_t:
            res.last_seen[a.message.gw] = a.received_at
        eid = str(a.message.event_id)
        if eid in seen:  # the same message twice in one batch
            res.duplicates[KIND_NAME[type(a.message)]] += 1
            continue
        seen.add(eid)
        by_kind.setdefault(type(a.message), []).append(a)
    # Dead letters (`rejected`) never touch the registry: see the module docstring.
    _touch_gateways(conn, res.last_seen)
    for kind, items in by_kind.items():
        rows = [message_row(a.message, a.received_at, a.retained) for a in items]
        new = insert_ignore(conn, KIND_TABLE[kind], rows)
        name = KIND_NAME[kind]
        res.stored[name] += len(new)
        res.duplicates[name] += len(items) - len(new)
        res.stored_ids |= new
        fresh = [a for a in items if str(a.message.event_id) in new]
        if kind is Status:
            for a in sorted(fresh, key=lambda a: a.received_at):
                _apply_status(conn, a.message, a.received_at)
        elif kind is ModelState:
            for a in sorted(fresh, key=lambda a: a.received_at):
                _apply_model_state(conn, a.message)
        elif kind in (Vitals, Risk, Alarm):
            _upsert_stays(conn, (r for r in rows if r["event_id"] in new))
            if kind is Alarm:
                _feedback_labels(conn, (a.message for a in fresh))
    if rejected:
        conn.execute(DeadLetter.__table__.insert(), [dead_letter_row(r) for r in rejected])
        res.dead.update(r.reason_kind for r in rejected)
    return res


def is_transient(e: BaseException) -> bool:
    """The store's or network's trouble (retry the batch later, acknowledge nothing),
    rather than a row the store refuses (per-row fallback, dead letter). By type only:
    see the module docstring for the two lists."""
    return isinstance(
        e, OperationalError | InterfaceError | DisconnectionError | PoolTimeoutError | StoreFault
    ) or (isinstance(e, DBAPIError) and e.connection_invalidated)


def error_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return clean_text(f"{type(e).__name__}: {text.splitlines()[0] if text else ''}", 300)


def write_batch(
    engine: Engine,
    accepted: Sequence[Accepted],
    rejected: Sequence[Rejected] = (),
    releases: Sequence[ReleaseSeen] = (),
) -> BatchResult:
    """Store a batch in one transaction.

    If the store refuses the batch permanently (`is_transient` False: e.g. PostgreSQL
    refuses a NUL character in text, SQLite an integer over 2^63), every message is
    written again in its own transaction and the ones still refused become dead
    letters (reason_kind 'store_error'), so one bad row can never block the stream.
    Transient errors propagate: the caller retries the batch later and acknowledges
    nothing meanwhile.
    """
    try:
        with engine.begin() as conn:
            return _write(conn, accepted, rejected, releases)
    except Exception as e:
        if is_transient(e):
            raise
        log.warning(
            "event=batch_refused size=%d error=%s; storing one by one",
            len(accepted) + len(rejected) + len(releases),
            error_line(e),
        )
    total = BatchResult()
    refused: list[Rejected] = []
    for rel in releases:
        try:
            with engine.begin() as conn:
                total.merge(_write(conn, [], [], [rel]))
        except Exception as e:
            if is_transient(e):
                raise
            refused.append(
                Rejected(
                    topic=f"vigil/v1/models/{rel.channel}",
                    payload=rel.payload or b"",
                    reason_kind="store_error",
                    reason=f"store refused release: {error_line(e)}",
                    received_at=rel.received_at,
                )
            )
    for a in accepted:
        try:
            with engine.begin() as conn:
                total.merge(_write(conn, [a], []))
        except Exception as e:
            if is_transient(e):
                raise
            refused.append(
                Rejected(
                    topic=a.topic,
                    payload=a.payload or a.message.to_json(),
                    reason_kind="store_error",
                    reason=f"store refused {KIND_NAME[type(a.message)]}: {error_line(e)}",
                    received_at=a.received_at,
                    gw=a.message.gw,
                )
            )
    total.merge(write_dead_letters(engine, [*rejected, *refused]))
    return total


def write_dead_letters(engine: Engine, rejected: Sequence[Rejected]) -> BatchResult:
    """Dead letters in one transaction, or one by one if the store refuses that; one it
    still refuses is written again with its reason and topic replaced by plain text; a
    refusal of that is a store fault (`StoreFault`, transient): nothing is lost."""
    res = BatchResult()
    if not rejected:
        return res
    try:
        with engine.begin() as conn:
            return _write(conn, [], rejected)
    except Exception as e:
        if is_transient(e):
            raise
        log.warning("event=dead_letters_refused size=%d error=%s", len(rejected), error_line(e))
    for r in rejected:
        try:
            with engine.begin() as conn:
                res.merge(_write(conn, [], [r]))
            continue
        except Exception as e:
            if is_transient(e):
                raise
            plain = Rejected(
                topic="(refused by the store)",
                payload=r.payload,
                reason_kind=r.reason_kind,
                reason=f"{r.reason_kind}: the store refused this dead letter ({type(e).__name__})",
                received_at=r.received_at,
            )
        try:
            with engine.begin() as conn:
                res.merge(_write(conn, [], [plain]))
        except Exception as e:
            if is_transient(e):
                raise
            raise StoreFault(f"the store refuses a plain dead letter: {error_line(e)}") from e
    return res
