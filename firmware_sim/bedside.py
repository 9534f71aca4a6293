"""Bedside-faithful replay: a monitor's stream from a stay's hourly charted rows (issue 13).

The plain replay (`physiology.ReplaySource`) plays the chart: an hour without a charted
value is a sensor that is off. A bedside monitor measures otherwise, and a model that
learnt the chart's gaps would mislead at the bedside. `BedsideSource` plays what the
monitor would have measured on the patient the chart describes:

- HR, SpO2 and Resp (and arterial pressure when the stay has an arterial line, see
  below) are continuous: one reading every `cadence_s` seconds, linearly interpolated
  between the charted values (each charted value at the centre of its hour), the first
  value from the start of its hour (nothing before it), the last one held for up to
  `max_gap_h` hours. Two charted values more than `max_gap_h` apart are not joined:
  each holds to the end (start) of its own hour and the sensor is off in between.
- Blood pressure: a stay whose BP is charted in at least `arterial_min_share` of the
  hours between its first and last charted BP has an arterial line (continuous, as
  above); otherwise the pressure is non-invasive, measured once per cuff cycle
  (every `cuff_interval_s` from the start of monitoring: the value interpolated at
  that moment plus the cuff's measurement error), sent in the one reading of that
  cycle and absent from the others. `bp="arterial"` / `"cuff"` forces either.
- Temperature: a stay with temperature charted in at least `temp_probe_min_share` of
  the hours between its first and last charted value has a probe (continuous, as
  above); otherwise each charted temperature is a spot check, sent once, in the reading
  at the centre of its hour (the charted value itself).
- A vital never charted in the stay is never sent (sensor not attached).

Noise (seeded, bounded): each continuous vital carries an AR(1) noise (correlation time
`NOISE_TAU_S`, 20 s, so readings a minute apart are nearly independent) with the
standard deviations below, clipped at `NOISE_CLIP` (3) standard deviations, so a
reading is never further than 3 sigma from the interpolated value:

    HR 2.0 /min, SpO2 0.7 %, Resp 1.5 /min, arterial SBP 3.0, MAP 2.0, DBP 2.0 mm[Hg],
    probe Temp 0.05 Cel; NIBP per cuff cycle SBP 5.0, MAP 4.0, DBP 4.0 mm[Hg]

Sources for the magnitudes: short-term heart-rate variability of ICU patients is
depressed (SDNN about 10-40 ms; Task Force of the ESC/NASPE, Circulation 1996;
Ahmad et al., PLoS ONE 2009, on septic ICU patients), i.e. 1-3 /min around 80 /min;
breath-to-breath variability of respiratory rate has a coefficient of variation of
about 10 % in ventilated and spontaneously breathing patients (Tobin et al., Chest
1988; Wysocki et al., Crit Care Med 2006): 1.5 /min at 15 /min; pulse oximeters
are specified to an accuracy root-mean-square of at most 2-4 % (ISO 80601-2-61), their
minute-to-minute scatter at rest well under that; beat-to-beat arterial pressure
varies by a few mm[Hg] (Parati et al., Hypertension 1989); a cuff measurement may
differ from the intra-arterial value by a standard deviation of up to 8 mm[Hg]
(ISO 81060-2 / AAMI SP10 acceptance limit; 5 is typical of devices that pass it);
a temperature probe reads to 0.1 Cel.

Readings are clipped to physical bounds (>= 0, SpO2 <= 100) and rounded to the
monitor's display resolution (`hl7.DECIMALS`), so the values on the wire are exactly
the stream's. Determinism: the noise of the reading at simulated time `t` comes from a
generator seeded by (seed, hour of `t`) and the cuff error of cycle j from (seed, j),
so the stream is a function of the seed and the sampling times alone: `sample(t, dt)`
one reading at a time (the `Monitor`'s loop) and `values(times)` all at once (the
offline as-deployed evaluation, `benches/bench_model.py`) give the same numbers when the
monitor's simulated step equals `cadence_s`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contracts.vitals import VITAL_NAMES

from .hl7 import DECIMALS
from .physiology import UPPER_BOUND, DataError, Patient, ReplaySource, load_replay

NOISE_TAU_S = 20.0
NOISE_CLIP = 3.0
CONTINUOUS_SIGMA: dict[str, float] = {
    "HR": 2.0,
    "O2Sat": 0.7,
    "Temp": 0.05,
    "SBP": 3.0,
    "MAP": 2.0,
    "DBP": 2.0,
    "Resp": 1.5,
}
CUFF_SIGMA: dict[str, float] = {"SBP": 5.0, "MAP": 4.0, "DBP": 4.0}
BP_VITALS: tuple[str, ...] = ("SBP", "MAP", "DBP")
BP_MODES: tuple[str, ...] = ("auto", "arterial", "cuff")
_V = {n: i for i, n in enumerate(VITAL_NAMES)}
_HOUR = 3600.0


@dataclass(frozen=True)
class BedsideConfig:
    """How the monitor measures (see the module docstring); validated on creation."""

    cadence_s: float = 60.0  # seconds between readings of the continuous vitals
    max_gap_h: float = 4.0  # charted values further apart are not interpolated
    cuff_interval_s: float = 1800.0  # NIBP cuff cycle
    bp: str = "auto"  # auto | arterial | cuff
    arterial_min_share: float = 0.8  # share of hours with a charted BP: arterial line
    temp_probe_min_share: float = 0.5  # share of hours with a charted Temp: a probe
    noise_scale: float = 1.0  # 0: the interpolated values exactly

    def __post_init__(self) -> None:
        if not self.cadence_s > 0:
            raise ValueError(f"cadence must be > 0 seconds, got {self.cadence_s}")
        if not self.max_gap_h >= 1:
            raise ValueError(f"max gap must be >= 1 hour, got {self.max_gap_h}")
        if not self.cuff_interval_s >= self.cadence_s:
            raise ValueError(
                f"cuff interval ({self.cuff_interval_s} s) must be >= the cadence "
                f"({self.cadence_s} s): one cuff reading per cycle"
            )
        if self.bp not in BP_MODES:
            raise ValueError(f"bp must be one of {list(BP_MODES)}, got {self.bp!r}")
        for name in ("arterial_min_share", "temp_probe_min_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.noise_scale >= 0:
            raise ValueError(f"noise scale must be >= 0, got {self.noise_scale}")


@dataclass
class _Track:
    """Charted knots of one vital: times (hour centres, s) and values."""

    t: np.ndarray
    v: np.ndarray

    @property
    def empty(self) -> bool:
        return self.t.size == 0


def _share(hours: np.ndarray) -> float:
    """Share of the hours between the first and last charted one that are charted."""
    if hours.size == 0:
        return 0.0
    return hours.size / (hours.max() - hours.min() + 1)


@dataclass
class BedsideSource:
    """A monitor on the patient of one stay's hourly rows (a `PhysiologySource`)."""

    stay_id: str
    iculos: np.ndarray  # [T] hour of each row since ICU admission
    hourly: np.ndarray  # [T, 7] charted values (NaN: not charted)
    patient: Patient
    seed: int = 0
    config: BedsideConfig = field(default_factory=BedsideConfig)

    def __post_init__(self) -> None:
        hours = np.asarray(self.iculos, dtype=np.float64)
        vals = np.asarray(self.hourly, dtype=np.float64)
        if hours.size == 0:
            raise DataError(f"stay {self.stay_id} has no rows")
        if vals.shape != (hours.size, len(VITAL_NAMES)):
            raise DataError(f"stay {self.stay_id}: rows must be [T, {len(VITAL_NAMES)}]")
        order = np.argsort(hours, kind="stable")
        hours, vals = np.floor(hours[order]), vals[order]
        self._first = int(hours.min())
        self._last = int(hours.max())
        self.tracks: dict[str, _Track] = {}
        for n in VITAL_NAMES:
            ok = ~np.isnan(vals[:, _V[n]])
            self.tracks[n] = _Track((hours[ok] + 0.5) * _HOUR, vals[ok, _V[n]])
        c = self.config
        bp_charted = (~np.isnan(vals[:, [_V[n] for n in BP_VITALS]])).any(axis=1)
        bp_hours = np.unique(hours[bp_charted])
        if c.bp == "auto":
            self.arterial = bp_hours.size > 0 and _share(bp_hours) >= c.arterial_min_share
        else:
            self.arterial = c.bp == "arterial"
        temp_hours = hours[~np.isnan(vals[:, _V["Temp"]])]
        self.temp_probe = temp_hours.size > 1 and _share(temp_hours) >= c.temp_probe_min_share
        self._sigma = np.array([CONTINUOUS_SIGMA[n] * c.noise_scale for n in VITAL_NAMES])
        self._chunk_len = math.ceil(_HOUR / c.cadence_s)
        lag = np.arange(self._chunk_len)
        phi = math.exp(-c.cadence_s / NOISE_TAU_S)
        # AR(1) as one matrix product per hour: x[n] = sum_m phi^(n-m) w[m] e[m], w[0] = 1
        # (stationary start), w[m>0] = sqrt(1 - phi^2).
        diff = lag[:, None] - lag[None, :]
        ar = np.where(diff >= 0, phi ** np.maximum(diff, 0), 0.0)
        ar[:, 1:] *= math.sqrt(1.0 - phi * phi)
        self._ar = ar
        self._chunks: dict[int, np.ndarray] = {}

    # -- PhysiologySource ------------------------------------------------------------
    @property
    def start_s(self) -> float:
        return self._first * _HOUR

    @property
    def end_s(self) -> float:
        return (self._last + 1) * _HOUR

    def sample(self, t: float, dt: float) -> dict[str, float | None]:
        """The reading at simulated time `t` (`dt` unused: the noise is a function of t)."""
        row = self.values(np.array([t], dtype=np.float64))[0]
        return {
            n: (None if math.isnan(x) else float(x)) for n, x in zip(VITAL_NAMES, row, strict=True)
        }

    # -- the stream ------------------------------------------------------------------
    def times(self) -> np.ndarray:
        """The monitor's reading times over the stay (seconds since ICU admission)."""
        n = math.ceil((self.end_s - self.start_s) / self.config.cadence_s)
        return self.start_s + np.arange(n) * self.config.cadence_s

    def interpolated(self, name: str, t: np.ndarray) -> np.ndarray:
        """Noise-free value of `name` at times `t` (NaN: sensor off), per the rules."""
        tr = self.tracks[name]
        out = np.full(t.shape, np.nan)
        if tr.empty:
            return out
        kt, kv = tr.t, tr.v
        half, gap = _HOUR / 2, self.config.max_gap_h * _HOUR
        i = np.searchsorted(kt, t, side="right") - 1  # last knot at or before t
        first = (i < 0) & (t >= kt[0] - half)  # the first charted hour, before its centre
        out[first] = kv[0]
        last = (i == kt.size - 1) & (t < kt[-1] + gap)  # held after the last value
        out[last] = kv[-1]
        mid = (i >= 0) & (i < kt.size - 1)
        j = i[mid]
        t0, t1, v0, v1 = kt[j], kt[j + 1], kv[j], kv[j + 1]
        tm = t[mid]
        joined = (t1 - t0) <= gap
        w = (tm - t0) / (t1 - t0)
        x = np.where(joined, v0 + w * (v1 - v0), np.nan)
        x = np.where(~joined & (tm < t0 + half), v0, x)  # the end of its own hour
        x = np.where(~joined & (tm >= t1 - half), v1, x)  # the start of the next one's
        out[mid] = x
        return out

    def _noise(self, hour: int) -> np.ndarray:
        """Standard AR(1) noise [chunk, 7] of one hour, clipped at NOISE_CLIP."""
        got = self._chunks.get(hour)
        if got is None:
            rng = np.random.default_rng([self.seed, 1, hour])
            e = rng.standard_normal((self._chunk_len, len(VITAL_NAMES)))
            got = np.clip(self._ar @ e, -NOISE_CLIP, NOISE_CLIP)
            if len(self._chunks) > 4:  # the monitor's loop needs only the current hour
                self._chunks.clear()
            self._chunks[hour] = got
        return got

    def _cuff(self, cycle: int) -> np.ndarray:
        """The cuff's measurement error of cycle `cycle` (SBP, MAP, DBP), clipped."""
        rng = np.random.default_rng([self.seed, 2, cycle])
        e = np.clip(rng.standard_normal(len(BP_VITALS)), -NOISE_CLIP, NOISE_CLIP)
        return e * np.array([CUFF_SIGMA[n] for n in BP_VITALS]) * self.config.noise_scale

    def values(self, t: np.ndarray) -> np.ndarray:
        """Readings [len(t), 7] at simulated times `t` (NaN: not sent), vectorised."""
        t = np.asarray(t, dtype=np.float64)
        c = self.config
        out = np.full((t.size, len(VITAL_NAMES)), np.nan)
        hour = np.floor(t / _HOUR).astype(np.int64)
        pos = np.minimum(((t - hour * _HOUR) // c.cadence_s).astype(np.int64), self._chunk_len - 1)
        noise = np.empty_like(out)
        for h in np.unique(hour):
            sel = hour == h
            noise[sel] = self._noise(int(h))[pos[sel]]
        noise *= self._sigma[None, :]
        continuous = ["HR", "O2Sat", "Resp"]
        if self.arterial:
            continuous += list(BP_VITALS)
        if self.temp_probe:
            continuous.append("Temp")
        for n in continuous:
            out[:, _V[n]] = self.interpolated(n, t) + noise[:, _V[n]]
        if not self.arterial:
            since = t - self.start_s
            cycle = np.floor(since / c.cuff_interval_s).astype(np.int64)
            at = self.start_s + cycle * c.cuff_interval_s
            fires = (since >= 0) & (t - at < c.cadence_s)  # the cycle's one reading
            k = np.flatnonzero(fires)
            if k.size:
                err = np.array([self._cuff(int(j)) for j in cycle[k]])
                for b, n in enumerate(BP_VITALS):
                    out[k, _V[n]] = self.interpolated(n, at[k]) + err[:, b]
        if not self.temp_probe:
            tr = self.tracks["Temp"]
            if not tr.empty:
                # the reading at the centre of a charted hour carries that spot check
                k = np.searchsorted(tr.t, t, side="right") - 1
                ok = k >= 0
                kk = np.where(ok, k, 0)
                spot = ok & (t - tr.t[kk] < c.cadence_s)
                out[spot, _V["Temp"]] = tr.v[kk[spot]]
        out = np.maximum(out, 0.0)
        for n, hi in UPPER_BOUND.items():
            out[:, _V[n]] = np.minimum(out[:, _V[n]], hi)
        for n in VITAL_NAMES:
            out[:, _V[n]] = np.round(out[:, _V[n]], DECIMALS[n])
        return out


def bedside_from_replay(src: ReplaySource, seed: int, config: BedsideConfig) -> BedsideSource:
    """The bedside source of a `ReplaySource`'s stay (same hours, same patient)."""
    first = int(src.start_s // _HOUR)
    iculos = first + np.arange(src.hourly.shape[0], dtype=np.float64)
    return BedsideSource(src.stay_id, iculos, src.hourly, src.patient, seed=seed, config=config)


def load_bedside(
    path: str | Path,
    stay_ids: Sequence[str],
    seed: int = 0,
    config: BedsideConfig | None = None,
) -> list[BedsideSource]:
    """Bedside sources for `stay_ids` of the canonical table (bed i: seed + i)."""
    cfg = config or BedsideConfig()
    return [
        bedside_from_replay(s, seed + i, cfg)
        for i, s in enumerate(load_replay(path, stay_ids, seed=seed))
    ]
