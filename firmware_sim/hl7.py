"""HL7 v2.6 ORU^R01 messages and MLLP frames: what the simulated monitor puts on the wire.

Pure functions (no I/O). The gateway (`edge_agent/`) decodes exactly this layout.

Wire layout
-----------
One message per reading cycle. Segments are *separated* by CR (0x0D): there is no CR
after the last segment. Encoding characters ``^~\\&``. Only printable ASCII is sent.
Each message is framed with MLLP::

    0x0B <message> 0x1C 0x0D

Segments (``{...}`` are filled in; every other field is empty)::

    MSH|^~\\&|VIGILSIM|{monitor_id}|VIGIL|GATEWAY|{obs_time}||ORU^R01^ORU_R01|{control_id}|P|2.6
    PID|1||{stay_id}^^^VIGIL^PI||||{birth_date}|{sex}
    PV1|1|I|ICU^^{bed}|| ... |{icu_admit_time}        (admit time is field PV1-44)
    OBR|1|||VITALS^Vital signs^L|||{obs_time}
    OBX|1|NM|8867-4^Heart rate^LN||{value}|/min^/min^UCUM|||||R|||{obs_time}
    OBX|2|NM|59408-5^SpO2^LN||{value}|%^%^UCUM|||||R|||{obs_time}
    ... one OBX per vital of contracts.vitals.VITALS, in catalogue order:
        HR 8867-4 /min, O2Sat 59408-5 %, Temp 8310-5 Cel, SBP 8480-6 mm[Hg],
        MAP 8478-0 mm[Hg], DBP 8462-4 mm[Hg], Resp 9279-1 /min
    ZAD|{hospital_admit_time}

Fields:

- Times (MSH-7, OBR-7, OBX-14, PV1-44, ZAD-1): ``YYYYMMDDHHMMSS.fff+0000``, UTC,
  milliseconds (truncated). ``obs_time`` is the *simulated* clock: a replay at
  ``--speed 3600`` advances obs_time an hour per wall second; bucket by obs_time.
- MSH-4 monitor id; MSH-10 control id ``{monitor_id}-{seq}``: seq is the decimal after
  the *last* ``-``, 1 for the first message, +1 per reading cycle (also for cycles
  that were lost on the line, so a gap in seq is a lost message). A monitor reboot
  restarts seq at 1 after a pause of the line.
- PID-3.1 pseudonymous stay id (e.g. ``pn-p000123``); PID-5 (name) is always empty:
  no names or record numbers. PID-7 birth date ``YYYYMMDD``: age in whole years at
  obs_time = Age (the simulator puts the birthday on the day before ICU admission, so
  the age does not change during a stay). PID-8 sex ``M`` / ``F`` / ``U``
  (Gender 1 / 0 / unknown). Unknown age: PID-7 empty.
- PV1-3 ``ICU^^{bed}`` (bed is PV1-3.3). PV1-44 ICU admission time:
  ICULOS hours = (obs_time - PV1-44) / 3600. (HL7 v2 defines PV1-44 as Admit
  Date/Time: the PV1 segment has 44 ``|``, so ``segment.split("|")[44]`` is the admit
  time.)
- ZAD-1 hospital admission time: HospAdmTime hours = (ZAD-1 - PV1-44) / 3600 (<= 0).
  Unknown: ZAD-1 empty.
- OBX-5 value: decimal, at most 1 fraction digit (Temp: 2), no exponent, trailing
  zeros dropped (``72``, ``36.85``, ``-3.5``). OBX-11 ``R`` for a reading.
  A sensor that is off or not connected: OBX-5 empty and OBX-11 ``X``; the OBX is
  still sent, so every message has one OBX per vital. Artefacts are implausible
  values (outside the catalogue range) with OBX-11 ``R``.

Identifiers (monitor id, stay id, bed) must be 1-64 printable ASCII characters
without the HL7 delimiters ``|^~\\&``: the builder refuses anything else instead of
escaping it, so a decoder never needs HL7 escape sequences.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from contracts.mllp import CR, EB, SB
from contracts.mllp import frame as frame  # this module's API: build_oru, then frame
from contracts.timeutil import hl7_ts
from contracts.vitals import BY_LOINC, VITALS

SEGMENT_SEP = "\r"
SENDING_APP = "VIGILSIM"
MAX_ABS_VALUE = 1e6  # a monitor display has a bounded number of digits

# Digits after the decimal point per vital: temperature to 0.01 °C, the rest to 0.1.
DECIMALS: dict[str, int] = {v.name: (2 if v.name == "Temp" else 1) for v in VITALS}

_ID_RE = re.compile(r"^[\x20-\x7e]{1,64}$")
_DELIMS = set("|^~\\&")


@dataclass(frozen=True)
class Observation:
    """One reading cycle of one monitor: everything one ORU^R01 message carries."""

    monitor_id: str
    seq: int
    bed: str
    stay_id: str
    obs_time: datetime
    values: Mapping[str, float | None]  # by vital name; None/NaN/absent = sensor off
    birth_date: date | None = None
    sex: str = "U"
    icu_admit: datetime | None = None
    hospital_admit: datetime | None = None

    @property
    def control_id(self) -> str:
        return f"{self.monitor_id}-{self.seq}"


@dataclass
class DecodedMessage:
    """What `parse_oru` reads back from a message (the simulator's own decoder)."""

    monitor_id: str
    seq: int
    bed: str
    stay_id: str
    obs_time: datetime
    birth_date: date | None
    sex: str
    icu_admit: datetime | None
    hospital_admit: datetime | None
    values: dict[str, float | None] = field(default_factory=dict)


def check_id(kind: str, value: str) -> str:
    """`value` if it is a valid identifier for the wire, else ValueError naming `kind`."""
    if not isinstance(value, str) or not _ID_RE.match(value) or _DELIMS & set(value):
        raise ValueError(
            f"{kind} {value!r} is not a valid identifier: use 1-64 printable ASCII "
            "characters without any of | ^ ~ \\ &"
        )
    return value


def format_ts(ts: datetime) -> str:
    """`YYYYMMDDHHMMSS.fff+0000` in UTC (naive datetimes are refused: ambiguous)."""
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts!r} has no time zone; the wire is UTC")
    return hl7_ts(ts)


