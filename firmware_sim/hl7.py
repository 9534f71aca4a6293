"""HL7 v2 ORU^R01 messages as bedside monitors send them (IHE PCD-01), and MLLP frames.

Pure functions (no I/O). The simulated monitor speaks a *profile*: the standard IHE
PCD-01 layout below, or a dialect modelled on public vendor facts
(`/work/pcd_samples/VENDOR_FACTS.md` as copied into the repository's test samples;
each profile's docstring names the fact it follows). `build_oru(obs, profile)` gives
the message text, `encode_oru(obs, profile)` its bytes in the profile's character set,
`frame` (from `contracts.mllp`) the MLLP frame ``0x0B <message> 0x1C 0x0D``.

Standard profile (``standard``, IHE PCD-01 ORU^R01, HL7 v2.6)
-------------------------------------------------------------
Segments are *separated* by CR (no CR after the last one); ``{...}`` is filled in::

    MSH|^~\\&|VIGILSIM^{eui64}^EUI-64|{monitor_id}|VIGIL|GATEWAY|{ts}||ORU^R01^ORU_R01
        |{monitor_id}-{seq}|P|2.6|||AL|NE|||||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO
    PID|1||{stay_id}^^^VIGIL^PI||SIM^{bed}||{birth_date}|{sex}
    PV1|1|I|ICU^^{bed}| ... |{icu_admit}                   (PV1-44, ICU admission)
    OBR|1|{control}^VIGILSIM^{eui64}^EUI-64|{control}^VIGILSIM^{eui64}^EUI-64
        |182777000^monitoring of patient^SCT|||{ts}
    OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||{ts}||||{eui64}^EUI-64
    OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{HR}|/min^/min^UCUM|||||R|||{ts}||||{eui64}^EUI-64
    OBX|3|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|{O2Sat}|%^%^UCUM|...
    OBX|4|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.3.1.1|{SBP}|mm[Hg]^mm[Hg]^UCUM|...
    OBX|5|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.3.1.2|{DBP}|mm[Hg]^mm[Hg]^UCUM|...
    OBX|6|NM|150023^MDC_PRESS_BLD_NONINV_MEAN^MDC|1.3.1.3|{MAP}|mm[Hg]^mm[Hg]^UCUM|...
    OBX|7|NM|150344^MDC_TEMP^MDC|1.4.1.1|{Temp}|Cel^Cel^UCUM|...
    OBX|8|NM|151562^MDC_RESP_RATE^MDC|1.5.1.1|{Resp}|/min^/min^UCUM|...

- The first OBX is the device (MDS) row of the PCD-01 containment tree: no value,
  OBX-11 ``X``; the metric rows follow with OBX-4 ``MDS.VMD.CHAN.METRIC`` sub-ids.
- Times (MSH-7, OBR-7, OBX-14, PV1-44): ``YYYYMMDDHHMMSS.fff+0000``, UTC.
  OBR-7 and OBX-14 carry ``obs_time``, the *simulated* clock (a replay at
  ``--speed 3600`` advances it an hour per wall second); MSH-7 is the monitor's own
  clock when it sends (``Observation.sent_at``: the wall clock), as on a real monitor,
  so a gateway's clock-skew check holds even for an accelerated replay.
- MSH-4 is the monitor id; MSH-10 (control id) ``{monitor_id}-{seq}``: seq is the
  decimal after the last ``-``, 1 for the first message, +1 per reading cycle (also for
  cycles lost on the line, so a gap is a lost message); a reboot restarts it at 1. The
  gateway's ACK names this control id (MSA-2).
- ``eui64``: the monitor's device id, 16 hex digits: the profile's OUI-like prefix
  and a hash of the monitor id (`device_id`). MSH-3.2 and OBX-18 carry it.
- PID-3.1 pseudonymous stay id (e.g. ``pn-p000123``); PID-5 ``SIM^{bed}``, a filled
  pseudonymous name (HL7 v2.5+ requires PID-5; never a real name); PID-7 birth date
  ``YYYYMMDD`` (the day before ICU admission, whole-year age; empty when unknown);
  PID-8 ``M``/``F``/``U``.
- PV1-3 ``ICU^^{bed}`` (the bed is PV1-3.3); PV1-44 ICU admission time.
- Hospital admission is *not sent*: a monitor does not know it and PCD-01 has no field
  for it (no private ``Z`` segment; standard engines drop those).
- OBX-5: a decimal, at most 1 fraction digit (Temp: 2), no exponent (``72``,
  ``36.85``). A sensor that is off: OBX-5 empty and OBX-11 ``X``. Artefacts are
  implausible values with OBX-11 ``R``.

Identifiers (monitor id, stay id, bed) must be 1-64 printable ASCII characters without
the HL7 delimiters ``|^~\\&``: the builder refuses anything else instead of escaping it.

Dialect profiles
----------------
``ge`` / ``ge-degf``, ``mindray``, ``philips``: see `GeProfile`, `MindrayProfile`,
`PhilipsProfile`. (Before PCD-01 the simulator wrote LOINC codes and a private ``ZAD``
segment with the hospital admission; both are gone.)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from contracts.mdc import BY_CODE, parse_code
from contracts.mllp import MllpFramer
from contracts.mllp import frame as frame  # this module's API: build_oru, then frame
from contracts.timeutil import hl7_ts
from contracts.units import UnitError, to_catalogue
from contracts.vitals import BY_LOINC, VITAL_NAMES, VITALS

SEGMENT_SEP = "\r"
SENDING_APP = "VIGILSIM"
MAX_ABS_VALUE = 1e6  # a monitor display has a bounded number of digits
PCD01_PROFILE_ID = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
OBR_MONITORING = "182777000^monitoring of patient^SCT"
MDS_ROW = "69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC"

# Digits after the decimal point per vital: temperature to 0.01 °C, the rest to 0.1.
DECIMALS: dict[str, int] = {v.name: (2 if v.name == "Temp" else 1) for v in VITALS}

# Values a monitor sends for "no value" (read back as absent by `parse_oru`).
SENTINELS = frozenset({"-100", "32767", "-999", "-99.9", "8388607"})

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
    hospital_admit: datetime | None = None  # known to the simulator, never sent
    nbp_time: datetime | None = None  # when the cuff measured (profiles with aperiodic NBP)
    # The monitor's own clock when it sends (MSH-7); the observation time goes in OBR-7
    # and OBX-14. A replay at --speed N runs its observation times ahead of this clock,
    # as a real monitor's MSH-7 is its wall clock. None: the observation time.
    sent_at: datetime | None = None

    @property
    def msh_time(self) -> datetime:
        return self.sent_at or self.obs_time

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
    values: dict[str, float | None] = field(default_factory=dict)  # catalogue units
    version: str = ""


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


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts!r} has no time zone; the wire is UTC")
    return ts.astimezone(UTC)


def _ts_seconds(ts: datetime, offset: bool = True) -> str:
    """`YYYYMMDDHHMMSS+0000` (or without the offset: a monitor's local clock set to UTC)."""
    return _utc(ts).strftime("%Y%m%d%H%M%S") + ("+0000" if offset else "")


_TS_RE = re.compile(r"^(\d{14})(?:\.(\d{1,6})|(\d{3}))?([+-]\d{4})?$")


def parse_ts(text: str) -> datetime:
    """An HL7 time of any profile -> UTC datetime.

    `YYYYMMDDHHMMSS[.f...][+-ZZZZ]`, also the Mindray form with milliseconds and no
    dot (`YYYYMMDDHHMMSSfff+0800`); without an offset the time is UTC (the simulated
    monitors' clocks are set to UTC).
    """
    m = _TS_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad HL7 timestamp {text!r}: expected YYYYMMDDHHMMSS[.fff][+ZZZZ]")
    base = datetime.strptime(m.group(1), "%Y%m%d%H%M%S")
    frac = m.group(2) or m.group(3) or ""
    us = int(frac.ljust(6, "0")) if frac else 0
    t = base + timedelta(microseconds=us)
    if m.group(4):
        sign = -1 if m.group(4)[0] == "-" else 1
        t -= sign * timedelta(hours=int(m.group(4)[1:3]), minutes=int(m.group(4)[3:]))
    return t.replace(tzinfo=UTC)


def format_value(name: str, value: float | None, decimals: int | None = None) -> str:
    """OBX-5 text for vital `name`; empty for a sensor that is off (None or NaN)."""
    if value is None:
        return ""
    x = float(value)
    if math.isnan(x):
        return ""
    if not math.isfinite(x) or abs(x) >= MAX_ABS_VALUE:
        raise ValueError(f"{name} value {value!r} cannot be displayed by a monitor")
    text = f"{x:.{DECIMALS[name] if decimals is None else decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _seg(name: str, fields: Mapping[int, str]) -> str:
    """A segment with field n = fields[n] (MSH: MSH-1 is the separator itself)."""
    off = 1 if name == "MSH" else 0
    parts = [name] + [""] * (max(fields) - off)
    for k, v in fields.items():
        parts[k - off] = v
    return "|".join(parts)


def _mdc(code: int) -> str:
    """`147842^MDC_ECG_HEART_RATE^MDC` for an MDC code of `contracts.mdc`."""
    return f"{code}^{BY_CODE[code].ref}^MDC"


@dataclass(frozen=True)
class Metric:
    """One metric OBX a profile sends for a vital."""

    vital: str
    code: str  # OBX-3
    sub_id: str  # OBX-4
    unit: str  # OBX-6


def _checked(obs: Observation) -> None:
    check_id("monitor id", obs.monitor_id)
    check_id("stay id", obs.stay_id)
    check_id("bed", obs.bed)
    if obs.seq < 1:
        raise ValueError(f"seq must be >= 1, got {obs.seq}")
    if obs.sex not in ("M", "F", "U"):
        raise ValueError(f"sex must be M, F or U, got {obs.sex!r}")
    unknown = set(obs.values) - set(VITAL_NAMES)
    if unknown:
        raise ValueError(f"unknown vital(s) {sorted(unknown)}; known: {list(VITAL_NAMES)}")
    _utc(obs.obs_time)


def _birth(obs: Observation) -> str:
    return obs.birth_date.strftime("%Y%m%d") if obs.birth_date else ""


class Profile:
    """A way of writing ORU^R01: the standard IHE PCD-01 layout (this class).

    Subclasses change codes, units, times, status values and sensor-off handling.
    """

    name = "standard"
    version = "2.6"
    encoding = "ascii"  # how the message text becomes bytes (MSH-18)
    oui = "025649"  # a locally administered prefix ("VI"): not a vendor's IEEE OUI
    nbp_interval_s: float | None = None  # aperiodic cuff: values held this long
    sensor_off = "X"  # "X": empty OBX-5 with OBX-11 X; "omit": no OBX; "sentinel"
    metrics: tuple[Metric, ...] = (
        Metric("HR", _mdc(147842), "1.1.1.1", "/min^/min^UCUM"),
        Metric("O2Sat", _mdc(150456), "1.2.1.1", "%^%^UCUM"),
        Metric("SBP", _mdc(150021), "1.3.1.1", "mm[Hg]^mm[Hg]^UCUM"),
        Metric("DBP", _mdc(150022), "1.3.1.2", "mm[Hg]^mm[Hg]^UCUM"),
        Metric("MAP", _mdc(150023), "1.3.1.3", "mm[Hg]^mm[Hg]^UCUM"),
        Metric("Temp", _mdc(150344), "1.4.1.1", "Cel^Cel^UCUM"),
        Metric("Resp", _mdc(151562), "1.5.1.1", "/min^/min^UCUM"),
    )

    def device_id(self, monitor_id: str) -> str:
        """The monitor's EUI-64: 16 upper-case hex digits, the profile's prefix first."""
        h = hashlib.sha256(monitor_id.encode()).hexdigest().upper()
        return (self.oui + h)[:16]

    def encode(self, text: str) -> bytes:
        return text.encode(self.encoding)

    def value_text(self, metric: Metric, value: float | None) -> str:
        return format_value(metric.vital, value)

    # --- the standard layout; subclasses override pieces ---------------------------
    def msh(self, obs: Observation, eui: str) -> str:
        return _seg(
            "MSH",
            {
                2: "^~\\&",
                3: f"{SENDING_APP}^{eui}^EUI-64",
                4: obs.monitor_id,
                5: "VIGIL",
                6: "GATEWAY",
                7: format_ts(obs.msh_time),
                9: "ORU^R01^ORU_R01",
                10: obs.control_id,
                11: "P",
                12: self.version,
                15: "AL",
                16: "NE",
                21: PCD01_PROFILE_ID,
            },
        )

    def pid(self, obs: Observation) -> str:
        return _seg(
            "PID",
            {
                1: "1",
                3: f"{obs.stay_id}^^^VIGIL^PI",
                5: f"SIM^{obs.bed}",
                7: _birth(obs),
                8: obs.sex,
            },
        )

    def pv1(self, obs: Observation) -> str:
        admit = format_ts(obs.icu_admit) if obs.icu_admit else ""
        return _seg("PV1", {1: "1", 2: "I", 3: f"ICU^^{obs.bed}", 44: admit})

    def obr(self, obs: Observation, eui: str) -> str:
        order = f"{obs.control_id}^{SENDING_APP}^{eui}^EUI-64"
        return _seg(
            "OBR", {1: "1", 2: order, 3: order, 4: OBR_MONITORING, 7: format_ts(obs.obs_time)}
        )

    def header_rows(self, obs: Observation, eui: str) -> list[dict[int, str]]:
        """Containment-tree rows before the metrics (OBX fields without OBX-1)."""
        ts = format_ts(obs.obs_time)
        return [{3: MDS_ROW, 4: "1.0.0.0", 11: "X", 14: ts, 18: f"{eui}^EUI-64"}]

    def metric_row(
        self, obs: Observation, metric: Metric, value: float | None, eui: str
    ) -> dict[int, str] | None:
        text = self.value_text(metric, value)
        status = "R"
        if not text:
            if self.sensor_off == "omit":
                return None
            status = "X"
        ts = format_ts(obs.obs_time)
        return {
            2: "NM",
            3: metric.code,
            4: metric.sub_id,
            5: text,
            6: metric.unit,
            11: status,
            14: ts,
            18: f"{eui}^EUI-64",
        }

    def obx(self, i: int, row: Mapping[int, str]) -> str:
        return _seg("OBX", {1: str(i), **row})

    def build(self, obs: Observation) -> str:
        """The message (segments separated by CR, no trailing CR) for `obs`."""
        _checked(obs)
        eui = self.device_id(obs.monitor_id)
        rows = self.header_rows(obs, eui)
        for m in self.metrics:
            row = self.metric_row(obs, m, obs.values.get(m.vital), eui)
            if row is not None:
                rows.append(row)
        rows += self.trailer_rows(obs, eui)
        segments = [self.msh(obs, eui), self.pid(obs), self.pv1(obs), self.obr(obs, eui)]
        segments += [self.obx(i, r) for i, r in enumerate(rows, 1)]
        return SEGMENT_SEP.join(segments)

    def trailer_rows(self, obs: Observation, eui: str) -> list[dict[int, str]]:
        return []


class GeProfile(Profile):
    """GE-style (a Carescape/B40-like monitor behind a Unity/Aware gateway).

    Follows: the GE B40/B20 HL7 Reference Manual (2062665-001 G, p=17, 21, 24, 25, 30):
    MSH-3 ``VSP^<EUI-64>^EUI-64``, MSH-4 ``GE Healthcare``, MSH-15/16 ``NE|AL``,
    MSH-18 ``UNICODE UTF-8``, MSH-21 ``PCD_DEC_001^IHE PCD^...``, OBR-2/3
    ``<EUI64><yyyyMMddHHmmss>^VSP^<EUI64>^EUI-64``, timestamps without a time zone,
    the MDS row ``1.0.0.0`` and an explicit blood-pressure channel row (``69855``,
    ``1.13.1.0``, empty OBX-2, OBX-11 ``X``), arterial pressure ``150033/4/5``,
    SpO2 at ``1.22.1.2``, temperature at ``1.26.1.1``, respiration rate ``151562``
    twice (airway VMD ``1.20.1.1`` and ECG-impedance VMD ``1.6.1.1``), metric rows with
    OBX-11 ``R`` and OBX-18 ``<EUI-64>^B40_GE``, no OBX for a parameter without a valid
    measurement. Units are UCUM as in the IPF "AwareGateway" fixture with GE's OUI
    (``/min``, ``mm[Hg]``; sample 01). The GE prefix ``080019`` is GE's IEEE OUI.
    ``ge-degf`` sends temperature in ``[degF]`` (a US site setting).
    Times are the monitor's local clock, set to UTC here: a gateway reading this
    profile must use time zone UTC for it.
    """

    name = "ge"
    oui = "080019"
    sensor_off = "omit"
    fahrenheit = False
    metrics = (
        Metric("HR", _mdc(147842), "1.1.1.1", "/min^/min^UCUM"),
        Metric("SBP", _mdc(150033), "1.13.1.1", "mm[Hg]^mm[Hg]^UCUM"),
        Metric("DBP", _mdc(150034), "1.13.1.2", "mm[Hg]^mm[Hg]^UCUM"),
        Metric("MAP", _mdc(150035), "1.13.1.3", "mm[Hg]^mm[Hg]^UCUM"),
        Metric("O2Sat", _mdc(150456), "1.22.1.2", "%^%^UCUM"),
        Metric("Temp", _mdc(150344), "1.26.1.1", "Cel^Cel^UCUM"),
        Metric("Resp", _mdc(151562), "1.20.1.1", "/min^/min^UCUM"),
        Metric("Resp", _mdc(151562), "1.6.1.1", "/min^/min^UCUM"),
    )

    def value_text(self, metric: Metric, value: float | None) -> str:
        if self.fahrenheit and metric.vital == "Temp" and value is not None:
            if math.isnan(float(value)):
                return ""
            return format_value("Temp", float(value) * 9.0 / 5.0 + 32.0, 1)
        return format_value(metric.vital, value)

    def msh(self, obs: Observation, eui: str) -> str:
        return _seg(
            "MSH",
            {
                2: "^~\\&",
                3: f"VSP^{eui}^EUI-64",
                4: "GE Healthcare",
                7: _ts_seconds(obs.msh_time, offset=False),
                9: "ORU^R01^ORU_R01",
                10: obs.control_id,
                11: "P",
                12: "2.6",
                15: "NE",
                16: "AL",
                18: "UNICODE UTF-8",
                21: "PCD_DEC_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
            },
        )

    def pv1(self, obs: Observation) -> str:
        admit = _ts_seconds(obs.icu_admit, offset=False) if obs.icu_admit else ""
        return _seg("PV1", {1: "1", 2: "I", 3: f"ICU^^{obs.bed}", 44: admit})

    def obr(self, obs: Observation, eui: str) -> str:
        ts = _ts_seconds(obs.obs_time, offset=False)
        order = f"{eui}{ts}^VSP^{eui}^EUI-64"
        return _seg("OBR", {1: "1", 2: order, 3: order, 4: OBR_MONITORING, 7: ts})

    def header_rows(self, obs: Observation, eui: str) -> list[dict[int, str]]:
        rows = [{3: MDS_ROW, 4: "1.0.0.0", 11: "X"}]
        if any(obs.values.get(v) is not None for v in ("SBP", "DBP", "MAP")):
            rows.append({3: "69855^MDC_DEV_METER_PRESS_BLD_CHAN^MDC", 4: "1.13.1.0", 11: "X"})
        return rows

    def metric_row(
        self, obs: Observation, metric: Metric, value: float | None, eui: str
    ) -> dict[int, str] | None:
        row = super().metric_row(obs, metric, value, eui)
        if row is None:
            return None
        row[14] = _ts_seconds(obs.obs_time, offset=False)
        row[18] = f"{eui}^B40_GE"
        if self.fahrenheit and metric.vital == "Temp":
            row[6] = "[degF]^[degF]^UCUM"
        return row


class GeFahrenheitProfile(GeProfile):
    __doc__ = GeProfile.__doc__
    name = "ge-degf"
    fahrenheit = True


MDC_BPM = "264864^MDC_DIM_BEAT_PER_MIN^MDC"
MDC_RPM = "264928^MDC_DIM_RESP_PER_MIN^MDC"
MDC_PCT = "262688^MDC_DIM_PERCENT^MDC"
MDC_MMHG = "266016^MDC_DIM_MMHG^MDC"
MDC_DEGC = "268192^MDC_DIM_DEGC^MDC"


class MindrayProfile(Profile):
    """Mindray-style (a BeneVision/ePM-like monitor or its eGateway).

    Follows the real Mindray messages in the samples (files 12-14, observed): MSH-3
    ``MINDRAY_<model>^<EUI-64>^EUI-64`` with the Mindray OUI ``00A037``, MSH-4
    ``MINDRAY``, MSH-7 ``yyyyMMddHHmmssSSS+zzzz`` (milliseconds without a dot), OBR-7 and
    OBX-14 ``yyyyMMddHHmmss+zzzz``, MSH-15/16 ``AL|NE``, MSH-18 ``UNICODE UTF-8``,
    MSH-21 ``IHE_PCD_001``, OBX-4 sub-ids that embed the MDC code (``1.7.4.147842``,
    ``1.3.1.150452``), OBX-18 ``<EUI>^^<EUI>^EUI-64``, units as MDC dimension codes,
    and the private coding system ``99MNDRY`` (here on a non-vital row: the code
    itself is a placeholder, only the system is observed). NIBP is coded
    ``MDC_PRESS_CUFF_SYS/DIA/MEAN`` and respiration ``MDC_TTHOR_RESP_RATE`` (thoracic
    impedance, the ECG module's rate). A sensor that is off is sent as the value
    ``-100`` with OBX-11 ``R`` (unverified public code comment:
    ``1.7.4.147842|-100|^MDC_DIM_BEAT_PER_MIN``); ``32767`` is Mindray's invalid
    sample in waveforms (sample 14).
    """

    name = "mindray"
    oui = "00A037"
    sensor_off = "sentinel"
    sentinel = "-100"
    metrics = (
        Metric("HR", _mdc(147842), "1.7.4.147842", MDC_BPM),
        Metric("O2Sat", _mdc(150456), "1.3.1.150456", MDC_PCT),
        Metric("SBP", _mdc(150301), "1.9.1.150301", MDC_MMHG),
        Metric("DBP", _mdc(150302), "1.9.1.150302", MDC_MMHG),
        Metric("MAP", _mdc(150303), "1.9.1.150303", MDC_MMHG),
        Metric("Temp", _mdc(150344), "1.11.1.150344", MDC_DEGC),
        Metric("Resp", _mdc(151578), "1.7.5.151578", MDC_RPM),
    )

    def value_text(self, metric: Metric, value: float | None) -> str:
        return format_value(metric.vital, value) or self.sentinel

    def msh(self, obs: Observation, eui: str) -> str:
        u = _utc(obs.msh_time)
        ts = u.strftime("%Y%m%d%H%M%S") + f"{u.microsecond // 1000:03d}+0000"
        return _seg(
            "MSH",
            {
                2: "^~\\&",
                3: f"MINDRAY_{SENDING_APP}^{eui}^EUI-64",
                4: "MINDRAY",
                7: ts,
                9: "ORU^R01^ORU_R01",
                10: obs.control_id,
                11: "P",
                12: "2.6",
                15: "AL",
                16: "NE",
                18: "UNICODE UTF-8",
                21: PCD01_PROFILE_ID,
            },
        )

    def obr(self, obs: Observation, eui: str) -> str:
        order = f"{obs.control_id}^MINDRAY_{SENDING_APP}^{eui}^EUI-64"
        return _seg("OBR", {1: "1", 3: order, 4: OBR_MONITORING, 7: _ts_seconds(obs.obs_time)})

    def header_rows(self, obs: Observation, eui: str) -> list[dict[int, str]]:
        return []

    def metric_row(
        self, obs: Observation, metric: Metric, value: float | None, eui: str
    ) -> dict[int, str] | None:
        row = super().metric_row(obs, metric, value, eui)
        assert row is not None  # a sentinel is always sent
        row[14] = _ts_seconds(obs.obs_time)
        row[18] = f"{eui}^^{eui}^EUI-64"
        return row

    def trailer_rows(self, obs: Observation, eui: str) -> list[dict[int, str]]:
        return [
            {
                2: "ST",
                3: "2001^MNDRY_PAT_TYPE^99MNDRY",
                4: "1.0.0.2001",
                5: "ADU",
                11: "R",
                14: _ts_seconds(obs.obs_time),
                18: f"{eui}^^{eui}^EUI-64",
            }
        ]


MDIL_BPM = "0004-0aa0^bpm^MDIL"
MDIL_RPM = "0004-0ae0^rpm^MDIL"
MDIL_PCT = "0004-0220^%^MDIL"
MDIL_MMHG = "0004-0f20^mmHg^MDIL"
MDIL_DEGC = "0004-17a0^°C^MDIL"


class PhilipsProfile(Profile):
    """Philips-style (an IntelliVue Information Center HL7 export, HL7 v2.3).

    Follows the PIIC capture (samples 07-10, observed): MSH-3 to MSH-8 empty, MSH-9
    ``ORU^R01`` (no structure id in v2.3), MSH-11 ``P``, MSH-12 ``2.3``, MSH-18
    ``8859/1`` (bytes in ISO 8859-1: the ``°C`` unit is one byte 0xB0); PID-3
    ``<id>^^^^MR``; PV1-3 ``<unit>^^<bed>&0&0`` and no admission time; OBR-7 the only
    message time, without a time zone (the central station's clock, UTC here); OBX-1
    empty, OBX-4 ``0``, OBX-11 ``F``; a ``0402-f8f5^sMode`` ``SETTING`` row; codes and
    units in MDIL hex (``0002-4182^HR^MDIL``, ``0004-0aa0^bpm^MDIL``, ``0002-4bb8^SpO2``,
    ``0002-4822^Pulse (SpO2)``, ``0002-500a^RR`` in ``0004-0ae0^rpm``); NBP
    ``0002-4a05/4a06/4a07^NBPs/NBPd/NBPm`` with OBX-13 ``APERIODIC`` and its own older
    OBX-14 (the cuff's measurement time; values held between measurements every
    `nbp_interval_s` simulated seconds), and the private ``0002-f0e5^Pulse (NBP)``;
    alarm limits in OBX-7 (``50-120``). A parameter that is not measured is not sent.
    Temperature (absent from the capture) is ``0002-4b48^Temp^MDIL``, the MDIL
    spelling of ``150344 MDC_TEMP``, in ``0004-17a0^°C^MDIL`` (``MDC_DIM_DEGC``).
    """

    name = "philips"
    version = "2.3"
    encoding = "latin-1"
    oui = "0009FB"
    sensor_off = "omit"
    nbp_interval_s = 900.0
    metrics = (
        Metric("O2Sat", "0002-4bb8^SpO2^MDIL", "0", MDIL_PCT),
        Metric("HR", "0002-4822^Pulse (SpO2)^MDIL", "0", MDIL_BPM),
        Metric("SBP", "0002-4a05^NBPs^MDIL", "0", MDIL_MMHG),
        Metric("DBP", "0002-4a06^NBPd^MDIL", "0", MDIL_MMHG),
        Metric("MAP", "0002-4a07^NBPm^MDIL", "0", MDIL_MMHG),
        Metric("HR", "0002-f0e5^Pulse (NBP)^MDIL", "0", MDIL_BPM),
        Metric("HR", "0002-4182^HR^MDIL", "0", MDIL_BPM),
        Metric("Resp", "0002-500a^RR^MDIL", "0", MDIL_RPM),
        Metric("Temp", "0002-4b48^Temp^MDIL", "0", MDIL_DEGC),
    )
    limits = {"0002-4182^HR^MDIL": "50-120", "0002-4a05^NBPs^MDIL": "90-160"}

    def msh(self, obs: Observation, eui: str) -> str:
        return _seg(
            "MSH",
            {2: "^~\\&", 9: "ORU^R01", 10: obs.control_id, 11: "P", 12: "2.3", 18: "8859/1"},
        )

    def pid(self, obs: Observation) -> str:
        return _seg(
            "PID",
            {3: f"{obs.stay_id}^^^^MR", 5: f"SIM^{obs.bed}", 7: _birth(obs), 8: obs.sex},
        )

    def pv1(self, obs: Observation) -> str:
        return _seg("PV1", {2: "I", 3: f"ICU^^{obs.bed}&0&0"})

    def obr(self, obs: Observation, eui: str) -> str:
        return _seg("OBR", {7: _ts_seconds(obs.obs_time, offset=False)})

    def header_rows(self, obs: Observation, eui: str) -> list[dict[int, str]]:
        return [
            {2: "ST", 3: "0402-f8f5^sMode^MDIL", 4: "0", 5: "MONITORING", 11: "F", 13: "SETTING"}
        ]

    def metric_row(
        self, obs: Observation, metric: Metric, value: float | None, eui: str
    ) -> dict[int, str] | None:
        text = self.value_text(metric, value)
        if not text:
            return None
        row = {2: "NM", 3: metric.code, 4: "0", 5: text, 6: metric.unit, 11: "F"}
        if metric.code in self.limits:
            row[7] = self.limits[metric.code]
        if metric.vital in ("SBP", "DBP", "MAP") or "f0e5" in metric.code:
            row[13] = "APERIODIC"
            row[14] = _ts_seconds(obs.nbp_time or obs.obs_time, offset=False)
        return row

    def obx(self, i: int, row: Mapping[int, str]) -> str:
        return _seg("OBX", {1: "", **row})


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(),
        GeProfile(),
        GeFahrenheitProfile(),
        MindrayProfile(),
        PhilipsProfile(),
    )
}
DEFAULT_PROFILE = "standard"


