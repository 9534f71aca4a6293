"""Score a patient file as the gateway would: `vigil edge score FILE` (issue 15).

A stay given as hourly rows (PhysioNet/CinC 2019 PSV, CSV with the catalogue's column
names, or the canonical Parquet) is fed hour by hour through the gateway's OWN per-step
path, not a re-implementation of it: one `Reading` per row into `BedWindows` (steps by
observation time from ICU admission, `aggregate_readings`, the dense hourly history,
`stay_windows(history)[-1]` and the `min_observed` rule), the verified bundle through
LiteRT (`RiskModel.score`, clipped to [0, 1] as `Gateway._on_step` does), NEWS2
(`contracts.news2.news2` with the monitor's vitals) and the bed's `AlarmMachine` with
the gateway's alarm settings. So a site can see what its gateway would have shown for
a patient, and a challenge scorer can evaluate any bundle on any site's data.

Rows: the row with ICULOS = k is the reading at hour k after ICU admission (the
simulator replays it during that hour); a later row closes it, the last row is closed
at the end of the file (as `BedWindows.flush` at the end of a replay). Hours missing
between rows are all-missing steps, as at the gateway. Static data: Age, Gender and
HospAdmTime from the file (what an ADT admission gives the gateway); absent columns are
unknown (the manifest's fill value).

Checks, each a one-line `ScoreError` naming the file: missing file, empty file, no
rows, missing required columns (named), a value that is not a number (row and column),
and wrong units: a vital whose median lies outside the catalogue's plausible range
(`contracts/vitals.py`) is refused with the likely unit (Temp above 50: °F; SpO2 at
most 1: a fraction) instead of being scored as artefacts.

Folders and `.tar.gz` archives of stays are scored stay by stay (`score_many`, a
process pool); a bad stay is reported and skipped, the rest scored. With an output
folder each stay gets a prediction file in the challenge's format
(`PredictedProbability|PredictedLabel`, one row per input row, same file name); hours
the gateway cannot score (insufficient data) get probability 0 and label 0; the label
is 1 when the risk reaches the bundle's threshold (its operating point).
"""

from __future__ import annotations

import json
import math
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from contracts.news2 import News2, news2
from contracts.units import FAHR, FRACTION, KELVIN, KPA, Unit
from contracts.vitals import BY_NAME, VITAL_NAMES

from .alarms import AlarmMachine, AlarmParams
from .decoder import Reading
from .scoring import RiskModel, load_model
from .windows import BedWindows, ClosedStep

TIME = "ICULOS"
REQUIRED: tuple[str, ...] = (TIME, *VITAL_NAMES)
STATIC: tuple[str, ...] = ("Age", "Gender", "HospAdmTime")
LABELS: tuple[str, ...] = ("SepsisLabel", "label")
STAY_COLUMN = "stay_id"
SUFFIXES: tuple[str, ...] = (".psv", ".csv", ".parquet")
# The stay's ICU admission on the scoring clock: any fixed time will do (steps are
# counted from it; nothing is shown in wall time).
ADMIT = datetime(2000, 1, 1, tzinfo=UTC)
BED = "file"
CHALLENGE_HEADER = "PredictedProbability|PredictedLabel"


class ScoreError(ValueError):
    """A file or stay that cannot be scored; the text is one line naming it and why."""


@dataclass(frozen=True)
class Stay:
    """One stay's hourly rows in file order (catalogue units, NaN missing)."""

    name: str  # file name (the challenge output's name) or stay_id
    iculos: np.ndarray  # [T] hours since ICU admission
    vitals: np.ndarray  # [T, len(VITAL_NAMES)]
    static: np.ndarray  # [T, len(STATIC)]
    label: np.ndarray | None = None  # SepsisLabel when the file has it


