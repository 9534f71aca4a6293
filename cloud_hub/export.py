"""Export fleet data as the canonical hourly table (`contracts/canonical.py`).

Vitals summaries of a stay are grouped by hour in ICU (`floor(iculos_hours)`):
the vital signs are averaged over the hour's summaries, the static features are
the hour's last known values, `hour` = `ICULOS` = that hour, `source` = 'fleet',
and `stay_id` = 'fleet:' + the gateway's pseudonymous stay. The label follows
`labels.label_for` with each row's time = the end of its last summary step.
Columns, order and dtypes are the canonical ones, so training reads fleet data
exactly like the base dataset.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, select

from cloud_hub.labels import FLEET_PREFIX, Outcome, label_for
from cloud_hub.store.models import OutcomeLabel, VitalsSummary
from contracts.canonical import COLUMNS, DTYPES, LABEL_COLUMN, SOURCE_COLUMN
from contracts.timeutil import naive_as_utc
from contracts.vitals import STATIC_FEATURES, VITAL_NAMES

log = logging.getLogger(__name__)

SOURCE = "fleet"
# ICULOS is the row's own hour; the others come from the gateway's static features.
STATIC_FROM_GATEWAY = tuple(f for f in STATIC_FEATURES if f != "ICULOS")


@dataclass(frozen=True)
class ExportReport:
    rows: int
    stays: int
    positive: int
    negative: int
    unknown: int
    skipped_summaries: int  # negative or non-finite iculos_hours

    def __str__(self) -> str:
        return (
            f"{self.rows} hourly rows from {self.stays} stays: label 1: {self.positive}, "
            f"0: {self.negative}, unknown: {self.unknown}"
            + (
                f" ({self.skipped_summaries} summaries without a valid ICU time skipped)"
                if self.skipped_summaries
                else ""
            )
        )


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=DTYPES[c]) for c in COLUMNS})


def _outcomes(engine: Engine) -> dict[str, list[Outcome]]:
    out: dict[str, list[Outcome]] = defaultdict(list)
    t = OutcomeLabel.__table__
    with engine.connect() as c:
        for r in c.execute(select(t).order_by(t.c.recorded_at, t.c.id)):
            out[r.stay].append(Outcome(r.source, r.kind, naive_as_utc(r.onset_time)))
    return out


def hourly_table(engine: Engine) -> tuple[pd.DataFrame, int]:
    """The canonical table of every stay the fleet reported; (table, summaries skipped)."""
    v = VitalsSummary.__table__
    records, skipped = [], 0
    with engine.connect() as c:
        q = select(
            v.c.stay, v.c.iculos_hours, v.c.step_start, v.c.step_seconds, v.c["values"], v.c.static
        )
        for r in c.execute(q):
            if not math.isfinite(r.iculos_hours) or r.iculos_hours < 0:
                skipped += 1
                continue
            values, static = r.values or {}, r.static or {}
            rec = {
                "stay": r.stay,
                "hour": int(math.floor(r.iculos_hours)),
                "row_end": naive_as_utc(r.step_start) + timedelta(seconds=r.step_seconds),
            }
            for name in VITAL_NAMES:
                rec[name] = values.get(name)
            for name in STATIC_FROM_GATEWAY:
                rec[name] = static.get(name)
            records.append(rec)
    if skipped:
        log.warning("event=export_skipped summaries=%d reason=invalid_iculos_hours", skipped)
    if not records:
        return empty_table(), skipped
    raw = pd.DataFrame.from_records(records)
    for name in (*VITAL_NAMES, *STATIC_FROM_GATEWAY):
        raw[name] = pd.to_numeric(raw[name], errors="coerce").astype("float64")
    raw = raw.sort_values(["stay", "hour", "row_end"], kind="stable")
    g = raw.groupby(["stay", "hour"], sort=True)
    table = g[list(VITAL_NAMES)].mean()
    table = table.join(g[list(STATIC_FROM_GATEWAY)].last()).join(g["row_end"].max())
    table = table.reset_index()
    outcomes = _outcomes(engine)
    table[LABEL_COLUMN] = [
        label_for(t.to_pydatetime(), outcomes.get(s, ()))
        for s, t in zip(table["stay"], table["row_end"], strict=True)
    ]
    table["stay_id"] = FLEET_PREFIX + table["stay"]
    table["ICULOS"] = table["hour"].astype("float64")
    table[SOURCE_COLUMN] = SOURCE
    table = table[list(COLUMNS)]
    return table.astype(DTYPES), skipped


def fingerprint(table: pd.DataFrame) -> str:
    """sha256 of the table's content: training records it with the run, as it does the
    importers' fingerprints, so a model names the fleet data it learnt from."""
    digest = hashlib.sha256()
    digest.update(",".join(table.columns).encode())
    digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def export_parquet(engine: Engine, out: Path, only_labelled: bool = False) -> ExportReport:
    """Write the table as the importers do (`converters.canonical_io`: the contract's
    Arrow schema, fingerprint and summary in the metadata, atomic rename)."""
    from converters.canonical_io import to_arrow, write_canonical

    table, skipped = hourly_table(engine)
    if only_labelled:
        table = table[table[LABEL_COLUMN].notna()].reset_index(drop=True)
    lab = table[LABEL_COLUMN]
    report = ExportReport(
        rows=len(table),
        stays=int(table["stay_id"].nunique()),
        positive=int((lab == 1).sum()),
        negative=int((lab == 0).sum()),
        unknown=int(lab.isna().sum()),
        skipped_summaries=skipped,
    )
    columns = {c: table[c].to_numpy() for c in COLUMNS}
    columns["stay_id"] = table["stay_id"].astype(object).to_numpy()
    columns[SOURCE_COLUMN] = table[SOURCE_COLUMN].astype(object).to_numpy()
    columns[LABEL_COLUMN] = lab.astype("float64").to_numpy(na_value=float("nan"))
    arrow = to_arrow(columns, fingerprint(table), SOURCE, asdict(report))
    write_canonical(arrow, out)  # readers never see half a file
    return report
