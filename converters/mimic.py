"""MIMIC-III CSVs -> the canonical hourly table (Parquet).

Input: the MIMIC-III demo archive (`mimic3demo.tar.gz`) or a folder holding
`CHARTEVENTS`, `ICUSTAYS`, `PATIENTS` and `ADMISSIONS` as `.csv` or `.csv.gz` (the
full database ships `.csv.gz` with UPPERCASE column names; the demo copy here has
lowercase names: both are accepted). CHARTEVENTS (330 million rows in the full
database) is streamed in chunks; only the vital-sign rows are kept.

Vital-sign item ids (labels from D_ITEMS; CareVue ids < 220000, MetaVision >= 220000;
the same choice as the MIT-LCP mimic-code "pivoted vital" concepts):

| vital | item ids (D_ITEMS label) |
| --- | --- |
| HR | 211 Heart Rate; 220045 Heart Rate |
| O2Sat | 646 SpO2; 220277 O2 saturation pulseoxymetry |
| Temp | 676 Temperature C; 223762 Temperature Celsius; 678 Temperature F, 223761 Temperature Fahrenheit (°F -> °C) |
| SBP | 51 Arterial BP [Systolic]; 442 Manual BP [Systolic]; 455 NBP [Systolic]; 6701 Arterial BP #2 [Systolic]; 220179 Non Invasive Blood Pressure systolic; 220050 Arterial Blood Pressure systolic |
| MAP | 52 Arterial BP Mean; 443 Manual BP Mean(calc); 456 NBP Mean; 6702 Arterial BP Mean #2; 220052 Arterial Blood Pressure mean; 220181 Non Invasive Blood Pressure mean; 225312 ART BP mean |
| DBP | 8368 Arterial BP [Diastolic]; 8440 Manual BP [Diastolic]; 8441 NBP [Diastolic]; 8555 Arterial BP #2 [Diastolic]; 220180 Non Invasive Blood Pressure diastolic; 220051 Arterial Blood Pressure diastolic |
| Resp | 615 Resp Rate (Total); 618 Respiratory Rate; 220210 Respiratory Rate; 224690 Respiratory Rate (Total) |

Hourly binning, the PhysioNet 2019 convention (so one model reads both): a reading
charted t hours after ICU `intime` (and not after `outtime`) falls in
`hour = floor(t) + 1`; `ICULOS = hour`. A row's vital is the median of that hour's
readings (arterial and non-invasive pressures pooled). Every stay gets one row per hour from 1 to its last
hour with a reading, NaN where nothing was charted, as in the challenge files.
Static features: `Age` = years from DOB to intime, capped at 90 (MIMIC shifts DOB of
patients over 89 so they appear about 300 years old); `Gender` from PATIENTS (M=1,
F=0); `HospAdmTime` = admittime - intime in hours (<= 0 when admitted to hospital
first). `label` is <NA>: MIMIC has no sepsis onset label here, and unknown is not
negative. `stay_id` = `mimic-{icustay_id}`, `source` = `mimic3`.

Set aside and counted (not listed row by row): rows the source flags as errors
(`error` = 1), readings without an ICU stay, readings before intime or after outtime,
empty values. Reported row by row: a non-numeric value, an unparseable time or id, an
implausible value (set NaN; a °C reading that looks like °F says so). Rows are
numbered as CSV records, header = 1. Fingerprint: sha256 over the sorted
(file name, sha256 of the file's bytes) of the four input files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import re
import tarfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from contracts.vitals import BY_NAME, STATIC_FEATURES, VITAL_NAMES

from .canonical_io import (
    ImportReport,
    Problem,
    SourceError,
    finish_import,
    load_canonical,
    to_arrow,
)

__all__ = ["DATASET", "ITEMS", "ImportReport", "SourceError", "import_mimic", "load_canonical"]

log = logging.getLogger(__name__)

DATASET = "mimic3"
STAY_PREFIX = "mimic-"
AGE_CAP = 90.0
BLOCK_BYTES = 16 << 20  # CHARTEVENTS is read in blocks of this many bytes

# itemid -> (canonical vital, unit of the charted value)
ITEMS: dict[int, tuple[str, str]] = {
    211: ("HR", "/min"),
    220045: ("HR", "/min"),
    646: ("O2Sat", "%"),
    220277: ("O2Sat", "%"),
    676: ("Temp", "Cel"),
    223762: ("Temp", "Cel"),
    678: ("Temp", "[degF]"),
    223761: ("Temp", "[degF]"),
    **dict.fromkeys((51, 442, 455, 6701, 220179, 220050), ("SBP", "mm[Hg]")),
    **dict.fromkeys((52, 443, 456, 6702, 220052, 220181, 225312), ("MAP", "mm[Hg]")),
    **dict.fromkeys((8368, 8440, 8441, 8555, 220180, 220051), ("DBP", "mm[Hg]")),
    **dict.fromkeys((615, 618, 220210, 224690), ("Resp", "/min")),
}
_VITAL_CODE = {n: k for k, n in enumerate(VITAL_NAMES)}
_ITEM_ARRAY = pa.array(sorted(str(i) for i in ITEMS))

TABLES = ("CHARTEVENTS", "ICUSTAYS", "PATIENTS", "ADMISSIONS")
REQUIRED: dict[str, tuple[str, ...]] = {
    "CHARTEVENTS": ("icustay_id", "itemid", "charttime", "valuenum"),
    "ICUSTAYS": ("subject_id", "hadm_id", "icustay_id", "intime", "outtime"),
    "PATIENTS": ("subject_id", "gender", "dob"),
    "ADMISSIONS": ("hadm_id", "admittime"),
}
_CE_OPTIONAL = ("error", "value")


# ---------------------------------------------------------------- reading the source


class _Tap(io.RawIOBase):
    """Passes bytes through while hashing them and remembering the last one, so one read
    both streams a file, fingerprints it and tells whether it ends mid-line."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.sha = hashlib.sha256()
        self.n = 0
        self.last = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        if n:
            b[:n] = data
            self.sha.update(data)
            self.n += n
            self.last = data[-1:]
        return n

    def drain(self) -> None:
        """Read to the end (pandas may stop early), so the hash covers the whole file."""
        while self.read(1 << 20):
            pass


