"""Outcome labels: hospital records imported from CSV, and the label rule.

What the hub knows of a stay's outcome comes from two places:
- hospital records (`vigil hub labels import FILE.csv`, columns `stay_id,onset_time`):
  an onset time, or an empty onset_time for a stay that had no sepsis. One record
  per stay; importing again corrects it. These win over nurse feedback.
- nurse feedback on alarms (stored by the ingest): 'deteriorating' at a time is
  taken as the onset; 'false_alarm' at a time t says onset (if any) is after t, so
  rows up to t - 6 h are surely 0 and later rows stay unknown.

`label_for` turns them into the canonical label of each hourly row, the rule of the
base dataset: 1 from 6 h before onset, 0 before that or for a stay without sepsis,
<NA> when nothing is known.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from cloud_hub.store.models import OutcomeLabel
from cloud_hub.store.writer import _insert
from contracts import topics
from contracts.timeutil import parse_iso_utc, utc_now

HORIZON = timedelta(hours=6)  # SepsisLabel: 1 from 6 h before onset
FLEET_PREFIX = "fleet:"  # canonical stay ids of fleet data: source prefix + stay
REQUIRED = ("stay_id", "onset_time")
NO_SEPSIS = {"", "none", "no_sepsis", "no sepsis"}


class LabelFileError(ValueError):
    """The file as a whole cannot be read (missing columns, not a CSV)."""


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (row number, what)

    def error_lines(self) -> list[str]:
        return [f"row {n}: {msg}" for n, msg in self.errors]


@dataclass(frozen=True)
class Outcome:
    source: str  # records | feedback
    kind: str  # onset | no_sepsis | deteriorating | false_alarm
    time: datetime | None


def parse_time(text: str) -> datetime:
    """ISO-8601; naive times are UTC (records exported from the hospital in UTC)."""
    return parse_iso_utc(text.strip())


def parse_outcomes_csv(text: str) -> tuple[list[dict], ImportReport]:
    """Validate rows; row numbers are as a spreadsheet shows them (header = row 1)."""
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise LabelFileError(
            f"missing column(s) {', '.join(missing)}: the header must name {', '.join(REQUIRED)}"
            f" (found: {', '.join(cols) or 'nothing'})"
        )
    reader.fieldnames = cols
    good: dict[str, dict] = {}
    first_row: dict[str, int] = {}
    for i, row in enumerate(reader, start=2):
        if None in row:
            report.errors.append((i, f"{len(row[None])} value(s) more than the header's columns"))
            continue
        stay = (row.get("stay_id") or "").strip()
        onset_text = (row.get("onset_time") or "").strip()
        if stay.startswith(FLEET_PREFIX):
            stay = stay[len(FLEET_PREFIX) :]
        try:
            topics.check_id("stay", stay)
        except ValueError as e:
            report.errors.append((i, f"stay_id: {e}"))
            continue
        if stay in first_row:
            report.errors.append((i, f"stay_id {stay!r} already given in row {first_row[stay]}"))
            continue
        if onset_text.lower() in NO_SEPSIS:
            kind, onset = "no_sepsis", None
        else:
            try:
                kind, onset = "onset", parse_time(onset_text)
            except ValueError:
                report.errors.append(
                    (
                        i,
                        f"onset_time {onset_text!r} is not an ISO-8601 time "
                        "(e.g. 2026-03-01T14:00:00Z), nor empty for 'no sepsis'",
                    )
                )
                continue
        first_row[stay] = i
        good[stay] = {"stay": stay, "kind": kind, "onset_time": onset}
    return list(good.values()), report


def import_outcomes(engine: Engine, path: Path, now: datetime | None = None) -> ImportReport:
    """Store the valid rows of an outcomes CSV; report the others by row number."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelFileError(f"cannot read {path}: {e}") from None
    rows, report = parse_outcomes_csv(text)
    now = now or utc_now()
    if rows:
        t = OutcomeLabel.__table__
        with engine.begin() as conn:
            for r in rows:
                stmt = _insert(conn, t).values(
                    source="records",
                    source_ref=r["stay"],
                    by=f"import:{path.name}",
                    recorded_at=now,
                    **r,
                )
                stmt = stmt.on_conflict_do_update(
                    index_elements=["source", "source_ref"],
                    set_={k: stmt.excluded[k] for k in ("kind", "onset_time", "by", "recorded_at")},
                )
                conn.execute(stmt)
    report.imported = len(rows)
    return report


def label_for(row_time: datetime, outcomes: Sequence[Outcome]) -> int | None:
    """The label of an hourly row whose data runs up to `row_time`."""
    records = [o for o in outcomes if o.source == "records"]
    if records:  # the hospital's record is the truth
        o = records[-1]
        if o.kind == "no_sepsis":
            return 0
        return int(row_time >= o.time - HORIZON)
    onsets = [o.time for o in outcomes if o.kind == "deteriorating"]
    if onsets:
        return int(row_time >= min(onsets) - HORIZON)
    cleared = [o.time for o in outcomes if o.kind == "false_alarm"]
    if cleared and row_time <= max(cleared) - HORIZON:
        return 0
    return None
