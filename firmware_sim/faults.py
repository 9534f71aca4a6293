"""Faults a monitor and its line can show, on demand or by schedule, and their log.

Spec language (``--fault``, repeatable; also typed on the simulator's stdin, where a
spec without ``@`` applies to the next cycle)::

    FAULT  := KIND [":" ARG] ["@" START ["+" LENGTH]] ["#" BEDS]
    KIND   := sensor_off | artefact | dropout | garble | truncate | noise | pause | reboot
    ARG    := a vital (HR O2Sat Temp SBP MAP DBP Resp) or "all"   for sensor_off, artefact
              a byte count                                         for noise (16), garble (8)
    START  := TIME   the first cycle at or after START since the monitor's first message
    LENGTH := TIME   the window [START, START+LENGTH) (at least one cycle)
    TIME   := NUMBER UNIT   UNIT = ms | s | m | h (monitor time, see below) or msg (cycles);
              a bare number is seconds. "@1msg" is the first message, "+3msg" three cycles.
    BEDS   := "2" or "1,3": 1-based bed numbers; default every bed

    sensor_off:O2Sat@30s+60s   SpO2 probe off from 30 s for 60 s
    artefact:HR@2m             one implausible heart rate at 2 min
    garble@5msg#2              the 5th message of bed 2 arrives garbled
    reboot@1m+10s              10 s of silence at 1 min, then seq restarts at 1

Times are *monitor time*: cycle n (0-based) is at n * wall interval, whatever the
machine's scheduling jitter, so a schedule always hits the same cycles. A fault without
LENGTH hits one cycle (pause: 5 s, reboot: 3 s of silence).

What each fault does to the wire (the gateway should count exactly these):

- sensor_off: the vital's OBX-5 empty and OBX-11 ``X`` in every message of the window.
- artefact: the vital's value replaced by an implausible spike (`SPIKES`), OBX-11 ``R``.
- dropout: the cycle's message is not sent; its seq is used (a seq gap of one).
- garble: the message bytes at `ARG` seeded positions, always including its first byte
  (the M of MSH), are XOR 0x80: the frame arrives whole (0x0B .. 0x1C 0x0D) but is
  neither ASCII nor HL7. Never creates framing bytes.
- truncate: 0x0B and the first half of the message are sent, no end block: the next
  frame's 0x0B arrives inside the unfinished frame.
- noise: `ARG` random bytes, none of them 0x0B, 0x1C or 0x0D, sent before the cycle's
  frame (outside any frame).
- pause: nothing at all is sent during the window; the cycles' seqs are used (a gap).
- reboot: nothing is sent during the window; the next message has seq 1.

Masking: a cycle that is not sent (dropout, pause, reboot) hides its other faults; a
truncated frame hides garble, sensor_off and artefact; a garbled frame hides
sensor_off and artefact. Hidden faults are logged with ``visible: false``.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from contracts.mllp import FRAMING_BYTES
from contracts.vitals import VITAL_NAMES

KINDS: tuple[str, ...] = (
    "sensor_off",
    "artefact",
    "dropout",
    "garble",
    "truncate",
    "noise",
    "pause",
    "reboot",
)
SILENT_KINDS = ("dropout", "pause", "reboot")  # the cycle is not sent
DEFAULT_LENGTH_S = {"pause": 5.0, "reboot": 3.0}
DEFAULT_BYTES = {"noise": 16, "garble": 8}
# Implausible values (outside contracts.vitals ranges) a monitor shows on artefact.
SPIKES: dict[str, float] = {
    "HR": 350.0,
    "O2Sat": 20.0,
    "Temp": 20.0,
    "SBP": 330.0,
    "MAP": 280.0,
    "DBP": 230.0,
    "Resp": 0.0,
}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_TIME_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|msg|)$")


class FaultSpecError(ValueError):
    """A fault spec that does not follow the spec language."""


@dataclass(frozen=True)
class Time:
    value: float
    cycles: bool  # True: a count of cycles ("msg"), False: seconds


@dataclass(frozen=True)
class FaultSpec:
    kind: str
    arg: str | None = None  # vital / "all" / byte count
    start: Time | None = None  # None: the next cycle (on demand)
    length: Time | None = None
    beds: tuple[int, ...] | None = None  # 1-based; None = every bed
    text: str = ""

    @property
    def vitals(self) -> tuple[str, ...]:
        if self.kind not in ("sensor_off", "artefact"):
            return ()
        return VITAL_NAMES if self.arg in (None, "all") else (str(self.arg),)

    @property
    def nbytes(self) -> int:
        return int(self.arg) if self.arg else DEFAULT_BYTES.get(self.kind, 0)


def parse_time(text: str, spec: str, what: str) -> Time:
    m = _TIME_RE.match(text.strip())
    if not m:
        raise FaultSpecError(
            f"fault {spec!r}: bad {what} {text!r}; use a number with ms, s, m, h or msg"
        )
    value, unit = float(m.group(1)), m.group(2)
    if unit == "msg":
        if value != int(value) or (what == "start" and value < 1):
            raise FaultSpecError(f"fault {spec!r}: {what} in msg must be a whole number >= 1")
        return Time(value, True)
    return Time(value * _UNITS[unit], False)


def parse_fault(spec: str) -> FaultSpec:
    """Parse one fault spec; FaultSpecError naming what is wrong."""
    text = spec.strip()
    rest, _, beds = text.partition("#")
    rest, at, when = rest.partition("@")
    kind, _, arg = rest.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise FaultSpecError(f"unknown fault {kind!r} in {spec!r}; known: {', '.join(KINDS)}")
    arg_v: str | None = arg.strip() or None
    if kind in ("sensor_off", "artefact"):
        if arg_v is not None and arg_v != "all" and arg_v not in VITAL_NAMES:
            raise FaultSpecError(
                f"fault {spec!r}: unknown vital {arg_v!r}; use one of {', '.join(VITAL_NAMES)}"
                " or all"
            )
    elif kind in ("noise", "garble"):
        if arg_v is not None and (not arg_v.isdigit() or not 1 <= int(arg_v) <= 4096):
            raise FaultSpecError(f"fault {spec!r}: byte count must be 1..4096, got {arg_v!r}")
    elif arg_v is not None:
        raise FaultSpecError(f"fault {spec!r}: {kind} takes no argument")
    start = length = None
    if at:
        s, _, ln = when.partition("+")
        start = parse_time(s, spec, "start")
        if ln:
            length = parse_time(ln, spec, "length")
            if length.value <= 0:
                raise FaultSpecError(f"fault {spec!r}: length must be > 0")
    bed_t: tuple[int, ...] | None = None
    if beds:
        try:
            bed_t = tuple(int(b) for b in beds.split(","))
        except ValueError:
            raise FaultSpecError(f"fault {spec!r}: beds must be numbers like 1 or 1,3") from None
        if any(b < 1 for b in bed_t):
            raise FaultSpecError(f"fault {spec!r}: bed numbers start at 1")
    return FaultSpec(kind, arg_v, start, length, bed_t, text)


def _to_cycle(t: Time, wall_interval: float) -> int:
    if t.cycles:
        return int(t.value) - 1
    return max(0, math.ceil(t.value / wall_interval - 1e-9))


@dataclass(frozen=True)
class ScheduledFault:
    spec: FaultSpec
    first: int  # first cycle (0-based)
    end: int  # exclusive


def resolve(spec: FaultSpec, wall_interval: float, next_cycle: int = 0) -> ScheduledFault:
    """The cycles [first, end) that `spec` hits for a monitor with `wall_interval`."""
    first = next_cycle if spec.start is None else _to_cycle(spec.start, wall_interval)
    if spec.length is not None:
        if spec.length.cycles:
            n = int(spec.length.value)
        else:
            n = math.ceil(spec.length.value / wall_interval - 1e-9)
    elif spec.kind in DEFAULT_LENGTH_S:
        n = math.ceil(DEFAULT_LENGTH_S[spec.kind] / wall_interval - 1e-9)
    else:
        n = 1
    return ScheduledFault(spec, first, first + max(1, n))


class FaultPlan:
    """The faults of one monitor: scheduled ones plus those injected on demand."""

    def __init__(self, bed_number: int, wall_interval: float, seed: int = 0) -> None:
        self.bed_number = bed_number
        self.wall_interval = wall_interval
        self._faults: list[ScheduledFault] = []
        self._pending: list[FaultSpec] = []
        self._lock = threading.Lock()
        self.rng = np.random.default_rng([seed, bed_number, 7])

    def applies(self, spec: FaultSpec) -> bool:
        return spec.beds is None or self.bed_number in spec.beds

    def add(self, spec: FaultSpec) -> None:
        """Schedule `spec` (on demand if it has no start): thread-safe."""
        if not self.applies(spec):
            return
        with self._lock:
            if spec.start is None:
                self._pending.append(spec)
            else:
                self._faults.append(resolve(spec, self.wall_interval))

    def active(self, cycle: int) -> list[FaultSpec]:
        """Faults hitting `cycle`; pending on-demand faults start at this cycle."""
        with self._lock:
            for spec in self._pending:
                self._faults.append(resolve(spec, self.wall_interval, next_cycle=cycle))
            self._pending.clear()
            return [f.spec for f in self._faults if f.first <= cycle < f.end]

    def window(self, spec: FaultSpec) -> ScheduledFault | None:
        with self._lock:
            return next((f for f in self._faults if f.spec is spec), None)

    def noise(self, n: int) -> bytes:
        """`n` random bytes, none of them an MLLP framing byte or CR."""
        vals = self.rng.integers(0, 256 - len(FRAMING_BYTES), n)
        table = np.array([b for b in range(256) if b not in FRAMING_BYTES], dtype=np.uint8)
        return table[vals].tobytes()

    def garble(self, message: bytes, n: int) -> bytes:
        """`message` with `n` bytes (always the first) XOR 0x80."""
        buf = bytearray(message)
        k = min(n, len(buf))
        others = self.rng.choice(np.arange(1, len(buf)), size=max(0, k - 1), replace=False)
        for i in [0, *others.tolist()]:
            buf[i] ^= 0x80
        return bytes(buf)


@dataclass
class FaultEvent:
    """One fault as it reached (or was hidden from) the line."""

    bed: str
    monitor_id: str
    kind: str
    arg: str | None
    cycle: int
    seq: int | None  # seq of the message it hit (None: nothing sent / not yet numbered)
    obs_time: str
    visible: bool
    detail: str = ""
    spec: str = ""


class FaultLog:
    """Every injected fault, in order; optionally appended to a JSON-lines file."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.events: list[FaultEvent] = []
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def record(self, event: FaultEvent) -> None:
        with self._lock:
            self.events.append(event)
            if self._file:
                row = {"ts": time.time(), **asdict(event)}
                self._file.write(json.dumps(row) + "\n")
                self._file.flush()

    def count(self, kind: str, bed: str | None = None, visible: bool = True) -> int:
        with self._lock:
            return sum(
                1
                for e in self.events
                if e.kind == kind and e.visible == visible and (bed is None or e.bed == bed)
            )

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