def parse_ts(text: str) -> datetime:
    """Inverse of `format_ts` (also accepts the form without milliseconds)."""
    m = re.fullmatch(r"(\d{14})(?:\.(\d{1,3}))?\+0000", text)
    if not m:
        raise ValueError(f"bad HL7 timestamp {text!r}: expected YYYYMMDDHHMMSS.fff+0000")
    base = datetime.strptime(m.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    ms = int((m.group(2) or "0").ljust(3, "0"))
    return base + timedelta(milliseconds=ms)


def format_value(name: str, value: float | None) -> str:
    """OBX-5 text for vital `name`; empty for a sensor that is off (None or NaN)."""
    if value is None:
        return ""
    x = float(value)
    if math.isnan(x):
        return ""
    if not math.isfinite(x) or abs(x) >= MAX_ABS_VALUE:
        raise ValueError(f"{name} value {value!r} cannot be displayed by a monitor")
    text = f"{x:.{DECIMALS[name]}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _obx(i: int, vital_name: str, value: float | None, ts: str) -> str:
    v = next(v for v in VITALS if v.name == vital_name)
    text = format_value(v.name, value)
    status = "R" if text else "X"
    unit = f"{v.unit}^{v.unit}^UCUM"
    return f"OBX|{i}|NM|{v.loinc}^{v.label}^LN||{text}|{unit}|||||{status}|||{ts}"


def build_oru(obs: Observation) -> str:
    """The ORU^R01 message (segments separated by CR, no trailing CR) for `obs`."""
    check_id("monitor id", obs.monitor_id)
    check_id("stay id", obs.stay_id)
    check_id("bed", obs.bed)
    if obs.seq < 1:
        raise ValueError(f"seq must be >= 1, got {obs.seq}")
    if obs.sex not in ("M", "F", "U"):
        raise ValueError(f"sex must be M, F or U, got {obs.sex!r}")
    unknown = set(obs.values) - {v.name for v in VITALS}
    if unknown:
        raise ValueError(f"unknown vital(s) {sorted(unknown)}; known: {[v.name for v in VITALS]}")
    ts = format_ts(obs.obs_time)
    birth = obs.birth_date.strftime("%Y%m%d") if obs.birth_date else ""
    admit = format_ts(obs.icu_admit) if obs.icu_admit else ""
    hosp = format_ts(obs.hospital_admit) if obs.hospital_admit else ""
    pv1 = ["PV1", "1", "I", f"ICU^^{obs.bed}"] + [""] * 40 + [admit]  # admit is PV1-44
    segments = [
        f"MSH|^~\\&|{SENDING_APP}|{obs.monitor_id}|VIGIL|GATEWAY|{ts}||ORU^R01^ORU_R01"
        f"|{obs.control_id}|P|2.6",
        f"PID|1||{obs.stay_id}^^^VIGIL^PI||||{birth}|{obs.sex}",
        "|".join(pv1),
        f"OBR|1|||VITALS^Vital signs^L|||{ts}",
    ]
    segments += [_obx(i, v.name, obs.values.get(v.name), ts) for i, v in enumerate(VITALS, 1)]
    segments.append(f"ZAD|{hosp}")
    return SEGMENT_SEP.join(segments)


def birth_date_for(age_years: float | None, icu_admit: datetime) -> date | None:
    """A birth date giving whole-year age floor(`age_years`) all through the stay.

    The birthday is put on the day before ICU admission, so the age in whole years
    stays the same for any stay shorter than a year.
    """
    if age_years is None or not math.isfinite(age_years) or age_years < 0:
        return None
    years = int(math.floor(age_years))
    d = (icu_admit.astimezone(UTC) - timedelta(days=1)).date()
    try:
        return d.replace(year=d.year - years)
    except ValueError:  # 29 February in a non-leap year
        return d.replace(year=d.year - years, day=28)


def age_at(birth: date, when: datetime) -> int:
    """Whole years between `birth` and `when` (how the gateway reads PID-7)."""
    d = when.astimezone(UTC).date()
    return d.year - birth.year - ((d.month, d.day) < (birth.month, birth.day))


# --- the simulator's own decoder (used by `vigil sim watch`; the tests also check
# every message with the third-party `hl7` package) -------------------------------


class MllpDecoder:
    """Split a byte stream into MLLP frames, counting what is not a whole frame.

    Bytes outside a frame are counted in `noise_bytes`; a start block inside a frame
    (the previous frame never ended) counts a `truncated` frame and starts a new one.
    """

    def __init__(self, max_frame: int = 1 << 20) -> None:
        self._buf = bytearray()
        self._in_frame = False
        self.max_frame = max_frame
        self.noise_bytes = 0
        self.truncated = 0
        self.frames = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Frames (without MLLP bytes) completed by `data`."""
        out: list[bytes] = []
        for b in data:
            if not self._in_frame:
                if b == SB:
                    self._in_frame = True
                    self._buf.clear()
                else:
                    self.noise_bytes += 1
                continue
            if b == SB:
                self.truncated += 1
                self._buf.clear()
                continue
            self._buf.append(b)
            if len(self._buf) >= 2 and self._buf[-2] == EB and self._buf[-1] == CR:
                out.append(bytes(self._buf[:-2]))
                self._buf.clear()
                self._in_frame = False
                self.frames += 1
            elif len(self._buf) > self.max_frame:
                self.truncated += 1
                self._buf.clear()
                self._in_frame = False
        return out


def _field(fields: list[str], i: int) -> str:
    return fields[i] if i < len(fields) else ""


def parse_oru(message: bytes | str) -> DecodedMessage:
    """Decode a message of the layout above; ValueError naming what is wrong."""
    text = message.decode("ascii") if isinstance(message, bytes) else message
    segs: dict[str, list[list[str]]] = {}
    for line in text.split(SEGMENT_SEP):
        if line:
            parts = line.split("|")
            segs.setdefault(parts[0], []).append(parts)
    msh = segs.get("MSH", [None])[0]
    if msh is None or _field(msh, 1) != "^~\\&":
        raise ValueError("not an HL7 message: no MSH segment with encoding characters ^~\\&")
    # In MSH the field separator itself is MSH-1, so split index i is MSH-(i+1).
    control = _field(msh, 9)
    monitor_id, _, seq_text = control.rpartition("-")
    if not monitor_id or not seq_text.isdigit():
        raise ValueError(f"bad control id {control!r}: expected monitor-seq")
    pid = segs.get("PID", [[]])[0]
    pv1 = segs.get("PV1", [[]])[0]
    zad = segs.get("ZAD", [[]])[0]
    loc = _field(pv1, 3).split("^")
    birth = _field(pid, 7)
    values: dict[str, float | None] = {}
    for obx in segs.get("OBX", []):
        code = _field(obx, 3).split("^")[0]
        vital = BY_LOINC.get(code)
        if vital is None:
            continue
        raw = _field(obx, 5)
        values[vital.name] = float(raw) if raw and _field(obx, 11) != "X" else None
    return DecodedMessage(
        monitor_id=monitor_id,
        seq=int(seq_text),
        bed=loc[2] if len(loc) > 2 else "",
        stay_id=_field(pid, 3).split("^")[0],
        obs_time=parse_ts(_field(msh, 6)),
        birth_date=datetime.strptime(birth, "%Y%m%d").date() if birth else None,
        sex=_field(pid, 8) or "U",
        icu_admit=parse_ts(_field(pv1, 44)) if _field(pv1, 44) else None,
        hospital_admit=parse_ts(_field(zad, 1)) if _field(zad, 1) else None,
        values=values,
    )
