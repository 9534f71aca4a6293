"""IHE PCD-01 (HL7 v2 ORU^R01 / ORF^R04) from real bedside monitors -> typed observations.

What real monitors and their HL7 gateways send (GE, Philips, Mindray, ... and the IHE
PCD-01 examples in `tests/samples/hl7/`), read with python-hl7 (`hl7.parse`, which takes
the separators from MSH-1/MSH-2), never by splitting strings by hand:

- versions 2.3 to 2.6; `ORU^R01` with or without the structure id, `ORF^R04` (query
  response); CR, LF or CRLF segment ends; MSH-18 character set (UTF-8 by default,
  `8859/1` as Latin-1); several OBR groups; NTE and other segments ignored;
- OBX-3 codes: MDC (ISO/IEEE 11073-10101, or Philips MDIL hex) through
  `contracts.mdc`, else LOINC (`contracts.vitals.BY_LOINC`), else the site's mapping of
  vendor-private codes (`contracts.mdc.SiteVocabulary`);
- OBX-6 units converted to catalogue units (`contracts.units`), never guessed;
- the observation time from OBX-14, else OBR-7, else MSH-7, any UTC offset, any
  fraction of a second; a time without offset is read in the site's zone `tz`.

One unusable OBX is set aside with its reason (`SetAside`); the rest of the message is
used. Only a message that cannot be used at all raises `MessageError`, which says which
ACK to send (`AE` error, `AR` reject) and names the problem for the ERR segment.

ADT (`parse_any`, used by the MLLP listener): a hospital's ADT feed on the same
listener gives the admission of a bed: `ADT^A01` (admit), `A02` (transfer), `A03`
(discharge), `A04` (register), `A08` (update), `A11`/`A12`/`A13` (cancel admit,
transfer, discharge), v2.3 to 2.6, with or without the structure id, read into an
`AdtEvent` (patient id PID-3, age PID-7 at the event time, sex PID-8, PV1-3 location
and its bed, PV1-6 prior location, PV1-44/PV1-45 admit/discharge times, EVN-6 else
EVN-2 event time). Same error rules and ACKs as ORU; another ADT event is `AR`.

Privacy: patient identification (PID-3, PID-5, PID-7) is never put into exception
text, set-aside reasons or logs; `Pcd01Message.patient_id` is kept in memory only and
the gateway pseudonymises it (edge_agent/privacy.py).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

import hl7

from contracts.mdc import BY_CODE, BY_REF, NOT_MODEL_VITALS, SiteVocabulary, parse_code
from contracts.units import UnitError, to_catalogue
from contracts.vitals import BY_LOINC

if TYPE_CHECKING:
    from edge_agent.decoder import Reading

__all__ = [
    "ADT_EVENTS",
    "SENTINELS",
    "AdtEvent",
    "MessageError",
    "Observation",
    "Pcd01Message",
    "SetAside",
    "build_ack",
    "parse_adt",
    "parse_any",
    "parse_hl7_time",
    "parse_message",
    "split_messages",
    "to_readings",
]

SUPPORTED_TYPES: frozenset[tuple[str, str]] = frozenset({("ORU", "R01"), ("ORF", "R04")})
# ADT trigger events the gateway reads (admission context of a bed), and what they mean.
ADT_EVENTS: dict[str, str] = {
    "A01": "admit",
    "A02": "transfer",
    "A03": "discharge",
    "A04": "register",
    "A08": "update",
    "A11": "cancel admit",
    "A12": "cancel transfer",
    "A13": "cancel discharge",
}
_VERSION = re.compile(r"^2\.[3-6](?:\.\d+)?$")

# Numbers monitors send for "no value" (Mindray -100 and 32767, Nihon Kohden -999 and
# -99.9, 24-bit / 12-bit NaN, NRes, +/-infinity of IEEE 11073 FLOAT/SFLOAT).
SENTINELS: frozenset[float] = frozenset(
    {
        -999.0,
        -99.9,
        -100.0,
        32767.0,
        8388607.0,  # 0x7FFFFF: FLOAT NaN
        8388608.0,  # 0x800000: FLOAT NRes
        8388606.0,  # +INFINITY
        -8388606.0,  # -INFINITY
        2047.0,  # 0x07FF: SFLOAT NaN
        2048.0,  # 0x0800: SFLOAT NRes
        2046.0,
        -2046.0,
    }
)
ACCEPTED_STATUS = frozenset({"R", "F", "C", ""})
UNAVAILABLE_STATUS = frozenset({"X", "N"})  # the device says: cannot be obtained / not asked
NUMERIC_TYPES = frozenset({"NM", "ST", "SN", ""})
WAVEFORM_TYPES = frozenset({"NA", "MA"})
LOINC_PRIORITY = 5
SITE_PRIORITY = 5

_NUM = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")
_TS = re.compile(r"^(\d{4,17})(?:\.(\d{1,9}))?(?:([+-])(\d{2})(\d{2}))?$")
_HL7_NULL = '""'

# HL7 table 0357 (message error condition codes), by MessageError reason.
_ERR_CODES: dict[str, tuple[str, str]] = {
    "not_hl7": ("100", "Segment sequence error"),
    "bad_msh": ("101", "Required field missing"),
    "bad_time": ("102", "Data type error"),
    "bad_encoding": ("102", "Data type error"),
    "unsupported_type": ("200", "Unsupported message type"),
    "unsupported_version": ("203", "Unsupported version id"),
    "unsupported_charset": ("203", "Unsupported version id"),
    "missing_segment": ("100", "Segment sequence error"),
    "missing_field": ("101", "Required field missing"),
}
_INTERNAL = ("207", "Application internal error")

# MSH-18 -> Python codec (HL7 table 0211).
_CHARSETS: dict[str, str] = {
    "": "utf-8",
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "ISO IR192": "utf-8",
    "ISO IR100": "latin-1",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
    "KS X 1001": "euc-kr",
}
for _n in range(1, 10):
    _CHARSETS[f"8859/{_n}"] = "latin-1" if _n == 1 else f"iso8859-{_n}"
_CHARSETS["8859/15"] = "iso8859-15"

_ack_counter = itertools.count(1)


class MessageError(ValueError):
    """A message the gateway cannot use at all.

    `ack_code` is the ACK to send: `AE` (error: unparsable, no MSH, ...) or `AR`
    (reject: unsupported message type, version or character set). `reason` is the
    counter name; `detail` is human text that never quotes PID fields.
    """

    def __init__(
        self,
        reason: str,
        detail: str = "",
        *,
        ack_code: str = "AE",
        hl7_error: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.ack_code = ack_code
        self.reason = reason
        self.detail = detail
        self._hl7_error = hl7_error

    @property
    def hl7_error(self) -> tuple[str, str]:
        """(HL7 table 0357 code, its text) for ERR-3."""
        return self._hl7_error or _ERR_CODES.get(self.reason, _INTERNAL)


@dataclass(frozen=True)
class Observation:
    """One usable OBX: a catalogue vital in catalogue units."""

    vital: str  # catalogue name: HR, O2Sat, Temp, SBP, MAP, DBP, Resp
    value: float | None  # catalogue units; None: the device says not available (OBX-11 X, N)
    code: str  # OBX-3 as received (identifier^text^system)
    source: str  # contracts.mdc Term.source (ecg, spo2, abp, nibp, ...) or "loinc"/site's
    priority: int  # after the site's priority rules; lower wins
    obs_time: datetime  # OBX-14, else OBR-7, else MSH-7; UTC-aware
    status: str  # OBX-11


@dataclass(frozen=True)
class SetAside:
    """One OBX (or field) not used, and why."""

    segment: str  # e.g. "OBX 7" (the 7th OBX of the message), "PID-7"
    code: str  # OBX-3 as received, or ""
    reason: str  # unknown_code, not_a_model_vital: ..., missing_unit, unknown_unit,
    # wrong_unit, status_D, sentinel, not_numeric, waveform, container,
    # duplicate_lower_priority, bad_time, bad_birth_date
    detail: str = ""  # more words (e.g. the unit not understood); never PID values


@dataclass(frozen=True)
class Pcd01Message:
    """What one PCD-01 message says, ready for routing and scoring."""

    control_id: str
    message_type: str  # e.g. "ORU^R01"
    version: str
    sending_app: str  # MSH-3.1
    sending_facility: str  # MSH-4.1
    msg_time: datetime  # MSH-7 (else the first OBR-7, else `now`), UTC
    patient_id: str  # PID-3.1 raw (never logged; the gateway pseudonymises it) or ""
    age: float | None  # PID-7 (date or date-time): whole years at the first OBR-7, else MSH-7
    sex: float | None  # PID-8: M=1, F=0, else None
    icu_admit: datetime | None  # PV1-44
    location: str  # PV1-3 as received (e.g. "ICU^^bed-1"), "" if none
    bed_label: str  # PV1-3.3 (bed component, first subcomponent) or ""
    device_ids: tuple[str, ...]  # MSH-3.2 and OBX-18 equipment ids (EUI-64 etc.)
    observations: tuple[Observation, ...]
    set_aside: tuple[SetAside, ...]


@dataclass(frozen=True)
class AdtEvent:
    """What one ADT message says about a patient's admission (see `ADT_EVENTS`)."""

    control_id: str
    message_type: str  # e.g. "ADT^A01"
    version: str
    event: str  # trigger event, e.g. "A01" (MSH-9.2)
    sending_app: str  # MSH-3.1
    sending_facility: str  # MSH-4.1
    msg_time: datetime  # MSH-7 (else `now`), UTC
    event_time: datetime  # EVN-6 (event occurred), else EVN-2 (recorded), else msg_time
    patient_id: str  # PID-3.1 of the first repetition that has one, raw (never logged)
    age: float | None  # PID-7 (date or date-time) in whole years at event_time
    sex: float | None  # PID-8: M=1, F=0, else None
    location: str  # PV1-3 as received, "" if none
    bed_label: str  # PV1-3.3 (bed component, first subcomponent) or ""
    prior_location: str  # PV1-6 as received (A02/A12: where the patient was), or ""
    prior_bed_label: str  # PV1-6.3 or ""
    admit_time: datetime | None  # PV1-44
    discharge_time: datetime | None  # PV1-45
    set_aside: tuple[SetAside, ...] = ()  # fields not used (bad times, birth date)

    @property
    def meaning(self) -> str:
        """The event in words ("admit", "transfer", ...)."""
        return ADT_EVENTS.get(self.event, self.event)


