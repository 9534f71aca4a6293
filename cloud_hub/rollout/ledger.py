"""The release ledger: what was published on each channel, for rollbacks and targets.

`StoreLedger` is the hub store's `channel_releases` table (the default: shared by
every hub replica and kept with the rest of the hub's data; the ingest workers also
record there every release they see on the broker); `Ledger` is a folder of release
files per channel (`--ledger PATH`). `render_releases` lists either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from contracts import topics
from contracts.messages import ModelRelease
from contracts.paths import work_dir
from contracts.timeutil import iso_s, parse_iso, utc_now

from .release import RELEASE_KEY, RolloutError

if TYPE_CHECKING:
    from sqlalchemy import Engine


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    channel: str
    name: str
    version: str
    sha256: str
    key_id: str
    rollback: bool
    path: Path | None  # the release file (Ledger); None in the store (StoreLedger)
    payload: bytes | None = None  # the release JSON (StoreLedger)
    issued_at: datetime | None = None  # when the hub stamped it

    def release(self) -> ModelRelease:
        if self.payload is not None:
            return ModelRelease.model_validate_json(self.payload)
        if self.path is None:
            raise RolloutError(f"release {self.channel}/{self.seq} has no stored payload")
        return ModelRelease.model_validate_json(self.path.read_bytes())


class _LedgerQueries:
    """What both ledgers answer from `history(channel)`."""

    def history(self, channel: str) -> list[LedgerEntry]:
        raise NotImplementedError

    def channels(self) -> list[str]:
        raise NotImplementedError

    def current(self, channel: str) -> LedgerEntry | None:
        h = self.history(channel)
        return h[-1] if h else None

    def rollback_target(self, channel: str) -> LedgerEntry:
        """The release that was current before the current model on `channel`."""
        h = self.history(channel)
        if not h:
            raise RolloutError(f"nothing was ever published on channel {channel!r}")
        current = h[-1]
        ident = (current.name, current.version, current.sha256)
        for e in reversed(h[:-1]):
            if (e.name, e.version, e.sha256) != ident:
                return e
        raise RolloutError(
            f"channel {channel!r} has had only {current.name} {current.version}: "
            "no previous model to roll back to"
        )


class StoreLedger(_LedgerQueries):
    """The ledger in the hub store (`channel_releases`), SQLite or PostgreSQL.

    The ingest workers also record every release they see on the broker in the same
    table, idempotently by (channel, seq), so it holds what any hub host published.
    """

    def __init__(self, engine: Engine | str | None = None) -> None:
        from cloud_hub.store import migrate, open_engine

        if engine is None or isinstance(engine, str):
            engine = open_engine(engine)
            migrate(engine)
        self.engine = engine

    def record(self, release: ModelRelease) -> LedgerEntry:
        from cloud_hub.classify import classify_release
        from cloud_hub.store import Rejected, write_batch

        payload = release.to_json()
        seen = classify_release(topics.models(release.channel), payload, utc_now())
        if seen is None or isinstance(seen, Rejected):
            reason = seen.reason if seen is not None else "empty"
            raise RolloutError(f"not a release the ledger can keep: {reason}")
        try:
            write_batch(self.engine, [], [], [seen])
        except SQLAlchemyError as e:
            raise RolloutError(
                f"release {seen.seq} on {seen.channel!r} is published, but the ledger in "
                f"{self.engine.url.render_as_string()} could not record it "
                f"({str(e).splitlines()[0]}); a running `vigil hub serve` records it "
                "from the broker"
            ) from None
        return self._entry(seen.row())

    @staticmethod
    def _entry(r: Any) -> LedgerEntry:
        g = r.get if isinstance(r, dict) else r._mapping.get
        return LedgerEntry(
            seq=int(g("seq")),
            channel=g("channel"),
            name=g("name"),
            version=g("version"),
            sha256=g("sha256"),
            key_id=g("key_id"),
            rollback=bool(g("rollback")),
            path=None,
            payload=g("payload"),
            issued_at=g("issued_at"),
        )

    def history(self, channel: str) -> list[LedgerEntry]:
        from sqlalchemy import select

        from cloud_hub.store.models import ChannelRelease

        t = ChannelRelease.__table__
        try:
            with self.engine.connect() as c:
                q = select(t).where(t.c.channel == channel).order_by(t.c.seq)
                rows = c.execute(q).all()
        except SQLAlchemyError as e:
            raise self._unreadable(e) from None
        return [self._entry(r) for r in rows]

    def channels(self) -> list[str]:
        from sqlalchemy import select

        from cloud_hub.store.models import ChannelRelease

        try:
            with self.engine.connect() as c:
                q = select(ChannelRelease.channel).distinct().order_by(ChannelRelease.channel)
                return [ch for (ch,) in c.execute(q)]
        except SQLAlchemyError as e:
            raise self._unreadable(e) from None

    def _unreadable(self, e: Exception) -> RolloutError:
        where = self.engine.url.render_as_string()
        return RolloutError(f"release ledger in {where} unreadable: {str(e).splitlines()[0]}")

    def last_seq(self) -> int:
        from sqlalchemy import func, select

        from cloud_hub.store.models import ChannelRelease

        try:
            with self.engine.connect() as c:
                return int(c.execute(select(func.max(ChannelRelease.seq))).scalar() or 0)
        except SQLAlchemyError as e:
            raise self._unreadable(e) from None


class Ledger(_LedgerQueries):
    """What was published on each channel: `<root>/<channel>/<seq>.json` (the release)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else work_dir() / "rollout"

    def record(self, release: ModelRelease) -> LedgerEntry:
        folder = self.root / release.channel
        folder.mkdir(parents=True, exist_ok=True)
        seq = release.manifest[RELEASE_KEY]["seq"]
        path = folder / f"{seq:013d}.json"
        tmp = path.with_suffix(".json.new")
        with open(tmp, "wb") as fh:
            fh.write(release.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return self._entry(path, release)

    def _entry(self, path: Path, r: ModelRelease) -> LedgerEntry:
        stamp = r.manifest.get(RELEASE_KEY, {})
        return LedgerEntry(
            seq=int(stamp.get("seq", 0)),
            channel=r.channel,
            name=str(r.manifest.get("name")),
            version=str(r.manifest.get("version")),
            sha256=str(r.manifest.get("sha256")),
            key_id=str(r.signature.get("key_id")),
            rollback=bool(stamp.get("rollback")),
            path=path,
            issued_at=_iso(stamp.get("issued_at")),
        )

    def channels(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*.json")))

    def history(self, channel: str) -> list[LedgerEntry]:
        folder = self.root / channel
        if not folder.is_dir():
            return []
        out = []
        for p in sorted(folder.glob("*.json")):
            out.append(self._entry(p, ModelRelease.model_validate_json(p.read_bytes())))
        return out

    def last_seq(self) -> int:
        seqs = [int(p.stem) for p in self.root.glob("*/*.json")] if self.root.is_dir() else []
        return max(seqs, default=0)


def _iso(text: object) -> datetime | None:
    try:
        return parse_iso(str(text)) if text else None
    except ValueError:
        return None


def _utc_text(t: datetime | None) -> str | None:
    """UTC ISO text; a naive time (read back from SQLite) was stored as UTC."""
    return iso_s(t) if t else None


def render_releases(ledger: Ledger | StoreLedger, channel: str | None = None) -> list[dict]:
    """Every release of `channel` (or of every channel), oldest first, as rows."""
    rows = []
    for ch in [channel] if channel else ledger.channels():
        h = ledger.history(ch)
        for e in h:
            rows.append(
                {
                    "channel": ch,
                    "seq": e.seq,
                    "issued_at": _utc_text(e.issued_at),
                    "model": f"{e.name}@{e.version}",
                    "sha256": e.sha256,
                    "key_id": e.key_id,
                    "rollback": e.rollback,
                    "current": e is h[-1],
                }
            )
    return rows
