"""Engines and migrations: SQLite file by default, PostgreSQL by URL.

`open_engine(url)` creates the engine (SQLite in WAL mode with a busy timeout so
several processes can share the file) and `migrate(engine)` runs the Alembic
migrations shipped in this package up to head. Both are what `vigil hub serve`
does on start; nothing else creates tables.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, text

from contracts.paths import work_dir

if TYPE_CHECKING:
    from collections.abc import Iterator

    from alembic.config import Config
    from sqlalchemy.engine.interfaces import DBAPIConnection
    from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger(__name__)
# Alembic narrates every step at INFO (some on import, hence the imports below are
# made inside the functions, after this); the hub logs one line per migration.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed number: serialises concurrent `upgrade head` of several hub workers on PostgreSQL.
_PG_MIGRATION_LOCK = 0x56494749  # "VIGI"


class StoreError(RuntimeError):
    """The store cannot be opened or migrated; the message says what and what to do."""


def default_url() -> str:
    """The embedded default: a SQLite file in the work folder."""
    return f"sqlite:///{work_dir() / 'hub.db'}"


def postgres_url(db: str, host: str = "127.0.0.1", port: int = 5432, user: str = "postgres") -> str:
    return f"postgresql+psycopg://{user}@{host}:{port}/{db}"


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (fleet, export) do not block the ingest writer; FULL: a committed
    # (hence acknowledged) batch survives a power cut, not only a process crash.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_engine(url: str | None = None) -> Engine:
    """An engine for `url` (default: `default_url()`); creates the SQLite folder."""
    url = url or default_url()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql") and "+" not in url.split(":", 1)[0]:
        # psycopg 3 is the driver installed with the hub extra (not psycopg2).
        url = url.replace("postgresql", "postgresql+psycopg", 1)
    return create_engine(url, pool_pre_ping=True)


class StoreLost(RuntimeError):
    """The SQLite store file at the configured path is gone or is another file."""


class StoreWatch:
    """Notices the SQLite file being deleted or replaced under a running hub.

    SQLite goes on writing into a deleted (unlinked) file through its open handles, so
    without this the hub would acknowledge messages into a file nobody can read again.
    `check()` compares the path's (device, inode) with the one the store opened; two
    `os.stat` calls per batch (about 2 µs each). Other stores (PostgreSQL): no-op.
    """

    def __init__(self, engine: Engine) -> None:
        db = engine.url.database if engine.dialect.name == "sqlite" else None
        self.path = Path(db) if db and db != ":memory:" and not db.startswith("file:") else None
        self.identity = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> None:
        """Raise StoreLost if the file is gone or replaced since `reset()`."""
        if self.path is None:
            return
        now = self._stat()
        if now is None:
            raise StoreLost(f"the store file {self.path} is gone")
        if now != self.identity:
            raise StoreLost(f"the store file {self.path} was replaced by another file")

    def reset(self) -> None:
        """Take the file now at the path as the store (after reopening it)."""
        self.identity = self._stat()

    def set_aside_stale_wal(self) -> list[Path]:
        """With the main file gone, its -wal/-shm must not be applied to a new file:
        rename them (`.lost-<time>`); returns the new names."""
        if self.path is None or self.path.exists():
            return []
        moved = []
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("-wal", "-shm"):
            f = self.path.with_name(self.path.name + suffix)
            if f.exists():
                target = f.with_name(f"{f.name}.lost-{stamp}")
                f.rename(target)
                moved.append(target)
        return moved


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


@contextlib.contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """Several workers starting on one fresh SQLite file migrate one after another."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:":
        yield
        return
    with open(f"{db}.migrate.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def migrate(engine: Engine, revision: str = "head") -> str:
    """Upgrade the schema to `revision`; returns the revision now current."""
    cfg = alembic_config(engine)
    with _sqlite_migration_lock(engine):
        return _migrate(engine, cfg, revision)


def _migrate(engine: Engine, cfg: Config, revision: str) -> str:
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as e:  # connection refused, missing database, permissions...
        raise StoreError(
            f"cannot migrate the hub store at {engine.url.render_as_string()}: {e}"
        ) from e
    log.info("event=store_migrated url=%s revision=%s", engine.url.render_as_string(), current)
    return current or ""


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(create_engine("sqlite://")))
    return script.get_current_head() or ""