# -- small readers --------------------------------------------------------------------


def _get(seg: hl7.Segment, field: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
    """One (unescaped) value of `seg`, "" where the message has none.

    Walks python-hl7's tree (Field > Repetition > Component > subcomponent) as
    `Segment.extract_field` does, without its per-call accessor objects (which cost
    more than the parse); values holding the escape character go through
    `extract_field` for its unescaping.
    """
    if field >= len(seg):
        return ""
    node: object = seg[field]
    for index, kind in ((rep, hl7.Field), (comp, hl7.Repetition), (sub, hl7.Component)):
        if not isinstance(node, kind):  # a leaf above the asked depth: its first child only
            if index != 1:
                return ""
            continue
        node = node[index - 1] if index <= len(node) else ""
    value = node if isinstance(node, str) else str(node)
    if seg.esc in value:
        try:
            value = str(seg.extract_field(1, field, rep, comp, sub))
        except (IndexError, TypeError, ValueError):
            return ""
    return value.strip()


def _raw(seg: hl7.Segment, field: int) -> str:
    """A whole field as it was received (its separators included), "" if absent."""
    return str(seg(field)).strip() if field < len(seg) else ""


def _reps(seg: hl7.Segment, field: int) -> int:
    """How many repetitions `field` has (1 when it has none or is absent)."""
    if field >= len(seg):
        return 1
    f = seg(field)
    return len(f) if f and isinstance(f[0], hl7.Repetition) else 1


def _null(text: str) -> str:
    """The HL7 null `""` read as empty."""
    return "" if text == _HL7_NULL else text


def _code_of(seg: hl7.Segment, field: int = 3) -> tuple[str, str, str, str]:
    """(identifier, text, system, "identifier^text^system") of a coded field."""
    ident, text, system = (_get(seg, field, c) for c in (1, 2, 3))
    shown = "^".join((ident, text, system)).rstrip("^")
    return ident, text, system, shown


def parse_hl7_time(text: str, tz: tzinfo = UTC) -> datetime:
    """An HL7 DTM -> UTC-aware datetime; ValueError if it is not one.

    `YYYY[MM[DD[HH[MM[SS]]]]][.fraction][+/-ZZZZ]`, any number of fraction digits,
    and the vendor form with milliseconds written without a dot
    (`20260124124738000+0800`). A time without an offset is read in `tz`.
    """
    m = _TS.match(text.strip())
    if not m:
        raise ValueError("not an HL7 time")
    digits, frac, sign, oh, om = m.groups()
    if len(digits) == 17 and frac is None:  # yyyyMMddHHmmssSSS (Mindray)
        digits, frac = digits[:14], digits[14:]
    if len(digits) % 2 or len(digits) > 14:
        raise ValueError("not an HL7 time")
    parts = [int(digits[i : i + 2]) for i in range(4, len(digits), 2)]
    month, day, hour, minute, second = parts + [1, 1, 0, 0, 0][len(parts) :]
    micro = int((frac or "0")[:6].ljust(6, "0"))
    zone: tzinfo = tz
    if sign:
        minutes = int(oh) * 60 + int(om)
        if int(oh) > 14 or int(om) > 59:
            raise ValueError("not a UTC offset")
        zone = _fixed(-minutes if sign == "-" else minutes)
    local = datetime(int(digits[:4]), month, day, hour, minute, second, micro, tzinfo=zone)
    return local.astimezone(UTC)


def _fixed(minutes: int) -> tzinfo:
    from datetime import timezone

    return timezone(timedelta(minutes=minutes))


def _age(birth: datetime, when: datetime) -> float | None:
    b, d = birth.date(), when.date()
    years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
    return float(years) if 0 <= years <= 130 else None


def _number(raw: str, value_type: str, seg: hl7.Segment) -> float | None:
    """OBX-5 as a finite number, or None when it is not one."""
    if value_type == "SN":  # structured numeric: [comparator]^num1[^sep^num2]
        comparator, num1 = _get(seg, 5, 1), _get(seg, 5, 2)
        rest = _get(seg, 5, 3) + _get(seg, 5, 4)
        if comparator not in ("", "=") or rest or not _NUM.match(num1):
            return None
        raw = num1
    elif not _NUM.match(raw):
        return None
    value = float(raw)
    return value if math.isfinite(value) else None


# -- decoding -------------------------------------------------------------------------


def _lines(text: str) -> str:
    """CR segment ends (CR, LF or CRLF received), blank lines dropped."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return "\r".join(s for s in text.split("\r") if s.strip())


def _parse(text: str) -> hl7.Message:
    msh_seps = text[3:8]
    if len(msh_seps) < 5 or len(set(msh_seps)) < 5 or any(c.isalnum() for c in msh_seps):
        raise MessageError("bad_msh", "MSH-1/MSH-2 are not five distinct separators")
    try:
        return hl7.parse(text)
    except Exception as e:
        raise MessageError("not_hl7", f"python-hl7 cannot parse it ({type(e).__name__})") from None


def _message(body: bytes) -> hl7.Message:
    """The message parsed by python-hl7, its bytes decoded per MSH-18.

    Parsed once as Latin-1 (which never fails) to read MSH-18; that parse is the
    message when the bytes are ASCII or MSH-18 says 8859/1, else the bytes are decoded
    with MSH-18's character set and parsed again.
    """
    if isinstance(body, str):  # lenient for callers that already decoded
        body = body.encode("utf-8")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise MessageError("not_hl7", f"{type(body).__name__} is not bytes")
    body = bytes(body).strip(b" \t\r\n\x0b\x1c\x00")
    if not body.startswith(b"MSH") or len(body) < 8:
        raise MessageError("not_hl7", "message does not start with MSH")
    msg = _parse(_lines(body.decode("latin-1")))
    name = _get(msg[0], 18).upper()
    codec = _CHARSETS.get(name)
    if codec is None:
        raise MessageError(
            "unsupported_charset", f"MSH-18 character set {name[:30]!r}", ack_code="AR"
        )
    if codec == "latin-1" or body.isascii():
        return msg
    try:
        text = body.decode(codec)
    except (UnicodeDecodeError, LookupError):
        raise MessageError("bad_encoding", f"bytes that are not {codec} (per MSH-18)") from None
    return _parse(_lines(text))


def _header(msg: hl7.Message, adt: bool = False) -> tuple[hl7.Segment, str, str, str, str]:
    """MSH, its control id, type^trigger, version; MessageError if unusable.

    `adt`: ADT messages of `ADT_EVENTS` are read too (another ADT event: `AR`).
    """
    msh = msg[0]  # _message checked that the first segment is MSH
    mtype, trigger = _get(msh, 9, 1).upper(), _get(msh, 9, 2).upper()
    version = _get(msh, 12)
    control = _get(msh, 10)
    if not mtype:
        raise MessageError("bad_msh", "MSH-9 message type is empty")
    if adt and mtype == "ADT" and trigger not in ADT_EVENTS:
        raise MessageError(
            "unsupported_type",
            f"ADT event {trigger[:6] or '(none)'} (only {', '.join(ADT_EVENTS)} are read)",
            ack_code="AR",
            hl7_error=("201", "Unsupported event code"),
        )
    if (mtype, trigger) not in SUPPORTED_TYPES and not (adt and mtype == "ADT"):
        shown = f"{mtype}^{trigger}" if trigger else mtype
        raise MessageError(
            "unsupported_type",
            f"message type {shown[:20]} (only ORU^R01 and ORF^R04 are read)",
            ack_code="AR",
            hl7_error=("201", "Unsupported event code") if mtype in ("ORU", "ORF") else None,
        )
    if not _VERSION.match(version):
        raise MessageError(
            "unsupported_version", f"HL7 version {version[:12]!r} is not 2.3-2.6", ack_code="AR"
        )
    if not control:
        raise MessageError("bad_msh", "MSH-10 message control id is empty")
    return msh, control[:199], f"{mtype}^{trigger}", version


def _ids_of(seg: hl7.Segment, field: int) -> list[str]:
    """Equipment ids (EI: entity id and universal id) in each repetition of a field."""
    out: list[str] = []
    for r in range(1, min(_reps(seg, field), 8) + 1):
        for c in (1, 3):
            v = _null(_get(seg, field, c, rep=r))
            if v and v.upper() != "EUI-64":
                out.append(v[:64])
    return out


def parse_message(
    body: bytes,
    *,
    vocabulary: SiteVocabulary | None = None,
    tz: tzinfo = UTC,
    now: datetime | None = None,
) -> Pcd01Message:
    """One HL7 message (unframed) -> `Pcd01Message`, or `MessageError`.

    Never raises anything else: a parser bug is reported as `MessageError("parser_error")`
    (naming the exception type only: its text could quote the message).
    """
    try:
        return _parse_message(_message(body), vocabulary, tz, now)
    except MessageError:
        raise
    except Exception as e:
        raise MessageError("parser_error", type(e).__name__) from None


def parse_any(
    body: bytes,
    *,
    vocabulary: SiteVocabulary | None = None,
    tz: tzinfo = UTC,
    now: datetime | None = None,
) -> Pcd01Message | AdtEvent:
    """A result message (as `parse_message`) or an ADT message (as `parse_adt`), by MSH-9;
    `MessageError` for anything else or anything unusable. Never raises anything else."""
    try:
        msg = _message(body)
        if _get(msg[0], 9, 1).upper() == "ADT":
            return _parse_adt(msg, tz, now)
        return _parse_message(msg, vocabulary, tz, now)
    except MessageError:
        raise
    except Exception as e:
        raise MessageError("parser_error", type(e).__name__) from None


def _parse_message(
    msg: hl7.Message, vocabulary: SiteVocabulary | None, tz: tzinfo, now: datetime | None
) -> Pcd01Message:
    msh, control, mtype, version = _header(msg)
    aside: list[SetAside] = []

    raw_msh7 = _get(msh, 7)
    msg_time: datetime | None = None
    if raw_msh7:
        try:
            msg_time = parse_hl7_time(raw_msh7, tz)
        except ValueError:
            raise MessageError("bad_time", "MSH-7 is not an HL7 time") from None

    device_ids: list[str] = []
    if _get(msh, 3, 2):
        device_ids.append(_get(msh, 3, 2)[:64])

    pid = pv1 = None
    obr_time: datetime | None = None
    obr_bad = False
    first_obr_time: datetime | None = None
    # (OBX number in the message, OBX, its OBR-7 time, OBR-7 unreadable)
    rows: list[tuple[int, hl7.Segment, datetime | None, bool]] = []
    n_obx = 0
    for seg in msg:
        sid = str(seg[0]).strip().upper()
        if sid == "PID" and pid is None:
            pid = seg
        elif sid == "PV1" and pv1 is None:
            pv1 = seg
        elif sid == "OBR":
            obr_time, obr_bad = None, False
            raw = _get(seg, 7)
            if raw:
                try:
                    obr_time = parse_hl7_time(raw, tz)
                except ValueError:
                    obr_bad = True
                    aside.append(SetAside(f"OBR-7 (OBX after {n_obx})", "", "bad_time"))
            if first_obr_time is None:
                first_obr_time = obr_time
        elif sid == "OBX":
            n_obx += 1
            rows.append((n_obx, seg, obr_time, obr_bad))
    if msg_time is None:
        msg_time = first_obr_time or (now or datetime.now(UTC)).astimezone(UTC)

    candidates: list[tuple[int, Observation]] = []
    for n, seg, group_time, group_bad in rows:
        where = f"OBX {n}"
        ident, text, system, shown = _code_of(seg, 3)
        device_ids.extend(_ids_of(seg, 18))
        value_type = _get(seg, 2).upper()
        raw_value = _raw(seg, 5)
        if not raw_value and not value_type:
            aside.append(SetAside(where, shown, "container"))
            continue
        found = _lookup(ident, text, system, vocabulary)
        if isinstance(found, SetAside):
            aside.append(SetAside(where, shown, found.reason, found.detail))
            continue
        vital, source, default_priority = found
        priority = (
            vocabulary.rank(vital, source, default_priority) if vocabulary else default_priority
        )
        status = _get(seg, 11).upper()
        if status not in ACCEPTED_STATUS and status not in UNAVAILABLE_STATUS:
            aside.append(SetAside(where, shown, f"status_{status[:4]}"))
            continue
        raw_time = _get(seg, 14)
        if raw_time:
            try:
                obs_time: datetime | None = parse_hl7_time(raw_time, tz)
            except ValueError:
                aside.append(SetAside(where, shown, "bad_time", "OBX-14"))
                continue
        elif group_bad:
            aside.append(SetAside(where, shown, "bad_time", "OBR-7"))
            continue
        else:
            obs_time = group_time or msg_time
        assert obs_time is not None
        value: float | None = None
        if status not in UNAVAILABLE_STATUS:
            if value_type in WAVEFORM_TYPES:
                aside.append(SetAside(where, shown, "waveform", f"value type {value_type}"))
                continue
            if value_type not in NUMERIC_TYPES:
                aside.append(SetAside(where, shown, "not_numeric", f"value type {value_type}"))
                continue
            if raw_value == _HL7_NULL:
                aside.append(SetAside(where, shown, "sentinel", 'HL7 null ""'))
                continue
            number = _number(raw_value, value_type, seg)
            if number is None:
                aside.append(SetAside(where, shown, "not_numeric", f"value type {value_type}"))
                continue
            if number in SENTINELS:
                aside.append(SetAside(where, shown, "sentinel", f"{number:g} means no value"))
                continue
            try:
                value = to_catalogue(vital, number, _raw_unit(seg))
            except UnitError as e:
                aside.append(SetAside(where, shown, e.kind, str(e)))
                continue
            except ValueError:  # parse_unit's isdigit takes digits such as "²" that int() refuses
                aside.append(SetAside(where, shown, "unknown_unit", "not a unit code"))
                continue
        obs = Observation(vital, value, shown, source, priority, obs_time, status)
        candidates.append((n, obs))

    observations = _best_per_vital(candidates, aside)

    patient_id, age, sex = "", None, None
    if pid is not None:
        patient_id, age, sex = _demographics(pid, first_obr_time or msg_time, tz, aside)
    location = bed_label = ""
    icu_admit: datetime | None = None
    if pv1 is not None:
        location = _null(_raw(pv1, 3))[:200]
        bed_label = _null(_get(pv1, 3, 3, 1))[:64]
        admit = _null(_get(pv1, 44))
        if admit:
            try:
                icu_admit = parse_hl7_time(admit, tz)
            except ValueError:
                aside.append(SetAside("PV1-44", "", "bad_time"))

    return Pcd01Message(
        control_id=control,
        message_type=mtype,
        version=version,
        sending_app=_get(msh, 3, 1)[:64],
        sending_facility=_get(msh, 4, 1)[:64],
        msg_time=msg_time,
        patient_id=patient_id,
        age=age,
        sex=sex,
        icu_admit=icu_admit,
        location=location,
        bed_label=bed_label,
        device_ids=tuple(dict.fromkeys(device_ids)),
        observations=tuple(observations),
        set_aside=tuple(sorted(aside, key=_segment_order)),
    )


def parse_adt(body: bytes, *, tz: tzinfo = UTC, now: datetime | None = None) -> AdtEvent:
    """One ADT message (unframed) -> `AdtEvent`, or `MessageError` (as `parse_message`)."""
    try:
        return _parse_adt(_message(body), tz, now)
    except MessageError:
        raise
    except Exception as e:
        raise MessageError("parser_error", type(e).__name__) from None


def _patient_id(pid: hl7.Segment) -> str:
    """PID-3.1 of the first repetition that has one (a first repetition may be `""`)."""
    for r in range(1, min(_reps(pid, 3), 8) + 1):
        value = _null(_get(pid, 3, 1, rep=r))
        if value:
            return value[:64]
    return ""


def _demographics(
    pid: hl7.Segment, when: datetime, tz: tzinfo, aside: list[SetAside]
) -> tuple[str, float | None, float | None]:
    """(PID-3 patient id, age in years at `when` from PID-7, sex from PID-8: M=1, F=0).

    An unreadable birth date is set aside (named, never shown) and the age is unknown."""
    age = None
    birth = _null(_get(pid, 7))
    if birth:
        try:
            age = _age(parse_hl7_time(birth, tz), when)
        except ValueError:
            aside.append(SetAside("PID-7", "", "bad_birth_date"))
    return _patient_id(pid), age, {"M": 1.0, "F": 0.0}.get(_get(pid, 8).upper())


def _location(seg: hl7.Segment, field: int) -> str:
    """A PL field as received, "" when none of its components has a value (`""^""^...`)."""
    if not any(_null(_get(seg, field, c)) for c in range(1, 12)):
        return ""
    return _raw(seg, field)[:200]


def _time_field(
    seg: hl7.Segment, field: int, name: str, tz: tzinfo, aside: list[SetAside]
) -> datetime | None:
    """An HL7 time field, None when empty; an unreadable one is set aside as bad_time."""
    raw = _null(_get(seg, field))
    if not raw:
        return None
    try:
        return parse_hl7_time(raw, tz)
    except ValueError:
        aside.append(SetAside(name, "", "bad_time"))
        return None


def _parse_adt(msg: hl7.Message, tz: tzinfo, now: datetime | None) -> AdtEvent:
    msh, control, mtype, version = _header(msg, adt=True)
    event = mtype.split("^", 1)[1]
    aside: list[SetAside] = []
    raw_msh7 = _get(msh, 7)
    msg_time: datetime | None = None
    if raw_msh7:
        try:
            msg_time = parse_hl7_time(raw_msh7, tz)
        except ValueError:
            raise MessageError("bad_time", "MSH-7 is not an HL7 time") from None
    msg_time = msg_time or (now or datetime.now(UTC)).astimezone(UTC)
    segs: dict[str, hl7.Segment] = {}
    for seg in msg:
        segs.setdefault(str(seg[0]).strip().upper(), seg)
    for need in ("PID", "PV1"):
        if need not in segs:
            raise MessageError("missing_segment", f"{mtype} without a {need} segment")
    pid, pv1, evn = segs["PID"], segs["PV1"], segs.get("EVN")
    event_time = None
    if evn is not None:
        event_time = _time_field(evn, 6, "EVN-6", tz, aside) or _time_field(
            evn, 2, "EVN-2", tz, aside
        )
    event_time = event_time or msg_time
    patient_id, age, sex = _demographics(pid, event_time, tz, aside)
    if not patient_id:
        raise MessageError("missing_field", "PID-3 patient identifier is empty")
    return AdtEvent(
        control_id=control,
        message_type=mtype,
        version=version,
        event=event,
        sending_app=_get(msh, 3, 1)[:64],
        sending_facility=_get(msh, 4, 1)[:64],
        msg_time=msg_time,
        event_time=event_time,
        patient_id=patient_id,
        age=age,
        sex=sex,
        location=_location(pv1, 3),
        bed_label=_null(_get(pv1, 3, 3, 1))[:64],
        prior_location=_location(pv1, 6),
        prior_bed_label=_null(_get(pv1, 6, 3, 1))[:64],
        admit_time=_time_field(pv1, 44, "PV1-44", tz, aside),
        discharge_time=_time_field(pv1, 45, "PV1-45", tz, aside),
        set_aside=tuple(aside),
    )


def _segment_order(a: SetAside) -> int:
    """Set-aside rows in message order: OBX n by n, the others (PID, PV1, OBR) first."""
    head, _, n = a.segment.partition(" ")
    return int(n) if head == "OBX" and n.isdigit() else -1


def _raw_unit(seg: hl7.Segment) -> str:
    """OBX-6 as `identifier^text^system` (whatever separators the sender used)."""
    return "^".join(_get(seg, 6, c) for c in (1, 2, 3))


def _lookup(
    ident: str, text: str, system: str, vocabulary: SiteVocabulary | None
) -> tuple[str, str, int] | SetAside:
    """(vital, source, default priority) of an OBX-3 code, or why it is not a vital."""
    # ASCII only: `str.isdigit` (in parse_code) also takes digits such as "²" that int() refuses
    code = parse_code(ident, system) if ident and ident.isascii() else None
    term = BY_CODE.get(code) if code is not None else None
    if term is None and not ident and system.upper() in ("", "MDC"):
        term = BY_REF.get(text)
    if term is not None:
        return term.vital, term.source, term.priority
    if system.upper() in ("LN", "LOINC", "") and ident in BY_LOINC:
        return BY_LOINC[ident].name, "loinc", LOINC_PRIORITY
    if vocabulary is not None and ident:
        site = vocabulary.lookup(system, ident)
        if site is not None:
            return site[0], site[1], SITE_PRIORITY
    if code is not None and code in NOT_MODEL_VITALS:
        return SetAside("", "", f"not_a_model_vital: {NOT_MODEL_VITALS[code]}")
    return SetAside("", "", "unknown_code")


def _best_per_vital(
    candidates: list[tuple[int, Observation]], aside: list[SetAside]
) -> list[Observation]:
    """Per vital the best observation: a value before none, best priority, newest, first."""
    best: dict[str, tuple[int, Observation]] = {}

    def key(item: tuple[int, Observation]) -> tuple[bool, int, float, int]:
        n, o = item
        return (o.value is None, o.priority, -o.obs_time.timestamp(), n)

    for item in candidates:
        v = item[1].vital
        if v not in best or key(item) < key(best[v]):
            best[v] = item
    kept = {id(item[1]) for item in best.values()}
    for n, o in candidates:
        if id(o) not in kept:
            winner = best[o.vital][1]
            aside.append(
                SetAside(
                    f"OBX {n}",
                    o.code,
                    "duplicate_lower_priority",
                    f"{o.vital} from {o.source}; kept {winner.source} ({winner.code})",
                )
            )
    return [o for n, o in candidates if id(o) in kept]


def split_messages(data: bytes) -> list[bytes]:
    """A file or capture of HL7 messages -> one body per message (CR segment ends).

    MLLP-framed (`0x0B ... 0x1C 0x0D`, anything between frames dropped) or raw, several
    messages one after the other, each starting at an `MSH` line; CR, LF or CRLF ends.
    Lines before the first MSH are returned as one body of their own (not HL7).
    """
    if b"\x0b" in data:
        chunks = [part.split(b"\x1c", 1)[0] for part in data.split(b"\x0b")[1:]]
    else:
        chunks = [data]
    out: list[bytes] = []
    for chunk in chunks:
        lines = chunk.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
        current: list[bytes] = []
        for line in lines:
            if line.lstrip().startswith(b"MSH") and current:
                out.append(b"\r".join(current) + b"\r")
                current = []
            if line.strip():
                current.append(line.lstrip() if line.lstrip().startswith(b"MSH") else line)
        if current:
            out.append(b"\r".join(current) + b"\r")
    return out


# -- readings and ACKs ----------------------------------------------------------------


def to_readings(msg: Pcd01Message, bed: str, monitor_id: str, seq: int) -> list[Reading]:
    """One `Reading` per distinct observation time (oldest first).

    `values` holds only the vitals the message carries (None: the device says not
    available); per vital the best-priority observation. Static features from PID/PV1:
    Age, Gender, HospAdmTime (unknown from a monitor: None) and ICULOS (hours since
    PV1-44, or None).
    """
    from edge_agent.decoder import Reading

    by_time: dict[datetime, dict[str, Observation]] = {}
    for o in msg.observations:
        slot = by_time.setdefault(o.obs_time, {})
        cur = slot.get(o.vital)
        if cur is None or (o.value is not None, -o.priority) > (
            cur.value is not None,
            -cur.priority,
        ):
            slot[o.vital] = o
    out: list[Reading] = []
    for t in sorted(by_time):
        iculos = (t - msg.icu_admit) / timedelta(hours=1) if msg.icu_admit else None
        out.append(
            Reading(
                bed=bed,
                stay=msg.patient_id,
                monitor_id=monitor_id,
                seq=seq,
                obs_time=t,
                values={v: o.value for v, o in by_time[t].items()},
                static={
                    "Age": msg.age,
                    "Gender": msg.sex,
                    "HospAdmTime": None,
                    "ICULOS": iculos,
                },
                icu_admit=msg.icu_admit,
            )
        )
    return out


_ACK_SEPS = "|^~\\&"


def _esc(text: str) -> str:
    """Escape HL7 delimiters in `text` for our ACK (separators `|^~\\&`)."""
    out = text.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    out = out.replace("~", "\\R\\").replace("&", "\\T\\")
    return "".join(c if c.isprintable() else " " for c in out)


def _ack_header(body: bytes) -> dict[str, str]:
    """What of the original MSH an ACK needs, read as leniently as possible."""
    info = {k: "" for k in ("app", "app2", "fac", "fac2", "rapp", "rfac", "ctl", "trig", "ver")}
    info["proc"] = "P"
    try:
        raw = bytes(body).strip(b" \t\r\n\x0b\x1c\x00")
        end = min((i for i in (raw.find(b"\r"), raw.find(b"\n")) if i >= 0), default=len(raw))
        first = raw[:end].decode("latin-1")
        if not first.startswith("MSH") or len(first) < 8:
            return info
        msh = hl7.parse(first).segment("MSH")
    except Exception:
        return info
    info.update(
        app=_get(msh, 3, 1),
        app2=_get(msh, 3, 2),
        app3=_get(msh, 3, 3),
        fac=_get(msh, 4, 1),
        rapp=_get(msh, 5, 1),
        rfac=_get(msh, 6, 1),
        ctl=_get(msh, 10),
        trig=_get(msh, 9, 2),
        ver=_get(msh, 12),
        proc=_get(msh, 11, 1) or "P",
    )
    return info


def build_ack(
    body: bytes,
    code: str,
    *,
    error: MessageError | None = None,
    text: str = "",
    now: datetime | None = None,
) -> bytes:
    """HL7 original-mode ACK (MSH, MSA, and ERR for AE/AR), unframed, ASCII.

    Sending and receiving application/facility are swapped from the original MSH;
    MSH-9 `ACK^<trigger>^ACK`; MSH-10 a new control id; MSH-12 the message's version
    (2.6 when unknown); MSA-2 the original control id (empty when none could be read).
    ERR: ERR-3 the HL7 table 0357 error code, ERR-4 severity `E`, ERR-8 the problem in
    words (and ERR-1 for versions before 2.5, where ERR has only that field).
    """
    code = code if code in ("AA", "AE", "AR", "CA", "CE", "CR") else "AE"
    h = _ack_header(body)
    when = (now or datetime.now(UTC)).astimezone(UTC)
    ts = when.strftime("%Y%m%d%H%M%S") + f".{when.microsecond // 1000:03d}+0000"
    control = f"A{when:%y%m%d%H%M%S}{next(_ack_counter) % 100000:05d}"
    version = h["ver"] if _VERSION.match(h["ver"]) else "2.6"
    trig = _esc(h["trig"][:3])
    mtype = f"ACK^{trig}^ACK" if trig else "ACK"
    sender = _esc(h["app"][:64])
    if h.get("app2"):
        sender += "^" + _esc(h["app2"][:64]) + "^" + _esc(h.get("app3", "")[:16])
        sender = sender.rstrip("^")
    proc = h["proc"][:1] if h["proc"][:1] in ("P", "T", "D") else "P"
    segs = [
        "|".join(
            [
                "MSH",
                "^~\\&",
                _esc(h["rapp"][:64]) or "VIGIL",
                _esc(h["rfac"][:64]),
                sender,
                _esc(h["fac"][:64]),
                ts,
                "",
                mtype,
                control,
                proc,
                version,
            ]
        ),
        "|".join(["MSA", code, _esc(h["ctl"][:199])]) + (f"|{_esc(text[:80])}" if text else ""),
    ]
    if code in ("AE", "AR", "CE", "CR"):
        err_code, err_text = error.hl7_error if error is not None else _INTERNAL
        words = (error.detail or error.reason) if error is not None else (text or err_text)
        words = f"{error.reason}: {words}" if error is not None and error.detail else words
        cwe = f"{err_code}^{err_text}^HL70357"
        err1 = f"^^^{err_code}&{err_text}&HL70357" if version < "2.5" else ""
        segs.append("|".join(["ERR", err1, "", cwe, "E", "", "", "", _esc(words[:250])]))
    return ("\r".join(segs) + "\r").encode("ascii", "replace")
