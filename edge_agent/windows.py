"""Per-bed steps and model windows, by OBSERVATION time, with the shared preprocessing.

Readings are bucketed into steps of the manifest's `window.step_seconds` counted from
ICU admission (PV1-44), so step k holds hours [k, k+1) and its ICULOS is k, as in the
training rows (the simulator replays the row with ICULOS = k during that hour). Time
is the monitor's observation time, never wall time: replays run accelerated.

A step closes when a reading of a later step arrives. Its value per vital is
`contracts.preprocessing.aggregate_readings` (median of the plausible readings), and
steps with no reading at all are all-missing rows, so the history is the dense
hour-by-hour grid the trainer saw. The model input for the closed step is
`stay_windows(history)[-1]`: the very function the trainer used, on the whole stay (the
forward fill may reach back further than the window). A window with fewer than
`min_observed` raw values is marked insufficient: the gateway says so instead of
scoring a guess. Readings older than the open step (late or clock going back) are
counted and dropped; a new stay id on the bed starts a new history.

A vital the monitor withheld (`Reading.quality`: invalid, demo data, ...) is not a
reading of that vital: the step's value is the median of the valid ones only, and a
step with none has no value (`ClosedStep.quality` says which state withheld it). The
model input forward-fills such a step from earlier hours exactly as it fills any hour
without a measurement, as in training; the published step and NEWS2 never do.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from contracts.preprocessing import PreprocessSpec, aggregate_readings, stay_windows

from .decoder import Reading

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_HISTORY_STEPS = 24 * 60  # 60 days of hourly rows per stay; older rows are dropped
MAX_GAP_STEPS = 24 * 7  # a jump larger than this starts a new history (clock reset)


@dataclass(frozen=True)
class ModelInput:
    window: np.ndarray  # [steps, F] float32, normalised
    static: np.ndarray  # [S] float32, normalised
    observed: int
    insufficient: bool


@dataclass(frozen=True)
class ClosedStep:
    bed: str
    stay: str
    index: int  # step number since ICU admission (or since the epoch if unknown)
    start: datetime  # observation time at which the step began
    step_seconds: int
    values: dict[str, float | None]  # aggregated, None when no plausible reading
    static: dict[str, float | None]
    readings: int
    # The model input for this step, built when it closed (before a stay change resets
    # the history): stay_windows(history up to this step)[-1].
    model_input: ModelInput | None = None
    # vital -> the state (most frequent) that withheld it, for vitals with no value in
    # this step although the monitor sent them flagged (invalid, demo_data, ...).
    quality: dict[str, str] = field(default_factory=dict)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.step_seconds)

    @property
    def iculos_hours(self) -> float:
        return float(self.static.get("ICULOS") or 0.0)


@dataclass
class _Open:
    index: int
    start: datetime
    values: dict[str, list[float | None]]
    static: dict[str, float | None] = field(default_factory=dict)
    readings: int = 0
    withheld: dict[str, Counter[str]] = field(default_factory=dict)


class BedWindows:
    """Steps and windows of one bed (single-threaded: the bed's own worker)."""

    def __init__(
        self, bed: str, spec: PreprocessSpec, max_history: int = MAX_HISTORY_STEPS
    ) -> None:
        self.bed = bed
        self.spec = spec
        self.step_seconds = spec.window.step_seconds
        self.max_history = max_history
        self.stay: str | None = None
        self._anchor: datetime = EPOCH
        self._open: _Open | None = None
        self._dyn: list[list[float]] = []
        self._static: list[list[float]] = []
        self._last_index: int | None = None
        self.late = 0  # readings dropped because their step had already closed
        self.last_step: ClosedStep | None = None

    def set_spec(self, spec: PreprocessSpec) -> bool:
        """Use a new model's preprocessing; True when the stay's history was kept.

        The history holds RAW values, so a new window length or new normalisation
        constants apply to it at once; other features or another step length do not
        fit the rows, so the history starts again (the model says insufficient data
        until enough steps have been seen)."""
        same = (
            spec.feature_names == self.spec.feature_names
            and spec.static_names == self.spec.static_names
            and spec.window.step_seconds == self.step_seconds
        )
        self.spec = spec
        self.step_seconds = spec.window.step_seconds
        if not same:
            self._open = None
            self._dyn, self._static = [], []
            self._last_index = None
        return same

    def _index(self, t: datetime) -> int:
        return math.floor((t - self._anchor).total_seconds() / self.step_seconds)

    def _new_open(self, index: int) -> _Open:
        start = self._anchor + timedelta(seconds=index * self.step_seconds)
        return _Open(index, start, {n: [] for n in self.spec.feature_names})

    def _close(self) -> ClosedStep:
        o = self._open
        assert o is not None
        values = {n: aggregate_readings(v, n) for n, v in o.values.items()}
        static = dict(o.static)
        static["ICULOS"] = o.index * self.step_seconds / 3600.0
        if self._last_index is not None:  # steps with no reading at all: missing rows
            gap = o.index - self._last_index - 1
            for k in range(min(gap, self.max_history)):
                self._dyn.append([math.nan] * len(values))
                idx = self._last_index + 1 + k
                s = dict(static, ICULOS=idx * self.step_seconds / 3600.0)
                self._static.append([_nan(s.get(n)) for n in self.spec.static_names])
        self._dyn.append([values[n] for n in self.spec.feature_names])
        self._static.append([_nan(static.get(n)) for n in self.spec.static_names])
        if len(self._dyn) > self.max_history:
            del self._dyn[: -self.max_history]
            del self._static[: -self.max_history]
        self._last_index = o.index
        self._open = None
        step = ClosedStep(
            bed=self.bed,
            stay=self.stay or "",
            index=o.index,
            start=o.start,
            step_seconds=self.step_seconds,
            values={n: (None if math.isnan(x) else x) for n, x in values.items()},
            static=static,
            readings=o.readings,
            model_input=self.model_input(),
            quality={
                n: c.most_common(1)[0][0]
                for n, c in o.withheld.items()
                if math.isnan(values.get(n, math.nan))
            },
        )
        self.last_step = step
        return step

    def _reset(self, stay: str, anchor: datetime) -> None:
        self.stay = stay
        self._anchor = anchor
        self._open = None
        self._dyn, self._static = [], []
        self._last_index = None

    def add(self, r: Reading) -> list[ClosedStep]:
        """Add one reading; returns the steps it closed (0 or 1, 2 on a stay change)."""
        closed: list[ClosedStep] = []
        anchor = r.icu_admit or EPOCH
        if r.stay != self.stay or anchor != self._anchor:
            if self._open is not None and self._open.readings:
                closed.append(self._close())
            self._reset(r.stay, anchor)
        idx = self._index(r.obs_time)
        ref = self._open.index if self._open is not None else self._last_index
        if ref is not None and idx < ref - MAX_GAP_STEPS:
            # The clock went back by more than a week (a monitor clock reset, or the
            # step before came from a wrong time): a new history, not a week of "late"
            # readings that would leave the bed unscored.
            if self._open is not None and self._open.readings:
                closed.append(self._close())
            self._reset(r.stay, anchor)
        if self._open is not None and idx != self._open.index:
            if idx < self._open.index:
                self.late += 1
                return closed
            closed.append(self._close())
        elif self._open is None and self._last_index is not None and idx <= self._last_index:
            self.late += 1
            return closed
        if self._last_index is not None and idx - self._last_index > MAX_GAP_STEPS:
            self._reset(r.stay, anchor)
        if self._open is None:
            self._open = self._new_open(idx)
        o = self._open
        o.readings += 1
        for n in o.values:
            o.values[n].append(r.values.get(n))
        o.static = {k: v for k, v in r.static.items() if k != "ICULOS"}
        for n, why in r.quality.items():
            o.withheld.setdefault(n, Counter())[why] += 1
        return closed

    def flush(self) -> ClosedStep | None:
        """Close the open step now (end of a replay, shutdown)."""
        if self._open is None or not self._open.readings:
            return None
        return self._close()

    def history(self) -> tuple[np.ndarray, np.ndarray]:
        """The stay's rows so far: dyn [T, F] raw (NaN missing), static [T, S]."""
        f, s = len(self.spec.features), len(self.spec.static_features)
        dyn = np.array(self._dyn, dtype=np.float64).reshape(-1, f)
        static = np.array(self._static, dtype=np.float64).reshape(-1, s)
        return dyn, static

    def model_input(self) -> ModelInput:
        """Input for the last closed step: `stay_windows(history)[-1]`."""
        dyn, static = self.history()
        if dyn.shape[0] == 0:
            raise ValueError(f"bed {self.bed}: no closed step yet")
        windows, s, observed = stay_windows(dyn, static, self.spec)
        obs = int(observed[-1])
        return ModelInput(windows[-1], s[-1], obs, obs < self.spec.min_observed)


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)