@dataclass
class _Member:
    name: str  # e.g. CHARTEVENTS.csv (archive folder dropped)
    open: object  # () -> binary file object of the member's stored bytes
    gz: bool  # stored gzip-compressed (.csv.gz)


def _table_of(name: str) -> str | None:
    base = PurePosixPath(name).name.upper()
    for t in TABLES:
        if base in (f"{t}.CSV", f"{t}.CSV.GZ"):
            return t
    return None


@contextmanager
def _members(source: Path) -> Iterator[dict[str, _Member]]:
    if not source.exists():
        raise SourceError(f"source {source} does not exist")
    if source.is_dir():
        found: dict[str, _Member] = {}
        for p in sorted(source.iterdir()):
            t = _table_of(p.name)
            if t and t not in found:
                found[t] = _Member(
                    p.name,
                    lambda p=p: open(p, "rb"),  # noqa: SIM115 - closed by _text_stream's user
                    p.name.lower().endswith(".gz"),
                )
        yield found
        return
    try:
        tf = tarfile.open(source, "r:*")  # noqa: SIM115 - closed by the `with tf` below
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise SourceError(
            f"source {source} is neither a folder nor a readable tar archive: {e}"
        ) from e
    with tf:
        found = {}
        try:
            infos = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError, zlib.error):
            infos = tf.members  # what was read before the break; the break is found below
        for m in infos:
            t = _table_of(m.name)
            if t and m.isfile() and t not in found:
                found[t] = _Member(
                    PurePosixPath(m.name).name,
                    lambda m=m: tf.extractfile(m),
                    m.name.lower().endswith(".gz"),
                )
        yield found


def _read_errors() -> tuple[type[BaseException], ...]:
    return (tarfile.TarError, EOFError, zlib.error, OSError, gzip.BadGzipFile)


@dataclass
class _Stream:
    stored: _Tap  # the file's bytes as stored (hashed for the fingerprint)
    text: _Tap  # the decompressed CSV bytes (last byte: truncated mid-line?)
    f: IO[bytes]  # what pandas reads


@contextmanager
def _text_stream(member: _Member) -> Iterator[_Stream]:
    """The member opened for streaming; closed on exit."""
    handle = member.open()
    try:
        stored = _Tap(handle)
        buffered = io.BufferedReader(stored, 1 << 20)
        text = _Tap(gzip.GzipFile(fileobj=buffered) if member.gz else buffered)
        yield _Stream(stored, text, io.BufferedReader(text, 1 << 20))
    finally:
        handle.close()


