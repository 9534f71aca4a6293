"""Where the simulated monitor's numbers come from: replayed real stays or a generator.

A source answers `sample(t, dt)`: the reading of every vital at simulated time `t`
(seconds since ICU admission), `dt` seconds after the previous reading; None for a
sensor that is off. Both sources add the same beat-to-beat noise.

Beat-to-beat noise
------------------
Each vital carries an AR(1) (Ornstein-Uhlenbeck) noise with stationary standard
deviation `NOISE_SIGMA` and correlation time `NOISE_TAU_S` (20 s): at 1 Hz successive
readings are correlated as on a real monitor; at high speed (a reading every few
minutes of simulated time) they are independent. Sigmas per vital:

    HR 1.5 /min, O2Sat 0.5 %, Temp 0.03 Cel, SBP 2.0, MAP 1.5, DBP 1.5 mm[Hg], Resp 1.0 /min

Readings are then clipped to physical bounds (>= 0; SpO2 <= 100).

Replay of the canonical table
-----------------------------
The row with ICULOS = k is played during simulated hours [k, k+1) after ICU admission
(floor of the gateway's ICULOS = k). Its charted value is held through the hour; the
change to the next charted hour is a linear ramp of `ramp_s` seconds (default 600 s)
centred on the hour boundary, so trends are smooth and the median of an hour of
readings (`contracts.preprocessing.aggregate_readings`) is the charted value within
one noise sigma plus the display resolution (tested at 60 readings per hour);
`ramp_s=3600` interpolates linearly between hour centres instead, at the price of
hourly medians pulled towards the neighbouring hours. Measured on the first 50 stays
of set A (about 10,500 charted stay-hour values, 60 readings per hour): the hourly
median differs from the charted value by 0.1-0.15 sigma at the median, 0.75 sigma
at worst. A value missing in an hour (NaN) is a sensor off for that whole
hour: no ramp into or out of it, the last value is held to the end of its own hour.
Hours beyond the last row end the replay. Static data: Age -> PID-7 birth date,
Gender -> PID-8, ICULOS of the first row -> ICU admission time (PV1-44) such that the
first message is at the first row's hour, HospAdmTime -> hospital admission (known to the
monitor's patient, not sent: IHE PCD-01 has no field for it).

Generated patients
------------------
`GeneratedSource(scenario, seed)`: a baseline drawn from the seed, a slow random
drift (Ornstein-Uhlenbeck, 30 min), the beat-to-beat noise, and a scenario:
stable; sepsis (from `onset`, default 1 h: over about 6 h HR +35, Resp +10,
Temp +1.8, SBP -35, DBP -18, SpO2 -4); hypotension (from `onset`, default 10 min:
SBP -45, DBP -25, HR +25 within 3 min, held 20 min, recovering over 10 min);
desaturation (from `onset`, default 5 min: SpO2 -14 within 2 min, HR +15, Resp +8,
held 8 min, recovering over 3 min). Same seed and same sampling times give the same
readings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np

from contracts.canonical import KEY_COLUMNS
from contracts.vitals import VITAL_NAMES

NOISE_SIGMA: dict[str, float] = {
    "HR": 1.5,
    "O2Sat": 0.5,
    "Temp": 0.03,
    "SBP": 2.0,
    "MAP": 1.5,
    "DBP": 1.5,
    "Resp": 1.0,
}
NOISE_TAU_S = 20.0
UPPER_BOUND: dict[str, float] = {"O2Sat": 100.0}
SCENARIOS: tuple[str, ...] = ("stable", "sepsis", "hypotension", "desaturation")


class DataError(ValueError):
    """The canonical table cannot be used for replay (unreadable, unknown stay, ...)."""


@dataclass(frozen=True)
class Patient:
    """Static data a monitor knows about its patient (pseudonymous)."""

    stay_id: str
    age_years: float | None  # None when unknown
    sex: str  # M / F / U
    hosp_adm_hours: float | None  # HospAdmTime: hospital admission - ICU admission (<= 0)


class PhysiologySource(Protocol):
    patient: Patient

    @property
    def start_s(self) -> float:
        """Simulated seconds since ICU admission at which monitoring starts."""
        ...

    @property
    def end_s(self) -> float | None:
        """Simulated seconds since ICU admission where the data end (None: endless)."""
        ...

    def sample(self, t: float, dt: float) -> dict[str, float | None]: ...


class BeatNoise:
    """AR(1) noise per vital with the documented sigmas; seeded."""

    def __init__(self, rng: np.random.Generator, scale: float = 1.0) -> None:
        self._rng = rng
        self._sigma = np.array([NOISE_SIGMA[n] * scale for n in VITAL_NAMES])
        self._state = self._rng.standard_normal(len(VITAL_NAMES)) * self._sigma

    def step(self, dt: float) -> np.ndarray:
        phi = math.exp(-max(dt, 0.0) / NOISE_TAU_S)
        innov = self._rng.standard_normal(len(VITAL_NAMES)) * self._sigma
        self._state = phi * self._state + math.sqrt(1.0 - phi * phi) * innov
        return self._state


def _finish(names: Sequence[str], clean: np.ndarray, noise: np.ndarray) -> dict:
    out: dict[str, float | None] = {}
    for i, name in enumerate(names):
        x = clean[i]
        if math.isnan(x):
            out[name] = None
            continue
        y = max(0.0, x + noise[i])
        out[name] = min(y, UPPER_BOUND.get(name, math.inf))
    return out


class ReplaySource:
    """Plays one stay of the canonical table (hourly rows) at the monitor's rate."""

    def __init__(
        self,
        stay_id: str,
        iculos: Sequence[float],
        values: np.ndarray,
        patient: Patient,
        seed: int = 0,
        ramp_s: float = 600.0,
    ) -> None:
        hours = np.asarray(iculos, dtype=np.float64)
        if hours.size == 0:
            raise DataError(f"stay {stay_id} has no rows")
        if not (0 < ramp_s <= 3600):
            raise ValueError(f"ramp_s must be in (0, 3600], got {ramp_s}")
        self.stay_id = stay_id
        self.patient = patient
        self.ramp_s = ramp_s
        first, last = int(hours.min()), int(hours.max())
        # A dense grid of hours first..last; hours without a row are all-missing.
        self._first = first
        self.hourly = np.full((last - first + 1, len(VITAL_NAMES)), np.nan)
        self.hourly[hours.astype(int) - first] = np.asarray(values, dtype=np.float64)
        self._noise = BeatNoise(np.random.default_rng(seed))

    @property
    def start_s(self) -> float:
        return self._first * 3600.0

    @property
    def end_s(self) -> float:
        return (self._first + len(self.hourly)) * 3600.0

    def hour_value(self, iculos: int, name: str) -> float:
        """The charted value of vital `name` for the row with ICULOS `iculos` (NaN)."""
        return float(self.hourly[iculos - self._first, VITAL_NAMES.index(name)])

    def clean(self, t: float) -> np.ndarray:
        """Noise-free value of every vital at `t` (NaN: sensor off)."""
        k = int(t // 3600) - self._first
        n = len(self.hourly)
        if k < 0 or k >= n:
            return np.full(len(VITAL_NAMES), np.nan)
        cur = self.hourly[k]
        out = cur.copy()
        u = t - (k + self._first) * 3600.0  # seconds into the hour
        half = self.ramp_s / 2.0
        if u >= 3600.0 - half and k + 1 < n:  # ramp towards the next hour
            nxt = self.hourly[k + 1]
            w = (u - (3600.0 - half)) / self.ramp_s  # 0 .. 0.5
            both = ~np.isnan(nxt) & ~np.isnan(cur)
            out[both] = cur[both] + w * (nxt[both] - cur[both])
        elif u < half and k > 0:  # ramp from the previous hour
            prev = self.hourly[k - 1]
            w = 0.5 + u / self.ramp_s  # 0.5 .. 1
            both = ~np.isnan(prev) & ~np.isnan(cur)
            out[both] = prev[both] + w * (cur[both] - prev[both])
        return out

    def sample(self, t: float, dt: float) -> dict[str, float | None]:
        return _finish(VITAL_NAMES, self.clean(t), self._noise.step(dt))


def _opt(x: object) -> float | None:
    try:
        f = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def load_replay(
    path: str | Path, stay_ids: Sequence[str], seed: int = 0, ramp_s: float = 600.0
) -> list[ReplaySource]:
    """Replay sources for `stay_ids` from the canonical Parquet table at `path`.

    Reads only the needed rows and columns with pyarrow (no pandas). DataError with
    the reason for an unreadable file, missing columns or an unknown stay.
    """
    try:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - pyarrow is a dev/hub dependency
        raise DataError(f"replay needs pyarrow to read {path}: pip install pyarrow") from e
    p = Path(path)
    cols = [*KEY_COLUMNS, *VITAL_NAMES, "Age", "Gender", "HospAdmTime", "ICULOS"]
    try:
        pf = pq.ParquetFile(p)
        missing = [c for c in cols if c not in pf.schema_arrow.names]
        if missing:
            raise DataError(f"{p} is not a canonical table: columns {missing} are missing")
        table = pq.read_table(p, columns=cols, filters=[("stay_id", "in", list(stay_ids))])
    except DataError:
        raise
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise DataError(f"cannot read canonical table {p}: {e}") from e
    sources = []
    for i, sid in enumerate(stay_ids):
        rows = table.filter(pc.equal(table["stay_id"], sid))
        if rows.num_rows == 0:
            some = pq.read_table(p, columns=["stay_id"])["stay_id"].unique()[:5].to_pylist()
            raise DataError(f"unknown stay {sid!r} in {p} (stays there include {some})")
        data = {c: rows[c].to_numpy(zero_copy_only=False) for c in cols[1:]}
        order = np.argsort(data["hour"], kind="stable")
        iculos = np.asarray(data["ICULOS"], dtype=np.float64)[order]
        hour = np.asarray(data["hour"], dtype=np.float64)[order]
        iculos = np.where(np.isnan(iculos), hour, iculos)  # ICULOS is the row time
        vals = np.column_stack([np.asarray(data[n], dtype=np.float64)[order] for n in VITAL_NAMES])
        gender = _opt(data["Gender"][order][0])
        patient = Patient(
            stay_id=sid,
            age_years=_opt(data["Age"][order][0]),
            sex={1.0: "M", 0.0: "F"}.get(gender, "U") if gender is not None else "U",
            hosp_adm_hours=_opt(data["HospAdmTime"][order][0]),
        )
        sources.append(ReplaySource(sid, iculos, vals, patient, seed=seed + i, ramp_s=ramp_s))
    return sources


def stay_ids_in(path: str | Path, limit: int = 20) -> list[str]:
    """A few stay ids of the canonical table (for `vigil sim stays`)."""
    import pyarrow.parquet as pq

    try:
        col = pq.read_table(Path(path), columns=["stay_id"])["stay_id"]
    except Exception as e:
        raise DataError(f"cannot read canonical table {path}: {e}") from e
    return col.unique()[:limit].to_pylist()


# --- generated patients -------------------------------------------------------------


def _ramp(t: float, start: float, length: float) -> float:
    """0 before `start`, rising linearly to 1 over `length` seconds."""
    if t <= start:
        return 0.0
    return min(1.0, (t - start) / length)


def _sigmoid_ramp(t: float, start: float, length: float) -> float:
    """Smooth 0 -> 1 from `start` over about `length` seconds (clinical deterioration)."""
    if t <= start:
        return 0.0
    x = (t - start) / length * 10.0 - 5.0
    s = 1.0 / (1.0 + math.exp(-x))
    s0 = 1.0 / (1.0 + math.exp(5.0))
    return (s - s0) / (1.0 - s0)


def _episode(t: float, start: float, rise: float, hold: float, recover: float) -> float:
    """0 -> 1 over `rise`, held `hold`, back to 0 over `recover` (seconds)."""
    if t <= start:
        return 0.0
    u = t - start
    if u < rise:
        return u / rise
    if u < rise + hold:
        return 1.0
    if u < rise + hold + recover:
        return 1.0 - (u - rise - hold) / recover
    return 0.0


# Deltas at full effect, per scenario (MAP follows SBP/DBP).
_DELTAS: dict[str, dict[str, float]] = {
    "stable": {},
    "sepsis": {"HR": 35, "Resp": 10, "Temp": 1.8, "SBP": -35, "DBP": -18, "O2Sat": -4},
    "hypotension": {"SBP": -45, "DBP": -25, "HR": 25},
    "desaturation": {"O2Sat": -14, "HR": 15, "Resp": 8},
}
_DEFAULT_ONSET_S: dict[str, float] = {
    "stable": 0.0,
    "sepsis": 3600.0,
    "hypotension": 600.0,
    "desaturation": 300.0,
}


class GeneratedSource:
    """A plausible patient drawn from `seed`, following `scenario`. Endless."""

    def __init__(self, scenario: str, seed: int, onset_s: float | None = None) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; choose one of {list(SCENARIOS)}")
        self.scenario = scenario
        self.seed = seed
        rng = np.random.default_rng([seed, SCENARIOS.index(scenario)])
        self.onset_s = _DEFAULT_ONSET_S[scenario] if onset_s is None else float(onset_s)
        sbp = rng.normal(124, 10)
        dbp = rng.normal(68, 6)
        self.baseline = {
            "HR": rng.normal(78, 8),
            "O2Sat": min(99.5, rng.normal(97, 1.0)),
            "Temp": rng.normal(36.9, 0.25),
            "SBP": sbp,
            "DBP": dbp,
            "Resp": rng.normal(16, 2),
        }
        self.patient = Patient(
            stay_id=f"sim-{scenario}-s{seed}",
            age_years=float(rng.integers(25, 90)),
            sex=str(rng.choice(["M", "F"])),
            hosp_adm_hours=-float(np.round(rng.uniform(0, 72), 2)),
        )
        self._start = float(rng.integers(1, 24)) * 3600.0
        self._drift_sigma = {
            "HR": 3.0,
            "O2Sat": 0.6,
            "Temp": 0.1,
            "SBP": 4,
            "DBP": 2.5,
            "Resp": 1.2,
        }
        self._drift = {k: 0.0 for k in self._drift_sigma}
        self._drift_rng = np.random.default_rng([seed, 101])
        self._noise = BeatNoise(np.random.default_rng([seed, 202]))

    @property
    def start_s(self) -> float:
        return self._start

    @property
    def end_s(self) -> None:
        return None

    def effect(self, t: float) -> float:
        """Scenario strength 0..1 at simulated time `t` (seconds since ICU admission)."""
        since = t - self._start
        if self.scenario == "sepsis":
            return _sigmoid_ramp(since, self.onset_s, 6 * 3600.0)
        if self.scenario == "hypotension":
            return _episode(since, self.onset_s, 180.0, 1200.0, 600.0)
        if self.scenario == "desaturation":
            return _episode(since, self.onset_s, 120.0, 480.0, 180.0)
        return 0.0

    def clean(self, t: float, dt: float = 0.0) -> dict[str, float]:
        phi = math.exp(-max(dt, 0.0) / 1800.0)
        for k, sig in self._drift_sigma.items():
            e = self._drift_rng.standard_normal() * sig
            self._drift[k] = phi * self._drift[k] + math.sqrt(1 - phi * phi) * e
        f = self.effect(t)
        d = _DELTAS[self.scenario]
        v = {k: self.baseline[k] + self._drift[k] + f * d.get(k, 0.0) for k in self.baseline}
        v["MAP"] = v["DBP"] + (v["SBP"] - v["DBP"]) / 3.0
        return v

    def sample(self, t: float, dt: float) -> dict[str, float | None]:
        c = self.clean(t, dt)
        return _finish(VITAL_NAMES, np.array([c[n] for n in VITAL_NAMES]), self._noise.step(dt))


def admission_times(
    patient: Patient, start_s: float, clock_start: datetime
) -> tuple[datetime, datetime | None]:
    """(ICU admission, hospital admission) such that monitoring starts at `clock_start`."""
    if clock_start.tzinfo is None:
        clock_start = clock_start.replace(tzinfo=UTC)
    icu_admit = clock_start - timedelta(seconds=start_s)
    hosp = (
        icu_admit + timedelta(hours=patient.hosp_adm_hours)
        if patient.hosp_adm_hours is not None
        else None
    )
    return icu_admit, hosp