@dataclass(frozen=True)
class Hour:
    """What the gateway shows for one closed hour of the stay."""

    iculos: int
    values: dict[str, float | None]  # the step's vitals as the gateway aggregated them
    risk: float | None  # None: insufficient data, not scored
    threshold: float
    observed: int
    insufficient: bool
    news2: News2
    alarm_level: str
    alarm_events: tuple[str, ...] = ()  # raised / escalated / resolved at this hour


@dataclass
class Scored:
    stay: Stay
    hours: list[Hour]
    model_name: str
    model_version: str

    def row_hours(self) -> list[Hour | None]:
        """The hour each input row fell into, in file order (None: not scored)."""
        by = {h.iculos: h for h in self.hours}
        return [by.get(int(math.floor(t))) for t in self.stay.iculos]

    def challenge_rows(self) -> list[tuple[float, int]]:
        """(PredictedProbability, PredictedLabel) per input row; 0, 0 when not scored."""
        out = []
        for h in self.row_hours():
            if h is None or h.risk is None:
                out.append((0.0, 0))
            else:
                out.append((h.risk, int(h.risk >= h.threshold)))
        return out


# --- reading files ------------------------------------------------------------------


def read_stays(path: Path) -> list[Stay]:
    """The stays of one file (.psv, .csv, .parquet); ScoreError with the reason."""
    if not path.exists():
        raise ScoreError(f"{path}: no such file")
    if path.is_dir():
        raise ScoreError(f"{path}: is a folder (give a file, or --out DIR to score a folder)")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ScoreError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_text(data, path.name, sep=_separator(path.name, data), where=str(path))


def _separator(name: str, data: bytes) -> str:
    if name.lower().endswith(".psv"):
        return "|"
    if name.lower().endswith(".csv"):
        return ","
    first = data.split(b"\n", 1)[0]
    return "|" if first.count(b"|") > first.count(b",") else ","