def _norm_columns(df: pd.DataFrame) -> pd.DataFrame:
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df


def _read_small(
    table: str, members: dict[str, _Member], report: ImportReport, hashes: dict[str, str]
) -> pd.DataFrame | None:
    """A small table read whole as strings; None (reported) when missing or unusable."""
    m = members.get(table)
    if m is None:
        report.add(
            Problem(
                f"{table}.csv", None, None, None, "file not found in the source", "skipped file"
            )
        )
        report.files_skipped += 1
        return None
    try:
        with _text_stream(m) as st:
            df = _norm_columns(pd.read_csv(st.f, dtype=str, keep_default_na=False, na_values=[""]))
            st.stored.drain()
    except (*_read_errors(), pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        report.add(Problem(m.name, None, None, None, f"cannot read: {e}", "skipped file"))
        report.files_skipped += 1
        return None
    hashes[m.name] = st.stored.sha.hexdigest()
    missing = [c for c in REQUIRED[table] if c not in df.columns]
    if missing:
        report.add(
            Problem(
                m.name,
                1,
                None,
                ",".join(df.columns)[:80],
                f"wrong header: lacks {', '.join(missing)}",
                "skipped file",
            )
        )
        report.files_skipped += 1
        return None
    report.files_read += 1
    df.index = pd.RangeIndex(2, len(df) + 2)  # CSV record numbers, header = 1
    return df


def _header(f: io.BufferedReader, name: str) -> list[str]:
    """The CSV header line, peeked without consuming the stream."""
    head = f.peek(1 << 16)
    nl = head.find(b"\n")
    if nl < 0:
        raise SourceError(f"{name}: no header line in the first 64 KB")
    line = head[:nl].decode("utf-8", "replace").strip()
    return [c.strip().strip('"') for c in line.split(",")]


def _stream_chartevents(
    m: _Member, stay_ids: set[int], report: ImportReport, hashes: dict[str, str]
) -> pd.DataFrame:
    """Vital-sign readings of CHARTEVENTS (icustay_id, itemid, charttime, value; index =
    CSV record number), streamed with Arrow's CSV reader in blocks of BLOCK_BYTES.

    Arrow rather than pandas here: pandas silently truncates or shifts rows with a
    field too many (the first one becomes an index), Arrow hands each ragged row to a
    handler with its number, so it is reported and skipped.
    """
    keep: list[pd.DataFrame] = []
    n_rows = 0  # records read
    next_row = 2  # record number of the next good record (header = 1)
    ragged: list[int] = []  # record numbers of skipped ragged rows, in order

    def on_invalid(row: pacsv.InvalidRow) -> str:
        report.add(
            Problem(
                m.name,
                row.number,
                None,
                (row.text or "")[:60],
                f"row has {row.actual_columns} fields, the header {row.expected_columns}",
                "skipped row",
            )
        )
        report.rows_skipped += 1
        if row.number is not None:
            ragged.append(row.number)
        return "skip"

    try:
        with _text_stream(m) as st:
            header = _header(st.f, m.name)
            lower = {c.lower(): c for c in header}
            missing = [c for c in REQUIRED["CHARTEVENTS"] if c not in lower]
            if missing:
                raise SourceError(
                    f"{m.name}: wrong header: lacks {', '.join(missing)} (has {', '.join(header)})"
                )
            wanted = [lower[c] for c in (*REQUIRED["CHARTEVENTS"], *_CE_OPTIONAL) if c in lower]
            reader = pacsv.open_csv(
                st.f,
                read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted,
                    column_types=dict.fromkeys(wanted, pa.string()),
                    null_values=[""],
                    strings_can_be_null=True,
                ),
            )
            seen_ragged = 0
            for batch in reader:
                # Record numbers of this batch's rows, stepping over the ragged ones.
                rows = np.arange(next_row, next_row + batch.num_rows)
                for ln in ragged[seen_ragged:]:
                    rows[rows >= ln] += 1
                seen_ragged = len(ragged)
                next_row = int(rows[-1]) + 1 if len(rows) else next_row
                n_rows += batch.num_rows
                keep.append(_vital_rows(batch, rows, m.name, stay_ids, report))
            last = max(next_row - 1, ragged[-1] if ragged else 0)
            cut = bool(n_rows) and st.text.last != b"\n"
            if cut and last in ragged:  # the ragged last row is the cut: say so
                k = max(i for i, p in enumerate(report.problems) if p.row == last)
                p = report.problems[k]
                report.problems[k] = replace(
                    p, reason=p.reason + " (file ends mid-line: truncated?)"
                )
            elif cut:
                # Cut inside its last field, the last record still parsed: distrust it.
                report.add(
                    Problem(
                        m.name,
                        last,
                        None,
                        None,
                        "file ends mid-line (truncated?): its last row cannot be trusted",
                        "skipped row",
                    )
                )
                report.rows_skipped += 1
                keep[-1] = keep[-1].drop(index=last, errors="ignore")
            st.stored.drain()
    except SourceError:
        raise
    except (*_read_errors(), pa.ArrowException, UnicodeDecodeError) as e:
        report.add(
            Problem(
                m.name,
                next_row if n_rows else None,
                None,
                None,
                f"file truncated or corrupt after {n_rows} rows: {e}",
                "skipped rest of file",
            )
        )
        if not n_rows:
            raise SourceError(f"{m.name} is unreadable: {e}") from e
    report.files_read += 1
    hashes[m.name] = st.stored.sha.hexdigest()
    return pd.concat(keep) if keep else pd.DataFrame()


