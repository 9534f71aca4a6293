"""MLLP framing and HL7 v2 ORU^R01 decoding of the monitor line (layout: firmware_sim/hl7.py).

The line is untrusted: noise between frames, frames cut short, garbled bytes, a
monitor that reboots mid-frame. `MllpDecoder.feed(bytes)` never raises: it splits
frames at 0x0B ... 0x1C 0x0D, resynchronises at the next 0x0B after anything that is
not a whole frame, drops a frame that grows beyond `max_frame` bytes (the buffer is
bounded), and parses each whole frame into a typed `Reading`. Every frame that is
not a valid reading is counted under a reason (`stats.bad`) and logged; bytes
outside any frame are counted as noise.

A frame is valid only if its structure is: any malformed field rejects the whole
frame (a garbled digit can make a plausible wrong number; a half-checked frame is
worse than a dropped one, and the next reading comes a second later).

Log lines and error details never echo patient identification (PID-3 identifier,
PID-5 name, PID-7 birth date) nor the admission times: they name the field only.
`Reading.stay` is the raw PID-3 value, kept in memory only; the gateway replaces it
by its pseudonym before anything is stored or published (edge_agent/privacy.py).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from contracts.mllp import CR, EB, SB
from contracts.vitals import BY_LOINC, VITAL_NAMES

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAME = 16 * 1024  # a reading is ~700 bytes; anything far larger is junk
_TS = re.compile(r"^(\d{14})(?:\.(\d{1,3}))?\+0000$")
_NUM = re.compile(r"^-?\d{1,7}(?:\.\d{1,4})?$")
_ID = re.compile(r"^[\x20-\x7e]{1,64}$")


@dataclass(frozen=True)
class Reading:
    """One decoded reading cycle of one bedside monitor."""

    bed: str
    stay: str
    monitor_id: str
    seq: int
    obs_time: datetime  # the monitor's (possibly simulated, accelerated) clock, UTC
    values: dict[str, float | None]  # every catalogue vital; None: sensor off
    static: dict[str, float | None]  # Age, Gender, HospAdmTime, ICULOS (hours)
    icu_admit: datetime | None = None


class FrameError(ValueError):
    """A whole frame that is not a valid reading; `reason` is the counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class DecoderStats:
    frames_ok: int = 0
    noise_bytes: int = 0
    bad: Counter = field(default_factory=Counter)  # reason -> frames

    @property
    def frames_bad(self) -> int:
        return sum(self.bad.values())


def parse_ts(text: str, what: str = "") -> datetime:
    """HL7 time -> datetime; `what` (e.g. "PV1-44") names the field and hides the value
    (a patient's admission time is identifying); without it the value is shown."""
    shown = what or repr(text[:30])
    m = _TS.match(text)
    if not m:
        raise FrameError("bad_time", f"{shown} is not YYYYMMDDHHMMSS.fff+0000")
    try:
        base = datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise FrameError("bad_time", f"{shown} is not a calendar time") from None
    return base + timedelta(milliseconds=int((m.group(2) or "0").ljust(3, "0")))


def _f(fields: list[str], i: int) -> str:
    return fields[i] if i < len(fields) else ""


def _age(birth: date, when: datetime) -> int:
    d = when.date()
    return d.year - birth.year - ((d.month, d.day) < (birth.month, birth.day))