def profile(name: str | Profile) -> Profile:
    """The profile called `name` (ValueError listing the known ones)."""
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}") from None


def build_oru(obs: Observation, profile_name: str | Profile = DEFAULT_PROFILE) -> str:
    """The ORU^R01 message (segments separated by CR, no trailing CR) for `obs`."""
    return profile(profile_name).build(obs)


def encode_oru(obs: Observation, profile_name: str | Profile = DEFAULT_PROFILE) -> bytes:
    """`build_oru` as bytes in the profile's character set (MSH-18)."""
    p = profile(profile_name)
    return p.encode(p.build(obs))


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
# every message with the third-party `hl7` and `hl7apy` packages) -----------------


class MllpDecoder(MllpFramer):
    """`contracts.mllp.MllpFramer` with the counters `vigil sim watch` prints."""

    @property
    def noise_bytes(self) -> int:
        return self.stats.noise_bytes

    @property
    def truncated(self) -> int:
        return self.stats.frames_bad

    @property
    def frames(self) -> int:
        return self.stats.frames


def _field(fields: list[str], i: int) -> str:
    return fields[i] if i < len(fields) else ""


def _comp(text: str, i: int) -> str:
    parts = text.split("^")
    return parts[i] if i < len(parts) else ""


def _decode(message: bytes) -> str:
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        return message.decode("latin-1")