def _vital_rows(
    batch: pa.RecordBatch, rows: np.ndarray, name: str, stay_ids: set[int], report: ImportReport
) -> pd.DataFrame:
    """The batch's vital-sign rows, parsed; the rest (most of CHARTEVENTS) is not ours.

    The item-id filter runs in Arrow, so only vital rows ever become pandas objects.
    """
    cols = {f.name.lower(): batch.column(i) for i, f in enumerate(batch.schema)}
    mine = pc.is_in(pc.utf8_trim_whitespace(cols["itemid"]), value_set=_ITEM_ARRAY)
    mine = pc.fill_null(mine, False)
    if not pc.any(mine).as_py():
        return pd.DataFrame()
    c = pd.DataFrame(
        {k: v.filter(mine).to_pandas() for k, v in cols.items()},
    )
    c.index = rows[np.asarray(mine)]
    if "error" in c.columns:  # rows the source itself marks as charting errors
        flagged = c["error"].str.strip().isin(["1", "1.0"])
        report.set_aside_add("CHARTEVENTS vital rows flagged error=1 by the source", flagged.sum())
        c = c[~flagged]
    empty = c["valuenum"].isna() & (c["value"].isna() if "value" in c.columns else True)
    report.set_aside_add("CHARTEVENTS vital rows with no value", empty.sum())
    c = c[~empty]
    value = pd.to_numeric(c["valuenum"], errors="coerce")
    for row in c.index[value.isna().to_numpy()]:
        shown = c.at[row, "valuenum"]
        if not isinstance(shown, str) and "value" in c.columns:
            shown = c.at[row, "value"]
        report.add(
            Problem(name, int(row), "valuenum", str(shown)[:40], "not a number", "skipped row")
        )
        report.rows_skipped += 1
    stay = pd.to_numeric(c["icustay_id"], errors="coerce")
    no_stay = stay.isna()
    report.set_aside_add("CHARTEVENTS vital rows without an icustay_id", no_stay.sum())
    when = to_time(c["charttime"])
    for row in c.index[(when.isna() & c["charttime"].notna()).to_numpy()]:
        report.add(
            Problem(
                name,
                int(row),
                "charttime",
                str(c.at[row, "charttime"])[:40],
                "not a date-time",
                "skipped row",
            )
        )
        report.rows_skipped += 1
    ok = value.notna() & ~no_stay & when.notna()
    item = c["itemid"].astype(int)
    out = pd.DataFrame(
        {
            "icustay_id": stay[ok].astype(np.int64),
            "itemid": item[ok].astype(np.int64),
            "charttime": when[ok].astype("datetime64[ns]"),
            "value": value[ok].astype(np.float64),
        }
    )
    unknown_stay = ~out["icustay_id"].isin(stay_ids)
    report.set_aside_add("CHARTEVENTS vital rows of stays not in ICUSTAYS", unknown_stay.sum())
    return out[~unknown_stay]


# ---------------------------------------------------------------- stays and statics


