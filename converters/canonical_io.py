"""Shared by the dataset importers: the import report, plausibility checks, Parquet I/O.

Policy for bad input (the same for every importer):
- a file that cannot be read at all (truncated archive member, undecodable bytes, a
  header without the columns we need) is skipped whole and reported;
- a row that cannot be placed (wrong number of fields, no usable time) is skipped
  and reported with its file and line;
- a cell that is not a number, or a vital sign outside the catalogue's plausible
  range (`contracts.vitals`), becomes NaN, the row is kept, and the value is
  reported with the reason (a temperature that reads like °F in a °C column says so:
  we do not guess conversions for a column that claims to be °C);
- everything else goes on. The report counts what was skipped and blanked.

The canonical table is written as Parquet with the dataset fingerprint (sha256 of the
inputs) in the schema metadata under `vigil.fingerprint`, so a training run can read
it back with `load_canonical` and record it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.canonical import COLUMNS, DTYPES, LABEL_COLUMN, SOURCE_COLUMN
from contracts.vitals import BY_NAME, STATIC_FEATURES, VITAL_NAMES

FINGERPRINT_KEY = b"vigil.fingerprint"
SOURCE_KEY = b"vigil.source"
REPORT_KEY = b"vigil.import"  # a small JSON summary of the import (counts only)

# Plausible ranges of the static features (vitals' ranges are in the catalogue).
STATIC_RANGES: dict[str, tuple[float, float]] = {
    "Age": (0.0, 120.0),  # PhysioNet documents 100 for >= 90 (set A tops out at 89); MIMIC: 90
    "Gender": (0.0, 1.0),
    "HospAdmTime": (-100_000.0, 24.0),  # hours; a few sources carry small positive lags
    "ICULOS": (0.0, 100_000.0),
}

SCHEMA = pa.schema(
    [
        ("stay_id", pa.string()),
        ("hour", pa.int64()),
        *[(n, pa.float64()) for n in VITAL_NAMES],
        *[(n, pa.float64()) for n in STATIC_FEATURES],
        (LABEL_COLUMN, pa.int8()),
        (SOURCE_COLUMN, pa.string()),
    ]
)
assert tuple(SCHEMA.names) == COLUMNS  # the contract's order, checked at import


class SourceError(Exception):
    """The source cannot be imported at all (missing, unreadable, nothing usable)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (file, 1-based line, column), what, why."""

    file: str
    row: int | None  # line number in the file (header = line 1); None: whole file
    column: str | None
    value: str | None
    reason: str
    action: str  # what the importer did: "skipped file", "skipped row", "set NaN", ...

    def __str__(self) -> str:
        where = self.file + (f":{self.row}" if self.row is not None else "")
        what = f" {self.column}={self.value!r}" if self.column is not None else ""
        return f"{where}{what}: {self.reason} ({self.action})"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "reason": self.reason,
            "action": self.action,
        }


@dataclass
class ImportReport:
    """What an import read, wrote, skipped and why."""

    source: str
    dataset: str  # canonical `source` value: physionet2019, mimic3
    out: str | None = None
    fingerprint: str = ""
    files_read: int = 0
    files_skipped: int = 0
    stays: int = 0
    rows: int = 0
    positive_stays: int = 0
    positive_rows: int = 0
    unlabelled_rows: int = 0
    rows_skipped: int = 0
    values_blanked: int = 0  # cells set to NaN (not a number, implausible, wrong unit)
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    # Input set aside by rule rather than by fault, counted, not listed row by row
    # (e.g. MIMIC rows the source itself flags as errors, readings outside the stay).
    set_aside: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. checksums verified

    def set_aside_add(self, reason: str, n: int) -> None:
        if n:
            self.set_aside[reason] = self.set_aside.get(reason, 0) + int(n)

    def add(self, problem: Problem) -> None:
        self.problems.append(problem)

    def sort_problems(self) -> None:
        """File, then line order: how a person fixing the input reads them."""
        self.problems.sort(key=lambda p: (p.file, p.row or 0, p.column or ""))

    @property
    def problem_counts(self) -> dict[str, int]:
        """Problems by action (skipped file / skipped row / set NaN ...)."""
        return dict(Counter(p.action for p in self.problems))

    def summary(self) -> str:
        lines = [
            f"source: {self.source}",
            f"stays: {self.stays}  rows: {self.rows}  positive stays: {self.positive_stays}"
            f"  positive rows: {self.positive_rows}  unlabelled rows: {self.unlabelled_rows}",
            f"files read: {self.files_read}  files skipped: {self.files_skipped}"
            f"  rows skipped: {self.rows_skipped}  values set to NaN: {self.values_blanked}",
            f"fingerprint: {self.fingerprint}",
            f"time: {self.seconds:.1f} s"
            + (f" ({self.rows / self.seconds:,.0f} rows/s)" if self.seconds > 0 else ""),
        ]
        for reason, n in sorted(self.set_aside.items()):
            lines.append(f"set aside: {n} {reason}")
        lines.extend(f"note: {n}" for n in self.notes)
        if self.out:
            lines.insert(1, f"written: {self.out}")
        return "\n".join(lines)

    def counts(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "files_read": self.files_read,
            "files_skipped": self.files_skipped,
            "stays": self.stays,
            "rows": self.rows,
            "positive_stays": self.positive_stays,
            "positive_rows": self.positive_rows,
            "unlabelled_rows": self.unlabelled_rows,
            "rows_skipped": self.rows_skipped,
            "values_blanked": self.values_blanked,
            "problems": len(self.problems),
            "set_aside": dict(self.set_aside),
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        d = {"source": self.source, "out": self.out, "seconds": self.seconds, **self.counts()}
        d["problem_list"] = [p.as_dict() for p in self.problems]
        return json.dumps(d, indent=1)


def _unit_hint(name: str, value: float) -> str:
    """A guess at the unit mistake behind an implausible value, for the message only."""
    if name == "Temp" and 77.0 <= value <= 113.0:  # 25-45 °C written in °F
        return f"; looks like °F ({value:g} °F = {(value - 32) * 5 / 9:.1f} °C)"
    if name == "O2Sat" and 0.5 <= value <= 1.0:
        return "; looks like a fraction, not %"
    return ""


def blank_implausible(
    values: dict[str, np.ndarray],
    where: tuple[np.ndarray, np.ndarray],
    files: list[str],
    report: ImportReport,
) -> None:
    """Set implausible vitals and static features to NaN in place and report each one.

    `values` maps column -> float array; `where` = (file index, line number) per row.
    """
    file_idx, line = where
    for name, arr in values.items():
        if name in BY_NAME:
            lo, hi = BY_NAME[name].low, BY_NAME[name].high
            unit = BY_NAME[name].unit
        elif name in STATIC_RANGES:
            lo, hi = STATIC_RANGES[name]
            unit = ""
        else:
            continue
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(np.isfinite(arr) & ((arr < lo) | (arr > hi)))
        if name == "Gender":  # only 0 or 1
            with np.errstate(invalid="ignore"):
                bad = np.flatnonzero(np.isfinite(arr) & (arr != 0) & (arr != 1))
        for i in bad:
            v = float(arr[i])
            rng = "0 or 1" if name == "Gender" else f"{lo:g}-{hi:g} {unit}".strip()
            report.add(
                Problem(
                    files[file_idx[i]],
                    int(line[i]),
                    name,
                    repr(v),  # shortest text that reads back as the same number
                    f"outside the plausible range {rng}{_unit_hint(name, v)}",
                    "set NaN",
                )
            )
        arr[bad] = np.nan
        report.values_blanked += len(bad)


def to_arrow(
    columns: dict[str, np.ndarray], fingerprint: str, dataset: str, summary: dict
) -> pa.Table:
    """The canonical table as Arrow with the contract's schema and our metadata.

    `columns` maps every canonical column to an array; the label is a float array
    with NaN where unknown (written as a null Int8).
    """
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"canonical columns missing: {missing}")
    arrays = []
    for f in SCHEMA:
        col = columns[f.name]
        if f.name == LABEL_COLUMN:
            lab = np.asarray(col, dtype=np.float64)
            known = np.isfinite(lab)
            arrays.append(pa.array(np.where(known, lab, 0).astype(np.int8), mask=~known))
        elif f.type == pa.float64():
            arrays.append(pa.array(np.asarray(col, dtype=np.float64), type=f.type))
        else:
            arrays.append(pa.array(col, type=f.type))
    meta = {
        FINGERPRINT_KEY: fingerprint.encode(),
        SOURCE_KEY: dataset.encode(),
        REPORT_KEY: json.dumps(summary, sort_keys=True).encode(),
    }
    return pa.Table.from_arrays(arrays, schema=SCHEMA.with_metadata(meta))


def write_canonical(table: pa.Table, out: str | Path) -> Path:
    """Write atomically (temp file + rename), so a reader never sees half a table."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(out)
    return out


def read_fingerprint(path: str | Path) -> str:
    """The dataset fingerprint stored in a canonical Parquet file ('' when absent)."""
    meta = pq.read_schema(path).metadata or {}
    return meta.get(FINGERPRINT_KEY, b"").decode()


def load_canonical(path: str | Path) -> tuple[pd.DataFrame, str]:
    """Read a canonical Parquet table: (DataFrame with canonical dtypes, fingerprint)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"canonical table {path} not found")
    table = pq.read_table(path)
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path} is not a canonical table: lacks columns {missing}")
    df = table.select(list(COLUMNS)).to_pandas()
    df = df.astype({c: DTYPES[c] for c in COLUMNS})
    fp = (table.schema.metadata or {}).get(FINGERPRINT_KEY, b"").decode()
    return df, fp


def finish_import(
    table: pa.Table, report: ImportReport, out: str | Path, source: object, started: float
) -> ImportReport:
    """Write an importer's table, fill the report's output path and duration, log it."""
    report.out = str(write_canonical(table, out))
    report.seconds = time.perf_counter() - started
    logging.getLogger(__name__).info(
        "imported %s: %d stays, %d rows, %d problems",
        source,
        report.stays,
        report.rows,
        len(report.problems),
    )
    return report