def parse_text(data: bytes, name: str, sep: str = "|", where: str | None = None) -> list[Stay]:
    """Stays of a PSV/CSV text: header of column names, one row per hour."""
    where = where or name
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScoreError(f"{where}: not a text file ({e.reason} at byte {e.start})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ScoreError(f"{where}: empty file (no header, no rows)")
    header = [h.strip().strip('"') for h in lines[0].split(sep)]
    if len(lines) == 1:
        raise ScoreError(f"{where}: no rows (only a header)")
    if TIME not in header and "hour" in header:  # the canonical table's row time
        header[header.index("hour")] = TIME
    _require(header, where, sep)
    cells = [ln.split(sep) for ln in lines[1:]]
    for i, r in enumerate(cells):
        if len(r) != len(header):
            raise ScoreError(
                f"{where}: row {i + 2} has {len(r)} fields, the header has {len(header)}"
            )
    table = np.array(cells, dtype=str)
    columns: dict[str, np.ndarray] = {}
    for c in (*REQUIRED, *STATIC, *LABELS):
        if c in header:
            columns[c] = _floats(table[:, header.index(c)], c, where)
    stays = None
    if STAY_COLUMN in header:
        stays = np.char.strip(table[:, header.index(STAY_COLUMN)])
    return _split(columns, stays, name, where)


def _require(header: list[str], where: str, sep: str) -> None:
    missing = [c for c in REQUIRED if c not in header]
    if not missing:
        return
    other = "comma" if sep == "|" else "pipe"
    hint = f" (is it {other}-separated?)" if len(header) == 1 else ""
    raise ScoreError(
        f"{where}: missing required column(s) {', '.join(missing)}{hint}; "
        f"expected {', '.join(REQUIRED)} (catalogue names, contracts/vitals.py)"
    )


def _floats(col: np.ndarray, name: str, where: str) -> np.ndarray:
    col = np.char.strip(col)
    col = np.where((col == "") | (col == "NA") | (col == '""'), "nan", col)
    try:
        return col.astype(np.float64)
    except ValueError:
        for i, x in enumerate(col):
            try:
                float(x)
            except ValueError:
                raise ScoreError(
                    f"{where}: row {i + 2} column {name}: {str(x)[:20]!r} is not a number"
                ) from None
        raise


def _split(
    columns: dict[str, np.ndarray], stays: np.ndarray | None, name: str, where: str
) -> list[Stay]:
    n = len(columns[TIME])
    nan = np.full(n, np.nan)
    vitals = np.column_stack([columns[v] for v in VITAL_NAMES])
    static = np.column_stack([columns.get(s, nan) for s in STATIC])
    label_col = next((c for c in LABELS if c in columns), None)
    label = columns[label_col] if label_col else None
    bad = np.flatnonzero(~np.isfinite(columns[TIME]) | (columns[TIME] < 0))
    if bad.size:
        raise ScoreError(f"{where}: row {bad[0] + 2}: {TIME} missing or negative")
    groups: list[tuple[str, np.ndarray]]
    if stays is None or len(set(stays.tolist())) <= 1:
        groups = [(name, np.arange(n))]
    else:
        ids = list(dict.fromkeys(stays.tolist()))
        groups = [(sid, np.flatnonzero(stays == sid)) for sid in ids]
    out = []
    for sid, idx in groups:
        stay = Stay(
            sid,
            columns[TIME][idx],
            vitals[idx],
            static[idx],
            None if label is None else label[idx],
        )
        check_units(stay, where if len(groups) == 1 else f"{where} stay {sid}")
        out.append(stay)
    return out


def read_parquet(path: Path) -> list[Stay]:
    """The canonical table (contracts/canonical.py), one Stay per stay_id; needs pyarrow."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ScoreError(
            f"{path}: reading Parquet needs pyarrow, which the gateway does not ship: "
            "pip install pyarrow (or give the stay as PSV/CSV)"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise ScoreError(f"{path}: not a readable Parquet file: {e}") from None
    names = list(table.column_names)
    if TIME not in names and "hour" in names:
        table = table.rename_columns([TIME if c == "hour" else c for c in names])
        names = list(table.column_names)
    _require(names, str(path), ",")
    if table.num_rows == 0:
        raise ScoreError(f"{path}: no rows")
    columns = {
        c: np.asarray(table[c].to_numpy(zero_copy_only=False), dtype=np.float64)
        for c in (*REQUIRED, *STATIC, *LABELS)
        if c in names
    }
    stays = None
    if STAY_COLUMN in names:
        stays = np.asarray(table[STAY_COLUMN].to_numpy(zero_copy_only=False), dtype=str)
    return _split(columns, stays, path.stem + ".psv", str(path))


# Other units a column may have been exported in (contracts/units.py), per vital, with
# how to convert: a column whose values are plausible only in one of them is refused.
OTHER_UNITS: dict[str, tuple[tuple[Unit, str], ...]] = {
    "Temp": ((FAHR, "(F - 32) x 5/9"), (KELVIN, "K - 273.15")),
    "O2Sat": ((FRACTION, "x 100"),),
    "SBP": ((KPA, "x 7.50"),),
    "MAP": ((KPA, "x 7.50"),),
    "DBP": ((KPA, "x 7.50"),),
}
MIN_VALUES_FOR_UNIT = 3  # fewer values say too little to tell a unit from artefacts


def check_units(stay: Stay, where: str) -> None:
    """Refuse a vital whose values are in another unit than the catalogue's.

    A column is refused when at most 10 % of its values are plausible in the catalogue
    unit but at least 90 % are once converted from another unit (contracts/units.py):
    e.g. Temp of 98-102 is °F. Scattered implausible values in real charts (a SaO2 of
    32 typed as SpO2) are artefacts: the gateway's preprocessing masks them, as here."""
    for i, name in enumerate(VITAL_NAMES):
        col = stay.vitals[:, i]
        col = col[np.isfinite(col)]
        if col.size < MIN_VALUES_FOR_UNIT:
            continue
        v = BY_NAME[name]
        if np.mean((col >= v.low) & (col <= v.high)) > 0.1:
            continue
        for unit, how in OTHER_UNITS.get(name, ()):
            conv = np.array([unit.to_catalogue(float(x)) for x in col])
            if np.mean((conv >= v.low) & (conv <= v.high)) >= 0.9:
                raise ScoreError(
                    f"{where}: wrong unit: {name} values (median {float(np.median(col)):.4g}) "
                    f"look like {unit.name}; the catalogue unit is {v.unit} "
                    f"(plausible {v.low:g}-{v.high:g}): convert {how}"
                )


# --- scoring --------------------------------------------------------------------------


@dataclass
class Scorer:
    """The active bundle and the gateway's alarm settings, applied stay by stay."""

    model: RiskModel
    params: AlarmParams

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    def score(self, stay: Stay) -> Scored:
        """Every hour of `stay` through the gateway's per-step path (see the module)."""
        windows = BedWindows(BED, self.model.manifest.preprocessing)
        alarm = AlarmMachine(self.params)
        hours: list[Hour] = []
        order = np.argsort(stay.iculos, kind="stable")
        for seq, i in enumerate(order, 1):
            t = float(stay.iculos[i])
            static = {s: _opt(stay.static[i, j]) for j, s in enumerate(STATIC)}
            static[TIME] = t
            r = Reading(
                bed=BED,
                stay=stay.name,
                monitor_id=BED,
                seq=seq,
                obs_time=ADMIT + timedelta(hours=t),
                values={v: _opt(stay.vitals[i, k]) for k, v in enumerate(VITAL_NAMES)},
                static=static,
                icu_admit=ADMIT,
            )
            for step in windows.add(r):
                hours.append(self._step(step, windows, alarm))
        last = windows.flush()
        if last is not None:
            hours.append(self._step(last, windows, alarm))
        return Scored(stay, hours, self.name, self.version)

    def _step(self, step: ClosedStep, windows: BedWindows, alarm: AlarmMachine) -> Hour:
        """`Gateway._on_step`'s patient-facing part: score, NEWS2, alarm."""
        v = step.values
        n2 = news2(
            resp=v.get("Resp"),
            spo2=v.get("O2Sat"),
            sbp=v.get("SBP"),
            hr=v.get("HR"),
            temp=v.get("Temp"),
        )
        inp = step.model_input or windows.model_input()
        risk = None
        if not inp.insufficient:
            risk = min(1.0, max(0.0, self.model.score(inp.window, inp.static)))
        events = alarm.on_step(risk, step.end)
        return Hour(
            iculos=step.index,
            values=dict(v),
            risk=risk,
            threshold=alarm.params.threshold,
            observed=inp.observed,
            insufficient=inp.insufficient,
            news2=n2,
            alarm_level=alarm.s.level,
            alarm_events=tuple(e.action for e in events),
        )


def _opt(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def make_scorer(
    bundle_dirs: list[Path], trusted_keys: list[Path], alarms: Any | None = None
) -> Scorer:
    """Load the first bundle that verifies (as the gateway does); ScoreError otherwise.

    `alarms`: the gateway's `AlarmConfig` (its defaults when None)."""
    from .config import AlarmConfig

    model, refused = load_model(bundle_dirs, trusted_keys)
    if model is None:
        raise ScoreError(
            "no verified model bundle: " + ("; ".join(refused) or "no bundle dirs given")
        )
    a = alarms or AlarmConfig()
    params = AlarmParams(
        threshold=model.threshold,
        hysteresis=a.hysteresis,
        min_steps=a.min_steps,
        escalate_after_steps=a.escalate_after_steps,
        escalate_margin=a.escalate_margin,
        watch_fraction=a.watch_fraction,
        max_silence_seconds=a.max_silence_seconds,
    )
    return Scorer(model, params)


# --- output ---------------------------------------------------------------------------


def hour_json(s: Scored, h: Hour) -> dict[str, Any]:
    """One hour as `--json` prints it (every risk with its model name and version)."""
    return {
        "stay": s.stay.name,
        "iculos": h.iculos,
        "vitals": {k: None if x is None else round(x, 3) for k, x in h.values.items()},
        "risk": None if h.risk is None else round(h.risk, 5),
        "threshold": round(h.threshold, 5),
        "insufficient_data": h.insufficient,
        "observed": h.observed,
        "news2": {
            "total": h.news2.total,
            "band": h.news2.risk,
            "missing": list(h.news2.missing),
            "assumed": list(h.news2.assumed),  # a file has no oxygen/ACVPU entries
        },
        "alarm_level": h.alarm_level,
        "alarm_events": list(h.alarm_events),
        "model": {"name": s.model_name, "version": s.model_version},
    }


_COLS = ("HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp")


def table_lines(s: Scored) -> Iterator[str]:
    """The per-hour table: ICULOS, vitals, risk, threshold, NEWS2, alarm, model version."""
    yield f"stay {s.stay.name}: {len(s.hours)} hour(s), model {s.model_name} {s.model_version}"
    head = (
        f"{'ICULOS':>6} "
        + " ".join(f"{c:>6}" for c in _COLS)
        + f" {'risk':>6} {'thresh':>6} {'NEWS2':>5} {'band':<10} {'alarm':<9} version"
    )
    yield head
    for h in s.hours:
        vit = " ".join(
            f"{'-':>6}" if h.values.get(c) is None else f"{h.values[c]:>6.1f}" for c in _COLS
        )
        risk = f"{'n/a':>6}" if h.risk is None else f"{h.risk:>6.3f}"
        ev = f" [{', '.join(h.alarm_events)}]" if h.alarm_events else ""
        insuff = " insufficient data" if h.insufficient else ""
        yield (
            f"{h.iculos:>6} {vit} {risk} {h.threshold:>6.3f} {h.news2.total:>5} "
            f"{h.news2.risk:<10} {h.alarm_level:<9} {s.model_version}{insuff}{ev}"
        )


def write_challenge(s: Scored, out_dir: Path) -> Path:
    """The stay's prediction file in the PhysioNet/CinC 2019 format, same file name."""
    path = out_dir / challenge_name(s.stay.name)
    lines = [CHALLENGE_HEADER] + [f"{p:.6g}|{lab}" for p, lab in s.challenge_rows()]
    path.write_text("\n".join(lines) + "\n")
    return path


def challenge_name(name: str) -> str:
    base = Path(name).name
    return base if base.lower().endswith(".psv") else Path(base).stem + ".psv"


# --- many stays -----------------------------------------------------------------------


@dataclass
class Item:
    """One stay file of a folder or archive, read but not parsed."""

    name: str
    data: bytes | None  # None with `error`
    error: str | None = None
    path: Path | None = None  # a Parquet file is read by path


def iter_items(source: Path, exclude: Path | None = None) -> Iterator[Item]:
    """The stay files of a folder (sorted) or a .tar.gz, one Item each; files under
    `exclude` (the output folder, when it lies inside the source) are not stays."""
    if source.is_dir():
        skip = exclude.resolve() if exclude is not None else None
        for p in sorted(source.rglob("*")):
            if skip is not None and p.resolve().is_relative_to(skip):
                continue
            if p.is_file() and p.suffix.lower() in SUFFIXES:
                if p.suffix.lower() == ".parquet":
                    yield Item(p.name, None, path=p)
                    continue
                try:
                    yield Item(p.name, p.read_bytes(), path=p)
                except OSError as e:
                    yield Item(p.name, None, f"{p}: cannot read: {e.strerror or e}")
        return
    try:
        tf = tarfile.open(source, "r:*")  # noqa: SIM115 (closed by `with tf` below)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ScoreError(f"{source}: not a readable tar archive: {e}") from None
    with tf:
        while True:
            try:
                m = tf.next()
            except (tarfile.TarError, OSError, EOFError, ValueError) as e:
                # A truncated or corrupt archive: what came before was yielded.
                yield Item(
                    source.name, None, f"{source}: unreadable after the last good member: {e}"
                )
                return
            if m is None:
                return
            if not m.isfile() or Path(m.name).suffix.lower() not in (".psv", ".csv"):
                continue
            name = Path(m.name).name
            try:
                f = tf.extractfile(m)
                data = f.read() if f is not None else None
            except (tarfile.TarError, OSError, EOFError, ValueError) as e:
                yield Item(name, None, f"{source}:{m.name}: unreadable tar member: {e}")
                return
            if data is None:
                yield Item(name, None, f"{source}:{m.name}: unreadable tar member")
                continue
            yield Item(name, data)


def stays_of(item: Item) -> list[Stay]:
    if item.error is not None:
        raise ScoreError(item.error)
    if item.data is None and item.path is not None:
        return read_parquet(item.path)
    assert item.data is not None
    where = str(item.path) if item.path else item.name
    return parse_text(item.data, item.name, _separator(item.name, item.data), where)


@dataclass
class Summary:
    stays: int = 0
    hours: int = 0
    rows: int = 0
    skipped: list[str] = field(default_factory=list)


_WORKER: tuple[Scorer, Path | None] | None = None


def _init_worker(
    bundle_dirs: list[Path], trusted_keys: list[Path], alarms: Any, out: Path | None
) -> None:
    global _WORKER
    _WORKER = (make_scorer(bundle_dirs, trusted_keys, alarms), out)


def _score_item(item: Item) -> tuple[list[tuple[str, int, int]], str | None]:
    """In a worker: ([(stay, hours, rows)], error) for one item; files written there."""
    assert _WORKER is not None
    scorer, out = _WORKER
    try:
        done = []
        for stay in stays_of(item):
            s = scorer.score(stay)
            if out is not None:
                write_challenge(s, out)
            done.append((stay.name, len(s.hours), len(stay.iculos)))
        return done, None
    except ScoreError as e:
        return [], str(e)


def score_many(
    source: Path,
    out: Path,
    bundle_dirs: list[Path],
    trusted_keys: list[Path],
    alarms: Any | None = None,
    jobs: int | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> Summary:
    """Challenge files for every stay of a folder or .tar.gz into `out`.

    `jobs` worker processes (default: the CPU count), each loading and verifying the
    bundle once; items are read here and handed over in chunks. A stay that cannot be
    scored is passed to `on_skip` and counted, the rest scored."""
    import multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    jobs = max(1, jobs or os.cpu_count() or 1)
    args = (bundle_dirs, trusted_keys, alarms, out)

    def account(result: tuple[list[tuple[str, int, int]], str | None]) -> None:
        done, error = result
        if error is not None:
            summary.skipped.append(error)
            if on_skip:
                on_skip(error)
        for _, hours, rows in done:
            summary.stays += 1
            summary.hours += hours
            summary.rows += rows

    if jobs == 1:
        _init_worker(*args)
        for item in iter_items(source, out):
            account(_score_item(item))
        return summary
    ctx = mp.get_context("spawn")  # no LiteRT interpreter shared across a fork
    with ctx.Pool(jobs, initializer=_init_worker, initargs=args) as pool:
        for result in pool.imap_unordered(_score_item, iter_items(source, out), chunksize=32):
            account(result)
    return summary


def is_many(path: Path) -> bool:
    """A folder or an archive of stays (rather than one stay file)."""
    name = path.name.lower()
    return path.is_dir() or name.endswith((".tar.gz", ".tgz", ".tar"))


def dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


__all__ = [
    "Hour",
    "ScoreError",
    "Scored",
    "Scorer",
    "Stay",
    "is_many",
    "iter_items",
    "make_scorer",
    "plot_stay",
    "read_stays",
    "score_many",
    "table_lines",
    "write_challenge",
]


# --- plot -----------------------------------------------------------------------------


def plot_stay(s: Scored, out: Path) -> Path:
    """PNG of the stay: vitals, risk with the threshold, alarm periods shaded, NEWS2.

    matplotlib is the optional `plot` extra, imported only here; ScoreError saying how
    to install it when it is absent."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ScoreError(
            "--plot needs matplotlib, which the gateway does not ship: "
            "pip install 'vigil[plot]' (or pip install matplotlib)"
        ) from None
    x = np.array([h.iculos for h in s.hours], dtype=float)

    def series(name: str) -> np.ndarray:
        return np.array([np.nan if h.values.get(name) is None else h.values[name] for h in s.hours])

    fig, (ax_hr, ax_bp, ax_risk) = plt.subplots(
        3, 1, figsize=(10, 7.5), sharex=True, gridspec_kw={"height_ratios": [2, 2, 2.2]}
    )
    for name, style in (("HR", "C3"), ("Resp", "C2"), ("O2Sat", "C0")):
        ax_hr.plot(x, series(name), style, marker=".", lw=1, label=f"{name} ({BY_NAME[name].unit})")
    ax_t = ax_hr.twinx()
    ax_t.plot(x, series("Temp"), "C1", marker=".", lw=1, label="Temp (°C)")
    ax_t.set_ylabel("Temp °C")
    lines = ax_hr.get_legend_handles_labels()
    more = ax_t.get_legend_handles_labels()
    ax_hr.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8, ncol=4)
    ax_hr.set_ylabel("/min, %")
    for name, style in (("SBP", "C4"), ("MAP", "C5"), ("DBP", "C6")):
        ax_bp.plot(x, series(name), style, marker=".", lw=1, label=name)
    ax_bp.set_ylabel("mmHg")
    ax_bp.legend(loc="upper left", fontsize=8, ncol=3)
    risk = np.array([np.nan if h.risk is None else h.risk for h in s.hours])
    thr = np.array([h.threshold for h in s.hours])
    ax_risk.plot(x, risk, "k", marker=".", lw=1.2, label=f"risk ({s.model_name} {s.model_version})")
    ax_risk.step(x, thr, "r--", where="mid", lw=1, label="threshold")
    alarmed = np.array([h.alarm_level in ("alarm", "escalated") for h in s.hours])
    for i in np.flatnonzero(alarmed):
        ax_risk.axvspan(x[i] - 0.5, x[i] + 0.5, color="red", alpha=0.15, lw=0)
    insufficient = np.array([h.insufficient for h in s.hours])
    for i in np.flatnonzero(insufficient):
        ax_risk.axvspan(x[i] - 0.5, x[i] + 0.5, color="grey", alpha=0.15, lw=0)
    ax_n = ax_risk.twinx()
    ax_n.step(x, [h.news2.total for h in s.hours], "C9", where="mid", lw=1, alpha=0.8)
    ax_n.set_ylabel("NEWS2", color="C9")
    ax_n.set_ylim(0, 20)
    ax_risk.set_ylim(0, 1)
    ax_risk.set_ylabel("risk")
    ax_risk.set_xlabel("hours since ICU admission (ICULOS)")
    from matplotlib.patches import Patch

    handles, labels = ax_risk.get_legend_handles_labels()
    handles += [Patch(color="red", alpha=0.15), Patch(color="grey", alpha=0.15)]
    labels += ["alarm raised", "insufficient data"]
    ax_risk.legend(handles, labels, loc="upper left", fontsize=8, ncol=2)
    if s.stay.label is not None and np.nanmax(s.stay.label, initial=0) > 0:
        first = float(s.stay.iculos[np.argmax(s.stay.label > 0)])
        for ax in (ax_hr, ax_bp, ax_risk):
            ax.axvline(first, color="purple", ls=":", lw=1)
        ax_risk.annotate("SepsisLabel 1", (first, 0.93), color="purple", fontsize=8)
    fig.suptitle(f"vigil edge score {s.stay.name}: model {s.model_name} {s.model_version}")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