_FULL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def to_time(text: pd.Series, date_only: bool = False) -> pd.Series:
    """MIMIC date-times ('YYYY-MM-DD HH:MM:SS'; a date alone only where `date_only`).

    Strict: a cut-off '2171-10-3' is NaT, not midnight of the 3rd, so a damaged time
    is reported instead of silently moved.
    """
    t = pd.to_datetime(text, errors="coerce", format="%Y-%m-%d %H:%M:%S")
    retry = t.isna() & text.notna()
    if retry.any():  # other ISO forms (T separator, no seconds, fractions, date only)
        s = text[retry].astype(str).str.strip()
        ok = s.str.fullmatch(_FULL_TIME)
        if date_only:
            ok |= s.str.fullmatch(_DATE)
        t[retry] = pd.to_datetime(s.where(ok), errors="coerce", format="ISO8601")
    return t.astype("datetime64[ns]")


def _parse_times(
    df: pd.DataFrame, cols: tuple[str, ...], name: str, report: ImportReport
) -> pd.DataFrame:
    for col in cols:
        t = to_time(df[col], date_only=col == "dob")
        for row in df.index[(t.isna() & df[col].notna()).to_numpy()]:
            report.add(
                Problem(
                    name, int(row), col, str(df.at[row, col])[:40], "not a date-time", "set NaN"
                )
            )
            report.values_blanked += 1
        df[col] = t.astype("datetime64[ns]")
    return df


def _stays(icu: pd.DataFrame, name: str, report: ImportReport) -> pd.DataFrame:
    for col in ("icustay_id", "subject_id", "hadm_id"):
        icu[col] = pd.to_numeric(icu[col], errors="coerce")
    icu = _parse_times(icu, ("intime", "outtime"), name, report)
    bad = icu["icustay_id"].isna() | icu["intime"].isna()
    for row in icu.index[bad.to_numpy()]:
        report.add(
            Problem(
                name,
                int(row),
                "icustay_id/intime",
                None,
                "stay without an id or ICU admission time",
                "skipped row",
            )
        )
    report.rows_skipped += int(bad.sum())
    icu = icu[~bad].copy()
    dup = icu["icustay_id"].duplicated()
    for row in icu.index[dup.to_numpy()]:
        report.add(
            Problem(
                name,
                int(row),
                "icustay_id",
                str(int(icu.at[row, "icustay_id"])),
                "stay listed twice",
                "skipped row",
            )
        )
    report.rows_skipped += int(dup.sum())
    icu = icu[~dup]
    icu["icustay_id"] = icu["icustay_id"].astype(np.int64)
    return icu


def _statics(
    icu: pd.DataFrame,
    pat: pd.DataFrame | None,
    adm: pd.DataFrame | None,
    files: dict[str, str],
    report: ImportReport,
) -> pd.DataFrame:
    """Per stay: Age (capped at 90), Gender (M=1, F=0), HospAdmTime (hours)."""
    out = pd.DataFrame({"icustay_id": icu["icustay_id"].to_numpy()})
    intime = icu["intime"].to_numpy()
    age = np.full(len(icu), np.nan)
    gender = np.full(len(icu), np.nan)
    if pat is not None:
        pat = pat.copy()
        pat["subject_id"] = pd.to_numeric(pat["subject_id"], errors="coerce")
        pat = _parse_times(pat, ("dob",), files["PATIENTS"], report)
        g = pat["gender"].str.strip().str.upper().map({"M": 1.0, "F": 0.0})
        for row in pat.index[(g.isna() & pat["gender"].notna()).to_numpy()]:
            report.add(
                Problem(
                    files["PATIENTS"],
                    int(row),
                    "gender",
                    str(pat.at[row, "gender"]),
                    "gender is not M or F",
                    "set NaN",
                )
            )
            report.values_blanked += 1
        pat = pat.assign(g=g).dropna(subset=["subject_id"]).drop_duplicates("subject_id")
        by_subject = pat.set_index("subject_id")
        sub = icu["subject_id"]
        dob = by_subject["dob"].reindex(sub).to_numpy()
        # Years between DOB and ICU admission; MIMIC puts > 89-year-olds near 300.
        # In seconds: 300 years in nanoseconds overflows int64.
        age = (intime.astype("datetime64[s]") - dob.astype("datetime64[s]")) / np.timedelta64(
            1, "D"
        )
        age = age / 365.25
        age = np.minimum(age, AGE_CAP)
        gender = by_subject["g"].reindex(sub).to_numpy(dtype=float)
    hosp = np.full(len(icu), np.nan)
    if adm is not None:
        adm = adm.copy()
        adm["hadm_id"] = pd.to_numeric(adm["hadm_id"], errors="coerce")
        adm = _parse_times(adm, ("admittime",), files["ADMISSIONS"], report)
        adm = adm.dropna(subset=["hadm_id"]).drop_duplicates("hadm_id").set_index("hadm_id")
        admit = adm["admittime"].reindex(icu["hadm_id"]).to_numpy()
        hosp = (admit - intime) / np.timedelta64(1, "h")
    out["Age"] = np.asarray(age, dtype=float)
    out["Gender"] = gender
    out["HospAdmTime"] = np.asarray(hosp, dtype=float)
    return out