def _vital_of(code_field: str) -> tuple[str, int] | None:
    """(vital, priority) of an OBX-3, or None when it is not a catalogue vital."""
    ident, system = _comp(code_field, 0), _comp(code_field, 2)
    if system.strip().upper() == "LN":
        v = BY_LOINC.get(ident.strip())
        return (v.name, 0) if v else None
    code = parse_code(ident, system)
    term = BY_CODE.get(code) if code is not None else None
    return (term.vital, term.priority) if term else None


def parse_oru(message: bytes | str) -> DecodedMessage:
    """Decode a message of any profile above; ValueError naming what is wrong.

    Per vital the best-priority source (contracts.mdc) wins, the first on a tie;
    values are in catalogue units; empty values, OBX-11 ``X`` and (from a
    Mindray-style sender) the sentinels are None; a vital with no OBX is None.
    """
    text = _decode(message) if isinstance(message, bytes) else message
    segs: dict[str, list[list[str]]] = {}
    for line in re.split(r"\r\n|\r|\n", text):
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
    obr = segs.get("OBR", [[]])[0]
    birth = _field(pid, 7)[:8]
    when = _field(obr, 7) or _field(msh, 6)  # the observation time, else the message's
    if not when:
        raise ValueError("no observation time (OBR-7 or MSH-7)")
    values: dict[str, float | None] = dict.fromkeys(VITAL_NAMES)
    best: dict[str, int] = {}
    sentinels = SENTINELS if _field(msh, 2).upper().startswith("MINDRAY") else frozenset()
    for obx in segs.get("OBX", []):
        found = _vital_of(_field(obx, 3))
        if found is None:
            continue
        vital, prio = found
        if vital in best and best[vital] <= prio:
            continue
        raw = _field(obx, 5).strip()
        if not raw or _field(obx, 11) == "X" or raw in sentinels:
            value = None
        else:
            try:
                value = to_catalogue(vital, float(raw), _field(obx, 6))
            except UnitError as e:
                raise ValueError(f"OBX {_field(obx, 3)!r}: {e}") from None
        best[vital] = prio
        values[vital] = value
    return DecodedMessage(
        monitor_id=monitor_id,
        seq=int(seq_text),
        bed=_comp(_field(pv1, 3), 2).split("&")[0],
        stay_id=_comp(_field(pid, 3), 0),
        obs_time=parse_ts(when),
        birth_date=datetime.strptime(birth, "%Y%m%d").date() if birth else None,
        sex=_field(pid, 8) or "U",
        icu_admit=parse_ts(_field(pv1, 44)) if _field(pv1, 44) else None,
        values=values,
        version=_field(msh, 11),
    )
