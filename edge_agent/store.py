"""The gateway's local SQLite store (sqlite-utils, WAL): steps, risk, alarms, outbox, inbox.

- `steps`: one row per bed and closed step: the aggregated vitals the model saw.
- `risk`: every scored (or insufficient-data) step with risk, NEWS2 and model version.
- `alarms`: every alarm state change with who, when and why (the audit trail), of
  the model's risk alarm or the NEWS2 response alarm (`source`).
- `observations`: every nurse observation (supplemental oxygen with device and flow,
  ACVPU, SpO2 scale with its reason) with who and when; a bed's latest ones of its
  stay (admitted, else of its last step, `last_stay`) are read back at start.
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
  a raw patient id) or admitted at the bedside (`source`), so a restart keeps it; a
  discharge deletes the bed's row.

One connection shared by the gateway's threads behind a lock: writes are tiny and
SQLite serialises them anyway.

Storage failing (disk full, I/O error, read-only file, database locked beyond its
timeout; `storage_problem` tells these from a bad row or a bug): the write is not
lost and the caller is not stopped. It is kept in memory, in order, with every write
after it (bounded by `max_kept_bytes`/`max_kept`, oldest dropped and counted in
`storage_dropped`), `failing` names the problem, `on_storage(problem)` is called once
per transition and one line is logged. `retry()` (the gateway calls it every second)
writes what was kept, in order, as soon as the store takes writes again, then clears
the state (`on_storage(None)`). Outgoing messages kept this way (`kept_messages`) can
be handed to the broker directly meanwhile; one the broker acknowledged is filed as
sent, the others go to the outbox as usual. Acknowledgements and refusals that could
not be filed are kept too and filed first on recovery (the rows stay in the outbox
until then, so a restart before recovery sends them again: at-least-once).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from contracts.timeutil import iso_ms_offset, utc_now

log = logging.getLogger(__name__)

# SQLite primary result codes that mean the storage failed, not the row.
_STORAGE_CODES = {
    13: "full",  # SQLITE_FULL
    10: "io_error",  # SQLITE_IOERR (and its extended codes)
    8: "read_only",  # SQLITE_READONLY
    5: "locked",  # SQLITE_BUSY (locked beyond the connection's timeout)
    6: "locked",  # SQLITE_LOCKED
    14: "unavailable",  # SQLITE_CANTOPEN
    26: "unavailable",  # SQLITE_NOTADB
    11: "corrupt",  # SQLITE_CORRUPT
    15: "locked",  # SQLITE_PROTOCOL
}
_OS_PROBLEMS = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EFBIG: "full",
    errno.EROFS: "read_only",
    errno.EACCES: "read_only",
    errno.EPERM: "read_only",
}
FLUSH_BATCH = 256  # kept writes per transaction on recovery
# WAL + FULL: every commit (an outbox row, a step, an alarm) is fsynced to the WAL before
# the write returns, so what the gateway calls stored survives a power cut, not only a
# crash (NORMAL syncs only at checkpoints and can lose the last commits on power loss:
# tests/test_durability.py shows both; cost per write in BENCHMARKS.md, Durability).
SYNCHRONOUS = "FULL"
# An incoming payload kept in memory while the store fails: at most this much of it
# (a 16 MB model release, redelivered at every reconnect, must not evict the beds' data).
KEPT_INBOX_BYTES = 64 * 1024


def storage_problem(e: BaseException) -> str | None:
    """What failed when `e` is the storage failing (full, io_error, read_only, locked,
    unavailable, corrupt); None when `e` is a bad row or a bug (constraint, type, misuse)."""
    if isinstance(e, OSError):
        return _OS_PROBLEMS.get(e.errno or 0, "io_error")
    if not isinstance(e, sqlite3.Error) or isinstance(
        e, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError
    ):
        return None
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return _STORAGE_CODES.get(code & 0xFF)
    if isinstance(e, sqlite3.OperationalError):  # no code: the message is all there is
        text = str(e).lower()
        if "full" in text:
            return "full"
        if "readonly" in text or "read-only" in text:
            return "read_only"
        if "locked" in text or "busy" in text:
            return "locked"
        return "io_error"
    return None


def _boot_problem(path: str, e: BaseException) -> str | None:
    """`storage_problem` of a store that cannot be opened: SQLite says only "unable to
    open" (unavailable) for a folder it may not write, which is `read_only` then."""
    problem = storage_problem(e)
    if problem == "unavailable" and path != ":memory:":
        folder = Path(path).parent
        if folder.is_dir() and not os.access(folder, os.W_OK):
            return "read_only"
    return problem