# ---------------------------------------------------------------- hourly table


def _check_values(ev: pd.DataFrame, name: str, report: ImportReport) -> pd.DataFrame:
    """°F -> °C, then implausible readings are reported and dropped (NaN for that reading)."""
    # Dict lookups through pandas' vectorised map: the full database has ~30M readings.
    vital = ev["itemid"].map({i: v for i, (v, _) in ITEMS.items()})
    fahrenheit = ev["itemid"].map({i: u == "[degF]" for i, (_, u) in ITEMS.items()}).to_numpy()
    raw = ev["value"].to_numpy()
    val = np.where(fahrenheit, (raw - 32.0) * 5.0 / 9.0, raw)
    lo = vital.map({n: v.low for n, v in BY_NAME.items()}).to_numpy()
    hi = vital.map({n: v.high for n, v in BY_NAME.items()}).to_numpy()
    bad = (val < lo) | (val > hi)
    vnames = vital.to_numpy()
    for k in np.flatnonzero(bad):
        n, v, r = vnames[k], val[k], raw[k]
        rng = f"{BY_NAME[n].low:g}-{BY_NAME[n].high:g} {BY_NAME[n].unit}"
        if n == "Temp" and fahrenheit[k]:
            why = f"{r:g} °F = {v:.1f} °C outside the plausible range {rng}"
            if 25.0 <= r <= 45.0:
                why += "; looks like °C charted as °F"
        else:
            why = f"outside the plausible range {rng}"
            if n == "Temp" and 77.0 <= r <= 113.0:
                why += f"; looks like °F in a °C item ({r:g} °F = {(r - 32) * 5 / 9:.1f} °C)"
        report.add(
            Problem(
                name,
                int(ev.index[k]),
                f"{n} (itemid {ev['itemid'].iat[k]})",
                repr(float(r)),  # shortest text that reads back as the same number
                why,
                "set NaN",
            )
        )
    report.values_blanked += int(bad.sum())
    out = ev.assign(vital=vnames, value=val)
    return out[~bad]


def _hourly(
    ev: pd.DataFrame, icu: pd.DataFrame, statics: pd.DataFrame, report: ImportReport
) -> dict[str, np.ndarray]:
    times = icu.set_index("icustay_id")[["intime", "outtime"]]
    intime = times["intime"].reindex(ev["icustay_id"]).to_numpy()
    outtime = times["outtime"].reindex(ev["icustay_id"]).to_numpy()
    since = (ev["charttime"].to_numpy() - intime) / np.timedelta64(1, "h")
    before = since < 0
    after = ~pd.isna(outtime) & (ev["charttime"].to_numpy() > outtime)
    report.set_aside_add("vital readings charted before ICU intime", before.sum())
    report.set_aside_add("vital readings charted after ICU outtime", (after & ~before).sum())
    ok = ~before & ~after
    ev = ev[ok].assign(hour=np.floor(since[ok]).astype(np.int64) + 1)
    med = ev.groupby(["icustay_id", "hour", "vital"], sort=True)["value"].median().unstack("vital")
    med = med.reindex(columns=list(VITAL_NAMES))
    # A full hourly grid from hour 1 to the last charted hour, like the challenge files.
    last = med.reset_index().groupby("icustay_id")["hour"].max()
    grid = pd.MultiIndex.from_tuples(
        [(s, h) for s, n in last.items() for h in range(1, int(n) + 1)],
        names=["icustay_id", "hour"],
    )
    med = med.reindex(grid)
    st = statics.set_index("icustay_id").reindex(med.index.get_level_values(0))
    stays = med.index.get_level_values(0).to_numpy()
    hours = med.index.get_level_values(1).to_numpy().astype(np.int64)
    return {
        "stay_id": np.array([f"{STAY_PREFIX}{s}" for s in stays], dtype=object),
        "hour": hours,
        **{c: med[c].to_numpy(dtype=float) for c in VITAL_NAMES},
        "Age": np.array(st["Age"], dtype=float),
        "Gender": np.array(st["Gender"], dtype=float),
        "HospAdmTime": np.array(st["HospAdmTime"], dtype=float),
        "ICULOS": hours.astype(float),
        "label": np.full(len(hours), np.nan),  # no outcome label in MIMIC: unknown, not 0
        "source": np.full(len(hours), DATASET, dtype=object),
    }


