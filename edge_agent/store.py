"""The gateway's local SQLite store (sqlite-utils, WAL): steps, risk, alarms, outbox, inbox.

- `steps`: one row per bed and closed step: the aggregated vitals the model saw.
- `risk`: every scored (or insufficient-data) step with risk, NEWS2 and model version.
- `alarms`: every alarm state change with who, when and why (the audit trail).
- `outbox`: every MQTT message BEFORE it is sent; leaves it only when the broker's
  PUBACK arrived, so a broker outage or a power cut loses nothing. (`outbox` holds
  exactly the messages not yet acknowledged: readers count it as the backlog.)
- `outbox_sent`: acknowledged messages, kept with `acked_at` for a retention period
  (`prune_sent`), because a PUBACK only means the broker took the message: a broker
  killed before it delivered them loses them. The hub then asks for a `resend`
  (`requeue_since`), and they are queued again, same payloads, same event_ids.
- `outbox_rejected`: messages the broker refused (e.g. not authorised): set aside
  with the reason, never retried forever, never silently dropped.
- `inbox`: messages received on `cmd` and `models/{channel}` (valid or not, with the
  reason), for the model-update logic and for audit.
- `admissions`: per bed, who is admitted there from the hospital's ADT feed
  (edge_agent/admission.py: pseudonyms, ICU admission time, age, sex, since when; never
  a raw patient id), so a restart keeps it; a discharge deletes the bed's row.

One connection shared by the gateway's threads behind a lock: writes are tiny and
SQLite serialises them anyway.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from contracts.timeutil import iso_ms_offset, utc_now


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        if self.path != ":memory:":
            self.db.enable_wal()
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        self._lock = threading.Lock()
        self._create()

    def _create(self) -> None:
        t = self.db.table
        t("steps").create(
            {
                "bed": str,
                "stay": str,
                "step_start": str,
                "step_seconds": int,
                "values": str,
                "static": str,
                "readings": int,
            },
            pk=("bed", "stay", "step_start"),
            if_not_exists=True,
        )
        t("risk").create(
            {
                "event_id": str,
                "bed": str,
                "stay": str,
                "window_end": str,
                "risk": float,
                "threshold": float,
                "alarm_level": str,
                "insufficient": int,
                "observed": int,
                "news2": int,
                "model": str,
                "version": str,
            },
            pk="event_id",
            if_not_exists=True,
        )
        t("alarms").create(
            {
                "event_id": str,
                "ts": str,
                "bed": str,
                "stay": str,
                "action": str,
                "level": str,
                "by": str,
                "reason": str,
                "risk": float,
                "model": str,
                "version": str,
                "silence_seconds": int,
                "feedback": str,
                "note": str,
            },
            pk="event_id",
            if_not_exists=True,
        )
        # AUTOINCREMENT: ids never reused after deletes, so "id > last sent" stays in order.
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER, retain INTEGER, created TEXT)"
        )
        # resend_of: the outbox_sent id a re-queued row copies (NULL for an original),
        # so that acknowledging a resend does not file the same message twice.
        if "resend_of" not in self.db["outbox"].columns_dict:
            self.db.execute("ALTER TABLE outbox ADD COLUMN resend_of INTEGER")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS outbox_sent (id INTEGER PRIMARY KEY, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER, retain INTEGER, "
            "created TEXT, acked_at TEXT NOT NULL)"
        )
        self.db.execute("CREATE INDEX IF NOT EXISTS outbox_sent_acked ON outbox_sent (acked_at)")
        self.db.execute("CREATE INDEX IF NOT EXISTS outbox_sent_created ON outbox_sent (created)")
        t("outbox_rejected").create(
            {"id": int, "topic": str, "payload": bytes, "reason": str, "at": str},
            pk="id",
            if_not_exists=True,
        )
        t("inbox").create(
            {"id": int, "topic": str, "payload": bytes, "valid": int, "reason": str, "at": str},
            pk="id",
            if_not_exists=True,
        )
        t("admissions").create(
            {
                "bed": str,
                "patient": str,
                "stay": str,
                "icu_admit": str,
                "hosp_admit": str,
                "age": float,
                "sex": float,
                "since": str,
                "event": str,
            },
            pk="bed",
            if_not_exists=True,
        )

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    # --- data ------------------------------------------------------------------
    def add_step(self, row: dict[str, Any]) -> None:
        row = dict(row, values=json.dumps(row["values"]), static=json.dumps(row["static"]))
        with self._lock:
            self.db["steps"].upsert(row, pk=("bed", "stay", "step_start"))

    def add_risk(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.db["risk"].insert(row, replace=True)

    def add_alarm(self, row: dict[str, Any]) -> None:
        with self._lock:
            self.db["alarms"].insert(row, replace=True)

    def add_inbox(self, topic: str, payload: bytes, valid: bool, reason: str = "") -> None:
        with self._lock:
            self.db["inbox"].insert(
                {
                    "topic": topic,
                    "payload": payload,
                    "valid": int(valid),
                    "reason": reason,
                    "at": iso_ms_offset(utc_now()),
                }
            )

    def put_admission(self, row: dict[str, Any]) -> None:
        """The bed's admission (edge_agent/admission.py `Admission.row()`), replacing any."""
        with self._lock:
            self.db["admissions"].insert(row, replace=True)

    def drop_admission(self, bed: str) -> None:
        with self._lock:
            self.db.conn.execute("DELETE FROM admissions WHERE bed = ?", (bed,))

    def rows(self, table: str, where: str | None = None, params: Any = None) -> list[dict]:
        with self._lock:
            return list(self.db[table].rows_where(where, params or [], order_by="rowid"))

    # --- outbox ----------------------------------------------------------------
    def enqueue(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        with self._lock:
            return (
                self.db["outbox"]
                .insert(
                    {
                        "topic": topic,
                        "payload": payload,
                        "qos": qos,
                        "retain": int(retain),
                        "created": iso_ms_offset(utc_now()),
                    }
                )
                .last_pk
            )

    def pending(self, after_id: int, limit: int) -> list[OutboxRow]:
        with self._lock:
            cur = self.db.conn.execute(
                "SELECT id, topic, payload, qos, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            )
            return [OutboxRow(r[0], r[1], bytes(r[2]), r[3], bool(r[4])) for r in cur]

    def acked(self, ids: list[int]) -> None:
        """The broker acknowledged these rows: file them in `outbox_sent` (originals
        only, a resend is already there) and take them off the backlog, atomically."""
        if not ids:
            return
        now = iso_ms_offset(utc_now())
        params = [(i,) for i in ids]
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN")
            try:
                conn.executemany(
                    "INSERT OR IGNORE INTO outbox_sent "
                    "(id, topic, payload, qos, retain, created, acked_at) "
                    "SELECT id, topic, payload, qos, retain, created, ? FROM outbox "
                    "WHERE id = ? AND resend_of IS NULL",
                    [(now, i) for i in ids],
                )
                conn.executemany("DELETE FROM outbox WHERE id = ?", params)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def requeue_since(self, since: datetime, topic_prefix: str) -> int:
        """Queue again, in their original order, the acknowledged non-retained messages
        on topics under `topic_prefix` enqueued at or after `since`; returns how many.

        Same payloads, hence same event_ids: the hub stores each one once whatever
        it already had. Retained messages (status, model state) are left out: the
        broker's retained copy and the next status carry the current state anyway.
        """
        cutoff = iso_ms_offset(since)  # a naive `since` is UTC
        like = topic_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._lock:
            cur = self.db.conn.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, created, resend_of) "
                "SELECT topic, payload, qos, retain, ?, id FROM outbox_sent "
                "WHERE created >= ? AND retain = 0 AND topic LIKE ? ESCAPE '\\' ORDER BY id",
                (iso_ms_offset(utc_now()), cutoff, like),
            )
            return cur.rowcount

    def prune_sent(self, older_than: datetime, limit: int = 5000) -> int:
        """Delete up to `limit` acknowledged messages acked before `older_than` (oldest
        first; bounded so one call never holds the store for long); returns how many."""
        cutoff = iso_ms_offset(older_than)
        with self._lock:
            cur = self.db.conn.execute(
                "DELETE FROM outbox_sent WHERE id IN (SELECT id FROM outbox_sent "
                "WHERE acked_at < ? ORDER BY id LIMIT ?)",
                (cutoff, limit),
            )
            return cur.rowcount

    def sent_size(self) -> int:
        with self._lock:
            return self.db.conn.execute("SELECT count(*) FROM outbox_sent").fetchone()[0]

    def reject(self, row_id: int, reason: str) -> None:
        with self._lock:
            cur = self.db.conn.execute("SELECT topic, payload FROM outbox WHERE id = ?", (row_id,))
            r = cur.fetchone()
            if r is None:
                return
            self.db["outbox_rejected"].insert(
                {
                    "id": row_id,
                    "topic": r[0],
                    "payload": r[1],
                    "reason": reason,
                    "at": iso_ms_offset(utc_now()),
                },
                replace=True,
            )
            self.db.conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def outbox_size(self) -> int:
        with self._lock:
            return self.db.conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