@dataclass
class KeptMessage:
    """An outgoing message the outbox could not take (storage failing), kept in memory.

    `info`: paho's handle once it was handed to the broker directly; the broker's
    PUBACK sets `info.is_published()`."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    created: str
    info: Any = None

    @property
    def acked(self) -> bool:
        if self.info is None:
            return False
        try:
            return bool(self.info.is_published())
        except (RuntimeError, ValueError):  # paho never sent it
            return False


@dataclass
class _Kept:
    """One write kept in memory: `apply(conn)` does it (under the store's lock)."""

    kind: str
    apply: Callable[[sqlite3.Connection], None]
    size: int
    message: KeptMessage | None = None
    done: bool = field(default=False)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Store:
    def __init__(
        self,
        path: str | Path,
        *,
        max_kept_bytes: int = 64 * 1024 * 1024,
        max_kept: int = 200_000,
        on_storage: Callable[[str | None], None] | None = None,
    ) -> None:
        self.path = str(path)
        # Storage failing: writes kept in memory, in order (see the module docstring).
        self.max_kept_bytes = max_kept_bytes
        self.max_kept = max_kept
        self.on_storage = on_storage
        self.failing: str | None = None  # the problem (full, io_error, ...) or None: ok
        self._mem_lock = threading.Lock()  # the kept writes; never held across SQLite
        self._kept: deque[_Kept] = deque()
        self._kept_bytes = 0
        self._unfiled_acks: list[int] = []
        self._unfiled_rejects: list[tuple[int, str]] = []
        self._dropping = False  # the oldest kept writes are being dropped (logged once)
        self.storage_counters = {
            "failures": 0,  # times the store went from ok to failing
            "kept": 0,  # writes kept in memory (total)
            "dropped": 0,  # kept writes dropped (oldest first) to stay within the bounds
            "flushed": 0,  # kept writes written to the store on recovery
            "flush_errors": 0,  # kept writes the store refused as bad rows (logged)
        }
        self._lock = threading.Lock()
        # Boot on a failing disk (full, read-only, I/O error): the gateway starts anyway,
        # in the storage-failing mode. Reads answer from an empty in-memory stand-in,
        # writes are kept in memory, and `retry()` opens the real file when it can.
        self.opened = False
        try:
            self.db = self._open(self.path)
            self.opened = True
        except Exception as e:
            problem = _boot_problem(self.path, e)
            if problem is None:
                raise
            self.db = self._open(":memory:")
            self.failing = problem
            self.storage_counters["failures"] += 1
            log.error(
                "storage failing at start (%s: %s): the gateway runs with its writes kept "
                "in memory and opens the store when it can",
                problem,
                getattr(e, "sqlite_errorname", None) or type(e).__name__,
            )

    def _open(self, path: str) -> sqlite_utils.Database:
        """Open (and create) the store at `path`; the connection is closed on failure."""
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            db = sqlite_utils.Database(conn)
            if path != ":memory:":
                db.enable_wal()
            conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")  # see SYNCHRONOUS
            self._create(db)
        except BaseException:
            conn.close()
            raise
        return db

    def _open_late(self) -> None:
        """Started on a failing disk: open the real store now (raises while it fails)."""
        db = self._open(self.path)
        with self._lock:
            old, self.db = self.db, db
            self.opened = True
        old.conn.close()
        log.warning("store opened at %s after failing at start", self.path)

    def _create(self, db: sqlite_utils.Database) -> None:
        t = db.table
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
                "source": str,
            },
            pk="event_id",
            if_not_exists=True,
        )
        # Stores made before the NEWS2 alarm (issue 15): every alarm was the model's.
        if "source" not in db["alarms"].columns_dict:
            db.execute("ALTER TABLE alarms ADD COLUMN source TEXT DEFAULT 'model'")
        t("observations").create(
            {
                "event_id": str,
                "ts": str,
                "bed": str,
                "stay": str,
                "kind": str,
                "value": str,
                "device": str,
                "flow_l_min": float,
                "reason": str,
                "by": str,
            },
            pk="event_id",
            if_not_exists=True,
        )
        # AUTOINCREMENT: ids never reused after deletes, so "id > last sent" stays in order.
        db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER, retain INTEGER, created TEXT)"
        )
        # resend_of: the outbox_sent id a re-queued row copies (NULL for an original),
        # so that acknowledging a resend does not file the same message twice.
        if "resend_of" not in db["outbox"].columns_dict:
            db.execute("ALTER TABLE outbox ADD COLUMN resend_of INTEGER")
        db.execute(
            "CREATE TABLE IF NOT EXISTS outbox_sent (id INTEGER PRIMARY KEY, "
            "topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER, retain INTEGER, "
            "created TEXT, acked_at TEXT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS outbox_sent_acked ON outbox_sent (acked_at)")
        db.execute("CREATE INDEX IF NOT EXISTS outbox_sent_created ON outbox_sent (created)")
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
                "source": str,
            },
            pk="bed",
            if_not_exists=True,
        )
        if "source" not in db["admissions"].columns_dict:  # before bedside admission
            db.execute("ALTER TABLE admissions ADD COLUMN source TEXT DEFAULT 'adt'")

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    # --- data ------------------------------------------------------------------
    # Every write below goes through `_write`: done now, or kept in memory while the
    # storage fails (True: stored now). A bad row (not the storage) still raises.
    def add_step(self, row: dict[str, Any]) -> bool:
        row = dict(row, values=json.dumps(row["values"]), static=json.dumps(row["static"]))
        return self._write(
            _Kept(
                "step",
                _insert("steps", row),
                _row_size(row),
            )
        )

    def add_risk(self, row: dict[str, Any]) -> bool:
        return self._write(_Kept("risk", _insert("risk", row), _row_size(row)))

    def add_alarm(self, row: dict[str, Any]) -> bool:
        return self._write(_Kept("alarm", _insert("alarms", row), _row_size(row)))

    def add_observation(self, row: dict[str, Any]) -> bool:
        """A nurse observation (oxygen, ACVPU, SpO2 scale) with who and when."""
        return self._write(_Kept("observation", _insert("observations", row), _row_size(row)))

    def add_inbox(self, topic: str, payload: bytes, valid: bool, reason: str = "") -> bool:
        row = {
            "topic": topic,
            "payload": payload,
            "valid": int(valid),
            "reason": reason,
            "at": iso_ms_offset(utc_now()),
        }
        if self.failing is not None and len(payload) > KEPT_INBOX_BYTES:
            # Kept in memory: its digest, not 16 MB that would evict the beds' data.
            digest = hashlib.sha256(payload).hexdigest()
            row["payload"] = b""
            row["reason"] = (
                f"{reason}; " if reason else ""
            ) + f"payload of {len(payload)} bytes not kept (storage failing), sha256 {digest}"
        return self._write(_Kept("inbox", _insert("inbox", row, replace=False), _row_size(row)))

    def put_admission(self, row: dict[str, Any]) -> bool:
        """The bed's admission (edge_agent/admission.py `Admission.row()`), replacing any."""
        return self._write(
            _Kept(
                "admission",
                _insert("admissions", row),
                _row_size(row),
            )
        )

    def drop_admission(self, bed: str) -> bool:
        return self._write(
            _Kept(
                "admission",
                lambda c: c.execute("DELETE FROM admissions WHERE bed = ?", (bed,)),
                64,
            )
        )

    # --- storage failing: keep, report, recover ------------------------------------
    def _write(self, op: _Kept) -> bool:
        with self._mem_lock:
            if self.failing is not None or self._kept:
                self._keep(op)  # behind what is already kept: order holds
                return False
        try:
            self._tx([op])
            return True
        except Exception as e:
            problem = storage_problem(e)
            if problem is None:
                raise
            with self._mem_lock:
                self._keep(op)
            self._fail(problem, e)
            return False

    def _tx(self, ops: list[_Kept]) -> None:
        """Apply `ops` in one transaction (all or none)."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    op.apply(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def _checkpoint(self) -> None:
        """Give the write-ahead log's space back to the disk (best effort): on a nearly
        full disk a WAL that only grows until its next checkpoint fills it again."""
        if self.path == ":memory:":
            return
        try:
            with self._lock:
                self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as e:
            log.debug("checkpoint failed: %s", e)

    def _keep(self, op: _Kept) -> None:
        """Under `_mem_lock`: keep `op`, dropping the oldest beyond the bounds."""
        self._kept.append(op)
        self._kept_bytes += op.size
        self.storage_counters["kept"] += 1
        while len(self._kept) > 1 and (
            self._kept_bytes > self.max_kept_bytes or len(self._kept) > self.max_kept
        ):
            old = self._kept.popleft()
            self._kept_bytes -= old.size
            if not old.done:
                self.storage_counters["dropped"] += 1
            if not self._dropping:
                self._dropping = True
                log.error(
                    "storage failing: memory bound reached (%d writes, %d bytes): "
                    "the oldest kept writes are dropped (counted in storage_dropped)",
                    self.max_kept,
                    self.max_kept_bytes,
                )

    def _fail(self, problem: str, e: BaseException) -> None:
        with self._mem_lock:
            was, self.failing = self.failing, problem
            if was is None:
                self.storage_counters["failures"] += 1
        if was == problem:
            return
        name = getattr(e, "sqlite_errorname", None) or type(e).__name__
        log.error(
            "storage failing (%s: %s, %s): writes are kept in memory until it recovers",
            problem,
            name,
            e,
        )
        if self.on_storage is not None:
            self.on_storage(problem)

    def _recovered(self) -> None:
        with self._mem_lock:
            if self.failing is None or self._kept:
                return
            self.failing = None
            self._dropping = False
        c = self.storage_counters
        log.warning(
            "storage recovered: kept writes stored (%d flushed, %d dropped in all)",
            c["flushed"],
            c["dropped"],
        )
        if self.on_storage is not None:
            self.on_storage(None)

    def retry(self) -> bool:
        """Write what was kept, in order, while the store takes it; True once nothing is
        kept any more (the failing state then cleared). Cheap when all is well."""
        if self.failing is None and not self._unfiled_acks and not self._unfiled_rejects:
            return True
        if not self.opened:
            try:
                self._open_late()
            except Exception as e:
                problem = _boot_problem(self.path, e)
                if problem is None:
                    raise
                self._fail(problem, e)
                return False
        try:
            self._file_unfiled()
        except Exception as e:
            problem = storage_problem(e)
            if problem is None:
                raise
            self._fail(problem, e)
            return False
        self._checkpoint()
        while True:
            with self._mem_lock:
                batch = [op for op, _ in zip(self._kept, range(FLUSH_BATCH), strict=False)]
            if not batch:
                break
            try:
                try:
                    self._tx(batch)  # one transaction: each page written once
                    for op in batch:
                        op.done = True
                except Exception as e:
                    if storage_problem(e) is not None:
                        raise
                    self._flush_one_by_one(batch)
            except Exception as e:
                problem = storage_problem(e)
                if problem is None:
                    raise
                self._fail(problem, e)
                return False
            with self._mem_lock:
                while self._kept and self._kept[0].done:
                    op = self._kept.popleft()
                    self._kept_bytes -= op.size
                    self.storage_counters["flushed"] += 1
        self._checkpoint()
        self._recovered()
        return self.failing is None

    def _flush_one_by_one(self, batch: list[_Kept]) -> None:
        """A batch with a bad row in it: each write alone; a bad row (not the storage)
        is set aside (logged, counted in flush_errors) and never blocks the others."""
        for op in batch:
            try:
                self._tx([op])
            except Exception as e:
                if storage_problem(e) is not None:
                    raise
                self.storage_counters["flush_errors"] += 1
                log.error("kept %s write refused by the store (%s): dropped", op.kind, e)
            op.done = True

    def _file_unfiled(self) -> None:
        with self._mem_lock:
            acks, self._unfiled_acks = self._unfiled_acks, []
            rejects, self._unfiled_rejects = self._unfiled_rejects, []
        try:
            if acks:
                self._file_acked(acks)
                acks = []
            while rejects:
                self._file_reject(*rejects[0])
                rejects.pop(0)
        except BaseException:
            with self._mem_lock:
                self._unfiled_acks[:0] = acks
                self._unfiled_rejects[:0] = rejects
            raise

    def kept_messages(self) -> list[KeptMessage]:
        """The outgoing messages kept in memory not yet handed to the broker, in order."""
        with self._mem_lock:
            return [
                op.message
                for op in self._kept
                if op.message is not None and op.message.info is None
            ]

    def kept(self) -> tuple[int, int]:
        """(writes, bytes) kept in memory now."""
        with self._mem_lock:
            return len(self._kept), self._kept_bytes

    def rows(self, table: str, where: str | None = None, params: Any = None) -> list[dict]:
        with self._lock:
            return list(self.db[table].rows_where(where, params or [], order_by="rowid"))

    def last_stay(self, bed: str) -> str | None:
        """The stay of the bed's latest stored step (None: no step stored)."""
        with self._lock:
            found = list(
                self.db["steps"].rows_where(
                    "bed = ?", [bed], order_by="step_start DESC", limit=1, select="stay"
                )
            )
        return found[0]["stay"] if found else None

    # --- outbox ----------------------------------------------------------------
    def enqueue(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Write a message to the outbox; its row id, or 0 when the storage fails and it
        is kept in memory instead (`kept_messages`: hand it to the broker directly)."""
        msg = KeptMessage(topic, payload, qos, retain, iso_ms_offset(utc_now()))
        rowid: list[int] = []

        def apply(c: sqlite3.Connection) -> None:
            if not msg.acked:
                cur = c.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (topic, payload, qos, int(retain), msg.created),
                )
                rowid.append(cur.lastrowid or 0)
                return
            # Handed to the broker directly and acknowledged while the store failed:
            # filed as sent (an outbox id first, so ids stay unique and in order).
            cur = c.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                (topic, payload, qos, int(retain), msg.created),
            )
            c.execute(
                "INSERT INTO outbox_sent (id, topic, payload, qos, retain, created, acked_at) "
                "SELECT id, topic, payload, qos, retain, created, ? FROM outbox WHERE id = ?",
                (iso_ms_offset(utc_now()), cur.lastrowid),
            )
            c.execute("DELETE FROM outbox WHERE id = ?", (cur.lastrowid,))

        op = _Kept("outbox", apply, len(payload) + len(topic) + 64, message=msg)
        return rowid[0] if self._write(op) and rowid else 0

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
        try:
            self._file_acked(ids)
        except Exception as e:
            problem = storage_problem(e)
            if problem is None:
                raise
            with self._mem_lock:  # filed on recovery (`retry`); until then still backlog
                self._unfiled_acks.extend(ids)
            self._fail(problem, e)

    def _file_acked(self, ids: list[int]) -> None:
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
                _rollback(conn)
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
        try:
            with self._lock:
                cur = self.db.conn.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created, resend_of) "
                    "SELECT topic, payload, qos, retain, ?, id FROM outbox_sent "
                    "WHERE created >= ? AND retain = 0 AND topic LIKE ? ESCAPE '\\' ORDER BY id",
                    (iso_ms_offset(utc_now()), cutoff, like),
                )
                return cur.rowcount
        except Exception as e:  # the hub asks again after its next reconnect
            problem = storage_problem(e)
            if problem is not None:
                self._fail(problem, e)
            raise

    def prune_sent(self, older_than: datetime, limit: int = 5000) -> int:
        """Delete up to `limit` acknowledged messages acked before `older_than` (oldest
        first; bounded so one call never holds the store for long); returns how many."""
        cutoff = iso_ms_offset(older_than)
        if self.failing is not None:
            return 0  # nothing written while the storage fails; pruned after recovery
        try:
            with self._lock:
                cur = self.db.conn.execute(
                    "DELETE FROM outbox_sent WHERE id IN (SELECT id FROM outbox_sent "
                    "WHERE acked_at < ? ORDER BY id LIMIT ?)",
                    (cutoff, limit),
                )
                return cur.rowcount
        except Exception as e:
            problem = storage_problem(e)
            if problem is None:
                raise
            self._fail(problem, e)
            return 0

    def sent_size(self) -> int:
        with self._lock:
            return self.db.conn.execute("SELECT count(*) FROM outbox_sent").fetchone()[0]

    def reject(self, row_id: int, reason: str) -> None:
        try:
            self._file_reject(row_id, reason)
        except Exception as e:
            problem = storage_problem(e)
            if problem is None:
                raise
            with self._mem_lock:  # filed on recovery; the row stays in the outbox until then
                self._unfiled_rejects.append((row_id, reason))
            self._fail(problem, e)

    def _file_reject(self, row_id: int, reason: str) -> None:
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


def _insert(
    table: str, row: dict[str, Any], *, replace: bool = True
) -> Callable[[sqlite3.Connection], None]:
    """The write of `row` into `table` (INSERT OR REPLACE: the whole row, by its key)."""
    cols = ", ".join(f'"{k}"' for k in row)
    marks = ", ".join("?" for _ in row)
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    sql = f"{verb} INTO {table} ({cols}) VALUES ({marks})"  # noqa: S608 - our own tables/keys
    values = tuple(row.values())
    return lambda c: c.execute(sql, values)  # type: ignore[return-value]


def _row_size(row: dict[str, Any]) -> int:
    """Rough bytes a row holds in memory (for the kept-writes bound)."""
    return 64 + sum(len(v) if isinstance(v, str | bytes) else 8 for v in row.values())


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (SQLite may have rolled back already on
    a full disk or an I/O error; a second ROLLBACK must not hide the first error)."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("rollback failed", exc_info=True)