def read_mimic(source: str | Path) -> tuple[pa.Table, ImportReport]:
    """Read MIMIC-III stays into a canonical Arrow table (sorted by stay, hour)."""
    t0 = time.perf_counter()
    source = Path(source)
    report = ImportReport(source=str(source), dataset=DATASET)
    hashes: dict[str, str] = {}
    with _members(source) as members:
        if "CHARTEVENTS" not in members or "ICUSTAYS" not in members:
            missing = [t for t in ("CHARTEVENTS", "ICUSTAYS") if t not in members]
            raise SourceError(f"{source} lacks {', '.join(missing)} (.csv or .csv.gz)")
        # File names as found (CHARTEVENTS.csv.gz, chartevents.csv, ...), for the report.
        files = {t: members[t].name if t in members else f"{t}.csv" for t in TABLES}
        icu = _read_small("ICUSTAYS", members, report, hashes)
        if icu is None:
            raise SourceError(f"ICUSTAYS in {source} is unusable: {report.problems[-1].reason}")
        icu = _stays(icu, files["ICUSTAYS"], report)
        pat = _read_small("PATIENTS", members, report, hashes)
        adm = _read_small("ADMISSIONS", members, report, hashes)
        statics = _statics(icu, pat, adm, files, report)
        ev = _stream_chartevents(members["CHARTEVENTS"], set(icu["icustay_id"]), report, hashes)
    fp = hashlib.sha256()
    for name in sorted(hashes):
        fp.update(f"{name}\t{hashes[name]}\n".encode())
    report.fingerprint = fp.hexdigest()
    if ev.empty:
        raise SourceError(f"no vital-sign readings found in CHARTEVENTS of {source}")
    ev = _check_values(ev, files["CHARTEVENTS"], report)
    cols = _hourly(ev, icu, statics, report)
    with_rows = set(np.unique(cols["stay_id"]))
    for row, sid in zip(icu.index, icu["icustay_id"], strict=True):
        if f"{STAY_PREFIX}{sid}" not in with_rows:
            report.add(
                Problem(
                    files["ICUSTAYS"],
                    int(row),
                    "icustay_id",
                    str(sid),
                    "no vital signs charted during the stay",
                    "skipped stay",
                )
            )
    blank_statics(cols, files["PATIENTS"], report)
    report.rows = len(cols["hour"])
    report.stays = len(with_rows)
    report.unlabelled_rows = report.rows
    report.sort_problems()
    table = to_arrow(cols, report.fingerprint, DATASET, report.counts())
    report.seconds = time.perf_counter() - t0
    return table, report


def blank_statics(cols: dict[str, np.ndarray], patients: str, report: ImportReport) -> None:
    """A negative age (a broken DOB) cannot be right: NaN, reported once per stay."""
    age = cols["Age"]
    bad = np.isfinite(age) & (age < 0)
    for sid in np.unique(cols["stay_id"][bad]):
        report.add(
            Problem(
                patients,
                None,
                "Age",
                None,
                f"{sid}: date of birth after ICU admission",
                "set NaN",
            )
        )
    age[bad] = np.nan
    assert set(STATIC_FEATURES) <= set(cols)


def import_mimic(source: str | Path, out: str | Path) -> ImportReport:
    """Import MIMIC-III ICU stays from `source` and write the canonical Parquet `out`."""
    t0 = time.perf_counter()
    table, report = read_mimic(source)
    return finish_import(table, report, out, source, t0)