def parse_reading(body: bytes) -> Reading:
    """One MLLP frame body -> Reading, or FrameError naming what is wrong."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise FrameError("not_ascii") from None
    segs: dict[str, list[list[str]]] = {}
    for line in text.split("\r"):
        if line:
            parts = line.split("|")
            segs.setdefault(parts[0], []).append(parts)
    if not text.startswith("MSH|^~\\&|"):
        raise FrameError("not_hl7", "frame does not start with MSH|^~\\&|")
    msh = segs["MSH"][0]
    if len(segs["MSH"]) != 1 or _f(msh, 8) != "ORU^R01^ORU_R01":
        raise FrameError("bad_msh", f"message type {_f(msh, 8)[:20]!r}")
    control = _f(msh, 9)
    monitor_id, _, seq_text = control.rpartition("-")
    if not monitor_id or not seq_text.isdigit() or len(seq_text) > 12:
        raise FrameError("bad_msh", f"control id {control[:40]!r}")
    obs_time = parse_ts(_f(msh, 6))
    for name in ("PID", "PV1", "OBR", "ZAD"):
        if len(segs.get(name, ())) != 1:
            raise FrameError("bad_segments", f"{len(segs.get(name, ()))} {name} segments")
    pid, pv1, zad = segs["PID"][0], segs["PV1"][0], segs["ZAD"][0]
    stay = _f(pid, 3).split("^")[0]
    loc = _f(pv1, 3).split("^")
    bed = loc[2] if len(loc) > 2 else ""
    if not _ID.match(stay):  # PID-3 may be a record number: never echoed
        raise FrameError("bad_ids", f"PID-3 stay id ({len(stay)} chars) is not 1-64 printable")
    if not _ID.match(bed):
        raise FrameError("bad_ids", f"bed {bed[:20]!r}")
    values: dict[str, float | None] = {}
    for obx in segs.get("OBX", ()):
        vital = BY_LOINC.get(_f(obx, 3).split("^")[0])
        if vital is None or vital.name in values:
            raise FrameError("bad_obx", f"code {_f(obx, 3)[:20]!r} unknown or repeated")
        raw, status = _f(obx, 5), _f(obx, 11)
        if status == "X" and raw == "":
            values[vital.name] = None
        elif status == "R" and _NUM.match(raw):
            values[vital.name] = float(raw)
        else:
            raise FrameError("bad_value", f"{vital.name} value {raw[:12]!r} status {status[:4]!r}")
    if len(values) != len(VITAL_NAMES):
        missing = sorted(set(VITAL_NAMES) - set(values))
        raise FrameError("bad_obx", f"missing vitals {missing}")
    static: dict[str, float | None] = {"Age": None, "Gender": None, "HospAdmTime": None}
    birth = _f(pid, 7)
    if birth:
        try:
            static["Age"] = float(_age(datetime.strptime(birth, "%Y%m%d").date(), obs_time))
        except ValueError:
            raise FrameError("bad_pid", "PID-7 birth date is not YYYYMMDD") from None
    sex = _f(pid, 8)
    if sex not in ("M", "F", "U", ""):
        raise FrameError("bad_pid", "PID-8 sex is not M, F, U or empty")
    static["Gender"] = {"M": 1.0, "F": 0.0}.get(sex)
    admit = parse_ts(_f(pv1, 44), "PV1-44 ICU admission time") if _f(pv1, 44) else None
    hosp = parse_ts(_f(zad, 1), "ZAD-1 hospital admission time") if _f(zad, 1) else None
    if admit is not None and hosp is not None:
        static["HospAdmTime"] = (hosp - admit) / timedelta(hours=1)
    static["ICULOS"] = (obs_time - admit) / timedelta(hours=1) if admit else None
    for k, v in static.items():
        if v is not None and not math.isfinite(v):
            raise FrameError("bad_pid", f"{k} is not finite")
    return Reading(
        bed=bed,
        stay=stay,
        monitor_id=monitor_id,
        seq=int(seq_text),
        obs_time=obs_time,
        values=values,
        static=static,
        icu_admit=admit,
    )


class MllpDecoder:
    """Byte stream -> Readings; see the module docstring. Not thread-safe (one per line)."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, source: str = "") -> None:
        self.max_frame = max_frame
        self.source = source  # for log lines: which bed/line
        self.stats = DecoderStats()
        self._buf = bytearray()
        self._in_frame = False
        self._await_cr = False  # saw 0x1C at the end of the last chunk

    def reset(self) -> None:
        """The line was lost and reopened: a half frame in the buffer is cut short."""
        if self._in_frame:
            self._bad("truncated", "line reset mid-frame")
        self._buf.clear()
        self._in_frame = self._await_cr = False

    def _bad(self, reason: str, detail: str = "") -> None:
        self.stats.bad[reason] += 1
        log.info("bad frame on %s: %s %s", self.source or "line", reason, detail)

    def _complete(self, out: list[Reading]) -> None:
        body = bytes(self._buf)
        self._buf.clear()
        self._in_frame = False
        try:
            out.append(parse_reading(body))
            self.stats.frames_ok += 1
        except FrameError as e:
            self._bad(e.reason, e.detail)
        except Exception as e:  # a parser bug must not take the line down: count it
            # the type only: an exception's text may quote frame content (PID fields)
            self._bad("parser_error", type(e).__name__)

    def feed(self, data: bytes) -> list[Reading]:
        """Readings completed by `data` (any bytes, any chunking)."""
        out: list[Reading] = []
        n, pos = len(data), 0
        while pos < n:
            if self._await_cr:
                self._await_cr = False
                if data[pos] == CR:
                    pos += 1
                    self._complete(out)
                else:  # 0x1C not followed by CR: not a frame end we trust
                    self._bad("bad_end", "0x1C without 0x0D")
                    self._buf.clear()
                    self._in_frame = False
                continue
            if not self._in_frame:
                i = data.find(SB, pos)
                if i < 0:
                    self.stats.noise_bytes += n - pos
                    return out
                self.stats.noise_bytes += i - pos
                self._in_frame, pos = True, i + 1
                self._buf.clear()
                continue
            e = data.find(EB, pos)
            s = data.find(SB, pos)
            if s >= 0 and (e < 0 or s < e):  # a new frame began before this one ended
                self._bad("truncated", f"{len(self._buf) + s - pos} bytes, no end block")
                self._buf.clear()
                pos = s + 1
                continue
            stop = n if e < 0 else e
            if len(self._buf) + stop - pos > self.max_frame:
                self._bad("oversized", f"> {self.max_frame} bytes")
                self._buf.clear()
                self._in_frame = False
                pos = stop
                continue
            self._buf += data[pos:stop]
            if e < 0:
                return out
            self._await_cr, pos = True, e + 1
        return out
