"""IntelliVue Data Export messages: encode what a client sends, decode what a monitor sends.

Byte order is big-endian throughout (Guide ch. 5 "Byte Order", p. 35). Two protocols
share the line (Guide ch. 3 "Protocol Dialog", pp. 25-27):

- Association Control (Guide ch. 6, pp. 65-73; building blocks ch. 10 pp. 298-304): the
  first byte is the session header (`0x0D` connect = association request, `0x0E` accept
  = association result, `0x0C` refuse, `0x09` finish = release request, `0x0A`
  disconnect = release result, `0x19` abort), then a length indicator (LI: one byte,
  or 0xFF and a u16), session data, a presentation header `0xC1 LI ...`, the user data
  (`ASNLength` + `MDSEUserInfoStd`) and a trailer of zeros.
- Data Export commands (Guide ch. 5 "Protocol Command Structure", pp. 41-51): `SPpdu`
  (session_id 0xE100, p_context_id), `ROapdus` (ro_type, length), then a remote
  operation invoke (ROIV: invoke_id, command_type, length), result (RORS), linked
  result (RORLS: state, count, then as RORS) or error (ROER), then the command:
  `EventReportArgument` (MDS create event, connect indication), `ActionArgument` /
  `ActionResult` (poll data request / result).

A numeric arrives as `NuObsValue` (Guide ch. 7 "Attribute: Numeric Observed Value",
p. 76): physio_id (SCADA partition code), MeasurementState bits, unit_code (dimension
partition), FLOAT-Type value (Guide p. 40: 8-bit signed exponent, 24-bit signed
mantissa; NaN, NRes and +/-INF are special mantissas). The measurement is valid only
when the state's first octet is 0 (Guide p. 77); the bits name why not.

Decoding never trusts a length: every read is bounds-checked and a message that does
not fit raises `ProtocolError` (the driver counts it by reason and goes on).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

# --- constants (Guide ch. 5 and ch. 9 "Nomenclature"/"Constants") -----------------

# Session headers (Guide ch. 6 "Session Headers", p. 67).
CN_SPDU = 0x0D  # association request
AC_SPDU = 0x0E  # association accept (result)
RF_SPDU = 0x0C  # refuse
FN_SPDU = 0x09  # release request
DN_SPDU = 0x0A  # release response
AB_SPDU = 0x19  # abort
DATA_SPDU = 0xE1  # first byte of SPpdu session_id 0xE100 (Data Export commands)

SESSION_ID = 0xE100
P_CONTEXT_ID = 2

# ROapdus.ro_type (Guide p. 42).
ROIV_APDU = 1
RORS_APDU = 2
ROER_APDU = 3
RORLS_APDU = 5
RORLS_FIRST, RORLS_NOT_FIRST_NOT_LAST, RORLS_LAST = 1, 2, 3

# command_type (Guide p. 43).
CMD_EVENT_REPORT = 0
CMD_CONFIRMED_EVENT_REPORT = 1
CMD_GET = 3
CMD_SET = 4
CMD_CONFIRMED_SET = 5
CMD_CONFIRMED_ACTION = 7

# Object classes, partitions, notifications, actions (Guide ch. 9).
NOM_PART_OBJ = 1
NOM_PART_SCADA = 2
NOM_PART_DIM = 4
NOM_MOC_VMO_METRIC_NU = 6
NOM_MOC_VMS_MDS = 33
NOM_MOC_VMS_MDS_COMPOS_SINGLE_BED = 35
NOM_MOC_VMO_AL_MON = 54
NOM_MOC_PT_DEMOG = 42
NOM_NOTI_MDS_CREAT = 0x0D06  # 3334
NOM_NOTI_CONN_INDIC = 0x0D17  # 3351
NOM_ACT_POLL_MDIB_DATA = 0x0C16
NOM_ACT_POLL_MDIB_DATA_EXT = 0xF13B  # 61755
NOM_ATTR_GRP_METRIC_VAL_OBS = 0x0803
NOM_ATTR_GRP_VMO_STATIC = 0x0811
NOM_ATTR_GRP_PT_DEMOG = 0x0807

# Attribute ids (Guide ch. 9 "Attribute IDs").
NOM_ATTR_ID_BED_LABEL = 0x091E
NOM_ATTR_ID_HANDLE = 0x0921
NOM_ATTR_ID_LABEL = 0x0924
NOM_ATTR_ID_LABEL_STRING = 0x0927
NOM_ATTR_ID_MODEL = 0x0928
NOM_ATTR_ID_PROD_SPECN = 0x092D
NOM_ATTR_ID_TYPE = 0x092F
NOM_ATTR_MODE_OP = 0x0946
NOM_ATTR_NU_CMPD_VAL_OBS = 0x094B
NOM_ATTR_NU_VAL_OBS = 0x0950
NOM_ATTR_SYS_ID = 0x0984
NOM_ATTR_SYS_TYPE = 0x0986
NOM_ATTR_TIME_ABS = 0x0987
NOM_ATTR_TIME_REL = 0x098F
NOM_ATTR_TIME_STAMP_ABS = 0x0990
NOM_ATTR_TIME_STAMP_REL = 0x0991
NOM_ATTR_PT_DEMOG_ST = 0x0957
NOM_ATTR_PT_DOB = 0x0958
NOM_ATTR_PT_ID = 0x095A  # NOM_ATTR_PT_LIFETIME_ID since Rev. G
NOM_ATTR_PT_SEX = 0x0961
NOM_ATTR_NET_ADDR_INFO = 0xF100
NOM_ATTR_PCOL_SUPPORT = 0xF101
NOM_ATTR_TIME_PD_POLL = 0xF13E
NOM_POLL_PROFILE_SUPPORT = 1
NOM_ATTR_POLL_PROFILE_EXT = 0xF001  # 61441

# Association user data (Guide ch. 6 "Association Request Message", pp. 67-71).
MDDL_VERSION1 = 0x80000000
NOMEN_VERSION = 0x40000000
SYST_CLIENT = 0x80000000
SYST_SERVER = 0x00800000
COLD_START = 0x20000000
POLL_PROFILE_REV_0 = 0x80000000
P_OPT_DYN_CREATE_OBJECTS = 0x40000000
P_OPT_DYN_DELETE_OBJECTS = 0x20000000
POLL_EXT_PERIOD_NU_1SEC = 0x80000000
POLL_EXT_PERIOD_NU_AVG_60SEC = 0x20000000

# Protocol ids in the connect indication's NOM_ATTR_PCOL_SUPPORT (Guide p. 108).
AP_ID_DATA_OUT = 0x0001
TP_ID_UDP = 0x0001

# RelativeTime ticks: 1/8 ms (Guide p. 36).
TICKS_PER_SECOND = 8000

# MeasurementState bits (Guide p. 76).
INVALID = 0x8000
QUESTIONABLE = 0x4000
UNAVAILABLE = 0x2000
CALIBRATION_ONGOING = 0x1000
TEST_DATA = 0x0800
DEMO_DATA = 0x0400
VALIDATED_DATA = 0x0080
EARLY_INDICATION = 0x0040
MSMT_ONGOING = 0x0020
MSMT_STATE_IN_ALARM = 0x0002
MSMT_STATE_AL_INHIBITED = 0x0001

STATE_NAMES: tuple[tuple[int, str], ...] = (
    (INVALID, "invalid"),
    (QUESTIONABLE, "questionable"),
    (UNAVAILABLE, "unavailable"),
    (CALIBRATION_ONGOING, "calibration"),
    (TEST_DATA, "test_data"),
    (DEMO_DATA, "demo_data"),
)

# FLOAT-Type special mantissas (Guide p. 41).
MANTISSA_NAN = 0x7FFFFF
MANTISSA_NRES = -0x800000
MANTISSA_PINF = 0x7FFFFE
MANTISSA_NINF = -0x7FFFFE


def _hex(*rows: str) -> bytes:
    return bytes.fromhex("".join(rows).replace(" ", ""))


ASSOC_SESSION_DATA = _hex("05 08 13 01 00 16 01 02", "80 00 14 02 00 02")
ASSOC_REQ_PRESENTATION = _hex(
    "31 80 A0 80 80 01",
    "01 00 00 A2 80 A0 03 00", "00 01 A4 80 30 80 02 01", "01 06 04 52 01 00 01 30",
    "80 06 02 51 01 00 00 00", "00 30 80 02 01 02 06 0C", "2A 86 48 CE 14 02 01 00",
    "00 00 01 01 30 80 06 0C", "2A 86 48 CE 14 02 01 00", "00 00 02 01 00 00 00 00",
    "00 00 61 80 30 80 02 01", "01 A0 80 60 80 A1 80 06", "0C 2A 86 48 CE 14 02 01",
    "00 00 00 03 01 00 00 BE", "80 28 80 06 0C 2A 86 48", "CE 14 02 01 00 00 00 01",
    "01 02 01 02 81",
)  # fmt: skip
ASSOC_RESP_PRESENTATION = _hex(
    "31 80 A0 80 80 01",
    "01 00 00 A2 80 A0 03 00", "00 01 A5 80 30 80 80 01", "00 81 02 51 01 00 00 30",
    "80 80 01 00 81 0C 2A 86", "48 CE 14 02 01 00 00 00", "02 01 00 00 00 00 61 80",
    "30 80 02 01 01 A0 80 61", "80 A1 80 06 0C 2A 86 48", "CE 14 02 01 00 00 00 03",
    "01 00 00 A2 03 02 01 00", "A3 05 A1 03 02 01 00 BE", "80 28 80 02 01 02 81",
)  # fmt: skip
PRESENTATION_TRAILER = bytes(16)
# The byte sequences just before the user data (Guide p. 73 "Association Response Message").
USER_DATA_MARKERS = (_hex("BE 80 28 80 02 01 02 81"), _hex("BE 80 28 80 81"))
RELEASE_REQUEST = _hex(
    "09 18", "C1 16 61 80 30 80 02 01", "01 A0 80 62 80 80 01 00", "00 00 00 00", "00 00 00 00"
)
RELEASE_RESPONSE = _hex(
    "0A 18", "C1 16 61 80 30 80 02 01", "01 A0 80 63 80 80 01 00", "00 00 00 00", "00 00 00 00"
)
ABORT = _hex(
    "19 2E", "11 01 03",
    "C1 29 A0 80 A0 80 30 80", "02 01 01 06 02 51 01 00", "00 00 00 61 80 30 80 02",
    "01 01 A0 80 64 80 80 01", "01 00 00 00 00 00 00", "00 00 00 00",
)  # fmt: skip
REFUSE = _hex("0C 03", "32 01 00")
# The session data and presentation headers above are constants of the protocol (Guide
# ch. 10 "Association Control Protocol Examples", pp. 298-303); a request's user data
# follows its presentation header, whose last bytes find it.
USER_DATA_MARKERS += (ASSOC_REQ_PRESENTATION[-12:],)


class ProtocolError(ValueError):
    """A message that does not decode; `reason` is its counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --- primitive readers and writers --------------------------------------------------


class Reader:
    """Bounds-checked big-endian reads over one message (ProtocolError when short)."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def left(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise ProtocolError("truncated", f"needs {n} bytes at {self.pos}, has {self.left}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def sub(self, n: int) -> Reader:
        """A reader over the next `n` bytes (this one moves past them)."""
        start = self.pos
        self.take(n)
        return Reader(self.data, start, start + n)


def encode_li(n: int) -> bytes:
    """Session/presentation length indicator (Guide p. 67): one byte below 255, else 0xFF u16."""
    return bytes([n]) if n < 255 else b"\xff" + n.to_bytes(2, "big")


def decode_li(r: Reader) -> int:
    n = r.u8()
    return r.u16() if n == 0xFF else n


def encode_asn_length(n: int) -> bytes:
    """ASN.1 BER length (Guide p. 68 "ASNLength"): short form below 128, else 0x81/0x82 long form."""
    if n < 128:
        return bytes([n])
    if n < 256:
        return bytes([0x81, n])
    return b"\x82" + n.to_bytes(2, "big")


def decode_asn_length(r: Reader) -> int:
    n = r.u8()
    if n < 0x80:
        return n
    size = n & 0x7F
    if size not in (1, 2):
        raise ProtocolError("bad_asn_length", f"0x{n:02x}")
    return int.from_bytes(r.take(size), "big")


def encode_float(value: float, decimals: int = 2) -> int:
    """A value as FLOAT-Type (u32): mantissa value * 10**decimals, exponent -decimals,
    reduced while the mantissa ends in 0 (Guide p. 40)."""
    if value != value:  # NaN
        return MANTISSA_NAN
    exp = -decimals
    mant = round(value * 10**decimals)
    while mant and mant % 10 == 0 and exp < 0:
        mant //= 10
        exp += 1
    while not -0x7FFFFD <= mant <= 0x7FFFFD:
        mant = round(mant / 10)
        exp += 1
    return ((exp & 0xFF) << 24) | (mant & 0xFFFFFF)


def decode_float(raw: int) -> float | None:
    """FLOAT-Type -> float; None for NaN, NRes and +/-INF (no usable number, Guide p. 41)."""
    exp = (raw >> 24) & 0xFF
    mant = raw & 0xFFFFFF
    if exp >= 0x80:
        exp -= 0x100
    if mant >= 0x800000:
        mant -= 0x1000000
    if mant in (MANTISSA_NAN, MANTISSA_NRES, MANTISSA_PINF, MANTISSA_NINF):
        return None
    return mant * 10.0**exp if exp < 0 else float(mant * 10**exp)


def _bcd(b: int) -> int:
    hi, lo = b >> 4, b & 0x0F
    if hi > 9 or lo > 9:
        raise ValueError(f"not BCD: 0x{b:02x}")
    return hi * 10 + lo


def decode_abs_time(raw: bytes) -> datetime | None:
    """AbsoluteTime (Guide p. 36: BCD century, year, month, day, hour, minute, second,
    fraction) -> UTC datetime; None when invalid (0xFF) or impossible."""
    if len(raw) != 8 or raw[:7] == b"\xff" * 7:
        return None
    try:
        c, y, mo, d, h, mi, s = (_bcd(b) for b in raw[:7])
        return datetime(c * 100 + y, mo, d, h, mi, s, tzinfo=UTC)
    except ValueError:
        return None


def encode_abs_time(t: datetime | None) -> bytes:
    if t is None:
        return b"\xff" * 8

    def bcd(v: int) -> int:
        return (v // 10) << 4 | v % 10

    return bytes(
        bcd(v) for v in (t.year // 100, t.year % 100, t.month, t.day, t.hour, t.minute, t.second, 0)
    )


def encode_attributes(avas: list[tuple[int, bytes]]) -> bytes:
    """AttributeList (Guide p. 39): count, length, then AVAType (attribute_id, length, value)."""
    body = b"".join(struct.pack(">HH", aid, len(v)) + v for aid, v in avas)
    return struct.pack(">HH", len(avas), len(body)) + body


def decode_attributes(r: Reader) -> list[tuple[int, bytes]]:
    count, length = r.u16(), r.u16()
    sub = r.sub(length)
    out = []
    for _ in range(count):
        aid, n = sub.u16(), sub.u16()
        out.append((aid, sub.take(n)))
    return out


def variable_label(raw: bytes) -> str:
    """VariableLabel / String text (Guide p. 40): u16 length then bytes; NULs and
    non-printables dropped (the monitor pads with 0x00)."""
    r = Reader(raw)
    n = r.u16()
    text = r.take(min(n, r.left)).decode("latin-1")
    return "".join(c for c in text if c.isprintable()).strip()


# --- association control ------------------------------------------------------------


@dataclass(frozen=True)
class UserInfo:
    """MDSEUserInfoStd of an association request or response (Guide pp. 67-71)."""

    protocol_version: int = MDDL_VERSION1
    nomenclature_version: int = NOMEN_VERSION
    functional_units: int = 0
    system_type: int = SYST_CLIENT
    startup_mode: int = COLD_START
    min_poll_period: int = 1 * TICKS_PER_SECOND  # RelativeTime ticks
    max_mtu_rx: int = 1000
    max_mtu_tx: int = 1000
    max_bw_tx: int = 0xFFFFFFFF
    poll_options: int = P_OPT_DYN_CREATE_OBJECTS | P_OPT_DYN_DELETE_OBJECTS
    ext_options: int | None = POLL_EXT_PERIOD_NU_1SEC  # PollProfileExt, None: not asked

    def encode(self) -> bytes:
        packages = []
        if self.ext_options is not None:
            packages.append(
                (
                    NOM_ATTR_POLL_PROFILE_EXT,
                    struct.pack(">I", self.ext_options) + encode_attributes([]),
                )
            )
        support = struct.pack(
            ">IIIIII",
            POLL_PROFILE_REV_0,
            self.min_poll_period,
            self.max_mtu_rx,
            self.max_mtu_tx,
            self.max_bw_tx,
            self.poll_options,
        ) + encode_attributes(packages)
        return (
            struct.pack(
                ">IIIII",
                self.protocol_version,
                self.nomenclature_version,
                self.functional_units,
                self.system_type,
                self.startup_mode,
            )
            + encode_attributes([])
            + encode_attributes([(NOM_POLL_PROFILE_SUPPORT, support)])
        )

    @classmethod
    def decode(cls, r: Reader) -> UserInfo:
        pv, nv, fu, st, sm = (r.u32() for _ in range(5))
        decode_attributes(r)  # option list: nothing we use
        fields: dict[str, int | None] = {"ext_options": None}
        for aid, value in decode_attributes(r):
            if aid != NOM_POLL_PROFILE_SUPPORT:
                continue
            s = Reader(value)
            s.u32()  # poll_profile_revision
            fields.update(
                min_poll_period=s.u32(),
                max_mtu_rx=s.u32(),
                max_mtu_tx=s.u32(),
                max_bw_tx=s.u32(),
                poll_options=s.u32(),
            )
            for pid, pval in decode_attributes(s):
                if pid == NOM_ATTR_POLL_PROFILE_EXT and len(pval) >= 4:
                    fields["ext_options"] = int.from_bytes(pval[:4], "big")
        return cls(pv, nv, fu, st, sm, **fields)  # type: ignore[arg-type]


def association_request(info: UserInfo | None = None) -> bytes:
    """The Association Request message (Guide pp. 67-71 and 298, 304)."""
    user = (info or UserInfo()).encode()
    user = encode_asn_length(len(user)) + user
    pres_body = ASSOC_REQ_PRESENTATION + user + PRESENTATION_TRAILER
    pres = b"\xc1" + encode_li(len(pres_body)) + pres_body
    body = ASSOC_SESSION_DATA + pres
    return bytes([CN_SPDU]) + encode_li(len(body)) + body


def association_response(info: UserInfo) -> bytes:
    """An Association Response (Guide p. 299), as a monitor (the simulator) sends it."""
    user = info.encode()
    user = encode_asn_length(len(user)) + user
    pres_body = ASSOC_RESP_PRESENTATION + user + PRESENTATION_TRAILER
    pres = b"\xc1" + encode_li(len(pres_body)) + pres_body
    body = ASSOC_SESSION_DATA + pres
    return bytes([AC_SPDU]) + encode_li(len(body)) + body


def find_user_info(msg: bytes) -> UserInfo:
    """The MDSEUserInfoStd of an association request or response: found after the
    marker bytes the guide names (Guide p. 73 "Association Response Message")."""
    for marker in USER_DATA_MARKERS:
        at = msg.find(marker)
        if at >= 0:
            r = Reader(msg, at + len(marker))
            n = decode_asn_length(r)
            return UserInfo.decode(r.sub(n))
    raise ProtocolError("no_user_data", "association message without user data")


# --- data export commands -----------------------------------------------------------


def _sp_ro(ro_type: int, body: bytes) -> bytes:
    return struct.pack(">HHHH", SESSION_ID, P_CONTEXT_ID, ro_type, len(body)) + body


def _roiv(invoke_id: int, command: int, arg: bytes) -> bytes:
    return _sp_ro(ROIV_APDU, struct.pack(">HHH", invoke_id, command, len(arg)) + arg)


def _rors(invoke_id: int, command: int, res: bytes) -> bytes:
    return _sp_ro(RORS_APDU, struct.pack(">HHH", invoke_id, command, len(res)) + res)


MDS_OBJECT = struct.pack(">HHH", NOM_MOC_VMS_MDS, 0, 0)  # ManagedObjectId of the MDS


def mds_create_result(invoke_id: int, rel_time: int) -> bytes:
    """MDS Create Event Result (Guide p. 55; example p. 292): the client's reply to the
    monitor's MDS Create Event, echoing its invoke id."""
    res = MDS_OBJECT + struct.pack(">IHH", rel_time & 0xFFFFFFFF, NOM_NOTI_MDS_CREAT, 0)
    return _rors(invoke_id, CMD_CONFIRMED_EVENT_REPORT, res)


def mds_create_event(invoke_id: int, rel_time: int, attributes: list[tuple[int, bytes]]) -> bytes:
    """MDS Create Event (Guide p. 54; example p. 291), as a monitor sends it."""
    info = MDS_OBJECT + encode_attributes(attributes)
    arg = MDS_OBJECT + struct.pack(">IHH", rel_time & 0xFFFFFFFF, NOM_NOTI_MDS_CREAT, len(info))
    return _roiv(invoke_id, CMD_CONFIRMED_EVENT_REPORT, arg + info)


def poll_request(
    invoke_id: int,
    poll_number: int,
    obj_class: int = NOM_MOC_VMO_METRIC_NU,
    attr_group: int = 0,
) -> bytes:
    """SINGLE POLL DATA REQUEST (Guide p. 55; example p. 292)."""
    req = struct.pack(">HHHH", poll_number, NOM_PART_OBJ, obj_class, attr_group)
    arg = MDS_OBJECT + struct.pack(">IHH", 0, NOM_ACT_POLL_MDIB_DATA, len(req)) + req
    return _roiv(invoke_id, CMD_CONFIRMED_ACTION, arg)


def extended_poll_request(
    invoke_id: int,
    poll_number: int,
    obj_class: int = NOM_MOC_VMO_METRIC_NU,
    attr_group: int = NOM_ATTR_GRP_METRIC_VAL_OBS,
    attributes: list[tuple[int, bytes]] | None = None,
) -> bytes:
    """EXTENDED POLL DATA REQUEST (Guide p. 59; example p. 294). No attributes: one
    reply (the driver polls once a second); NOM_ATTR_TIME_PD_POLL would ask for
    periodic replies."""
    req = struct.pack(">HHHH", poll_number, NOM_PART_OBJ, obj_class, attr_group)
    req += encode_attributes(attributes or [])
    arg = MDS_OBJECT + struct.pack(">IHH", 0, NOM_ACT_POLL_MDIB_DATA_EXT, len(req)) + req
    return _roiv(invoke_id, CMD_CONFIRMED_ACTION, arg)


def keep_alive(invoke_id: int, poll_number: int) -> bytes:
    """Keep Alive (Guide p. 63): a poll request for the Alert Monitor's static context
    group, which the guide suggests because its confirmed reply is short."""
    return poll_request(invoke_id, poll_number, NOM_MOC_VMO_AL_MON, NOM_ATTR_GRP_VMO_STATIC)


@dataclass(frozen=True)
class Numeric:
    """One NuObsValue (Guide p. 76) with the object it came from."""

    handle: int
    physio_id: int  # SCADA partition code, e.g. 0x4182 (NOM_ECG_CARD_BEAT_RATE)
    state: int
    unit_code: int  # dimension partition code, e.g. 0x0AA0 (NOM_DIM_BEAT_PER_MIN)
    value: float | None  # None: NaN / NRes / INF
    label: int | None = None  # NOM_ATTR_ID_LABEL TextId
    time: datetime | None = None  # NOM_ATTR_TIME_STAMP_ABS of the object

    @property
    def mdc_code(self) -> int:
        return NOM_PART_SCADA << 16 | self.physio_id

    @property
    def unit_mdc(self) -> int:
        return NOM_PART_DIM << 16 | self.unit_code

    @property
    def valid(self) -> bool:
        """Valid only when the state's first octet is 0 and the value is a number (Guide p. 77)."""
        return self.state & 0xFF00 == 0 and self.value is not None

    @property
    def flags(self) -> tuple[str, ...]:
        """Why it is not valid: names of the set state bits (and `no_value`)."""
        names = tuple(n for bit, n in STATE_NAMES if self.state & bit)
        if self.value is None:
            names += ("no_value",)
        return names


def encode_numeric(n: Numeric) -> bytes:
    raw = encode_float(n.value) if n.value is not None else MANTISSA_NAN
    return struct.pack(">HHHI", n.physio_id, n.state, n.unit_code, raw)


def _decode_nu(r: Reader, handle: int, label: int | None, t: datetime | None) -> Numeric:
    pid, state, unit, raw = r.u16(), r.u16(), r.u16(), r.u32()
    return Numeric(handle, pid, state, unit, decode_float(raw), label, t)


# PatDmgState (Guide p. 103) and PatientSex (p. 105).
PT_ADMITTED = 2
PT_DISCHARGED = 8
SEX_MALE, SEX_FEMALE = 1, 2


@dataclass(frozen=True)
class Demographics:
    """The Patient Demographics object (Guide ch. 7 pp. 103-105): admission state, the
    patient (lifetime) id, sex and date of birth. Identifying: never
    logged or printed; the gateway keeps only its pseudonym of the id."""

    state: int = 0  # EMPTY 0, PRE_ADMITTED 1, ADMITTED 2, DISCHARGED 8
    patient_id: str = ""
    sex: int | None = None
    dob: datetime | None = None

    @property
    def admitted(self) -> bool:
        return self.state == PT_ADMITTED


def decode_demographics(attrs: list[tuple[int, bytes]]) -> Demographics:
    fields: dict[str, object] = {}
    for aid, value in attrs:
        if aid == NOM_ATTR_PT_DEMOG_ST and len(value) >= 2:
            fields["state"] = int.from_bytes(value[:2], "big")
        elif aid == NOM_ATTR_PT_ID:
            fields["patient_id"] = string_value(value)
        elif aid == NOM_ATTR_PT_SEX and len(value) >= 2:
            fields["sex"] = int.from_bytes(value[:2], "big")
        elif aid == NOM_ATTR_PT_DOB:
            fields["dob"] = decode_abs_time(value)
    return Demographics(**fields)  # type: ignore[arg-type]


def string_value(raw: bytes) -> str:
    """A `String` (Guide p. 39: u16 length in octets, then UNICODE u16 characters,
    0-padded), read as UTF-16 big-endian."""
    r = Reader(raw)
    n = r.u16()
    text = r.take(min(n, r.left))
    return text.decode("utf-16-be", "replace").split("\x00")[0].strip()


def encode_string(text: str, size: int) -> bytes:
    raw = text.encode("utf-16-be")[: size - 2].ljust(size, b"\x00")
    return struct.pack(">H", len(raw)) + raw


@dataclass(frozen=True)
class PollResult:
    """A (linked) poll data result (Guide pp. 56-62): header fields and its numerics."""

    invoke_id: int
    linked: int | None  # RORLS state, None for the final RORS result
    extended: bool
    poll_number: int
    sequence_no: int | None
    rel_time: int
    abs_time: datetime | None
    obj_class: int
    numerics: tuple[Numeric, ...]
    objects: int
    demographics: Demographics | None = None  # a poll of NOM_MOC_PT_DEMOG


@dataclass(frozen=True)
class MdsCreate:
    """MDS Create Event (Guide p. 54) and what its attributes say about the monitor."""

    invoke_id: int
    rel_time: int
    attributes: tuple[tuple[int, bytes], ...]
    model: str = ""
    manufacturer: str = ""
    system_id: str = ""  # NOM_ATTR_SYS_ID (MAC / EUI-64) as hex
    bed_label: str = ""
    abs_time: datetime | None = None


@dataclass(frozen=True)
class ConnectIndication:
    """CONNECT INDICATION EVENT (Guide p. 53, attributes p. 107): sent by a monitor on the
    LAN to UDP port 24005 once it can accept an association."""

    nomenclature: tuple[int, int]
    attributes: tuple[tuple[int, bytes], ...]
    manufacturer: str = ""
    model: str = ""
    system_id: str = ""
    mac: str = ""
    ip: str = ""
    data_export_port: int | None = None
    serial_number: str = ""
    part_number: str = ""


@dataclass(frozen=True)
class Message:
    """One decoded monitor message: `kind` names it; `body` the typed content, if any."""

    kind: str  # association_result refuse release_request release_result abort mds_create poll_result event error other
    body: PollResult | MdsCreate | UserInfo | None = None
    invoke_id: int | None = None
    detail: str = ""
    extras: dict[str, int] = field(default_factory=dict)


def _model(value: bytes) -> tuple[str, str]:
    """NOM_ATTR_ID_MODEL (Guide p. 101): manufacturer and model number VariableLabels."""
    r = Reader(value)
    n = r.u16()
    manufacturer = variable_label(value[: 2 + n])
    r.take(n)
    return manufacturer, variable_label(value[2 + n :])


def _mds_fields(attributes: list[tuple[int, bytes]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for aid, value in attributes:
        if aid == NOM_ATTR_ID_MODEL:
            out["manufacturer"], out["model"] = _model(value)
        elif aid == NOM_ATTR_SYS_ID:
            r = Reader(value)
            out["system_id"] = r.take(min(r.u16(), r.left)).hex(":")
        elif aid == NOM_ATTR_ID_BED_LABEL:
            out["bed_label"] = variable_label(value)
        elif aid == NOM_ATTR_TIME_ABS:
            out["abs_time"] = decode_abs_time(value)
    return out


def _event(r: Reader, invoke_id: int) -> Message:
    r.take(6)  # managed object
    rel_time, event_type, length = r.u32(), r.u16(), r.u16()
    info = r.sub(length)
    if event_type == NOM_NOTI_MDS_CREAT:
        info.take(6)
        attrs = decode_attributes(info)
        mds = MdsCreate(invoke_id, rel_time, tuple(attrs), **_mds_fields(attrs))  # type: ignore[arg-type]
        return Message("mds_create", mds, invoke_id)
    return Message("event", None, invoke_id, f"event 0x{event_type:04x}")


def _poll_result(r: Reader, invoke_id: int, linked: int | None) -> Message:
    r.take(6)  # managed object
    action, length = r.u16(), r.u16()
    if action not in (NOM_ACT_POLL_MDIB_DATA, NOM_ACT_POLL_MDIB_DATA_EXT):
        return Message("other", None, invoke_id, f"action 0x{action:04x}")
    r = r.sub(length)
    extended = action == NOM_ACT_POLL_MDIB_DATA_EXT
    poll_number = r.u16()
    seq = r.u16() if extended else None
    rel_time = r.u32()
    abs_time = decode_abs_time(r.take(8))
    r.u16()  # partition
    obj_class = r.u16()
    r.u16()  # polled attribute group
    numerics: list[Numeric] = []
    demographics: Demographics | None = None
    objects = 0
    # PollInfoList: SingleContextPoll (context_id, ObservationPoll list) (Guide p. 57).
    contexts, clen = r.u16(), r.u16()
    cr = r.sub(clen)
    for _ in range(contexts):
        cr.u16()  # context_id
        count, olen = cr.u16(), cr.u16()
        orr = cr.sub(olen)
        for _ in range(count):
            objects += 1
            handle = orr.u16()
            attrs = decode_attributes(orr)
            if obj_class == NOM_MOC_PT_DEMOG:
                demographics = decode_demographics(attrs)
                continue
            label = t = None
            for aid, value in attrs:
                if aid == NOM_ATTR_ID_LABEL and len(value) == 4:
                    label = int.from_bytes(value, "big")
                elif aid == NOM_ATTR_TIME_STAMP_ABS:
                    t = decode_abs_time(value)
            for aid, value in attrs:
                if aid == NOM_ATTR_NU_VAL_OBS:
                    numerics.append(_decode_nu(Reader(value), handle, label, t))
                elif aid == NOM_ATTR_NU_CMPD_VAL_OBS:  # NuObsValueCmp (Guide p. 77)
                    v = Reader(value)
                    n, vlen = v.u16(), v.u16()
                    vs = v.sub(vlen)
                    numerics.extend(_decode_nu(vs, handle, label, t) for _ in range(n))
    body = PollResult(
        invoke_id, linked, extended, poll_number, seq, rel_time, abs_time, obj_class,
        tuple(numerics), objects, demographics,
    )  # fmt: skip
    return Message("poll_result", body, invoke_id)


def decode_message(msg: bytes) -> Message:
    """One monitor -> client message (the user data of a frame or a UDP datagram).

    Raises ProtocolError (with a `reason`) when it does not decode."""
    if not msg:
        raise ProtocolError("empty")
    first = msg[0]
    if first == AC_SPDU:
        return Message("association_result", find_user_info(msg))
    if first == RF_SPDU:
        return Message("refuse")
    if first == FN_SPDU:
        return Message("release_request")
    if first == DN_SPDU:
        return Message("release_result")
    if first == AB_SPDU:
        return Message("abort")
    if first == CN_SPDU:
        return Message("association_request", find_user_info(msg))
    if first != DATA_SPDU:
        raise ProtocolError("unknown_session", f"0x{first:02x}")
    r = Reader(msg)
    session, _context = r.u16(), r.u16()
    if session != SESSION_ID:
        raise ProtocolError("unknown_session", f"0x{session:04x}")
    ro_type, length = r.u16(), r.u16()
    r = r.sub(length)
    linked = None
    if ro_type == RORLS_APDU:
        linked = r.u8()
        r.u8()  # count
    if ro_type in (RORS_APDU, RORLS_APDU):
        invoke_id, command, clen = r.u16(), r.u16(), r.u16()
        r = r.sub(clen)
        if command == CMD_CONFIRMED_ACTION:
            return _poll_result(r, invoke_id, linked)
        return Message("other", None, invoke_id, f"result of command {command}")
    if ro_type == ROIV_APDU:
        invoke_id, command, clen = r.u16(), r.u16(), r.u16()
        r = r.sub(clen)
        if command in (CMD_EVENT_REPORT, CMD_CONFIRMED_EVENT_REPORT):
            return _event(r, invoke_id)
        if command == CMD_CONFIRMED_ACTION:
            return Message("poll_request", None, invoke_id)
        return Message("other", None, invoke_id, f"invoke of command {command}")
    if ro_type == ROER_APDU:
        invoke_id, error = r.u16(), r.u16()
        return Message("error", None, invoke_id, f"error {error}")
    raise ProtocolError("unknown_ro_type", str(ro_type))


def poll_result_message(
    invoke_id: int,
    poll_number: int,
    rel_time: int,
    abs_time: datetime | None,
    objects: list[tuple[int, list[tuple[int, bytes]]]],
    *,
    sequence_no: int = 0,
    linked: int | None = None,
    context_id: int = 0,
) -> bytes:
    """An extended poll data result (Guide p. 61; example p. 294) carrying `objects`
    (handle, attributes), as a monitor (the simulator) sends it."""
    obs = b"".join(struct.pack(">H", h) + encode_attributes(a) for h, a in objects)
    ctx = struct.pack(">HHH", context_id, len(objects), len(obs)) + obs
    info = struct.pack(">HH", 1, len(ctx)) + ctx
    reply = (
        struct.pack(">HHI", poll_number, sequence_no, rel_time & 0xFFFFFFFF)
        + encode_abs_time(abs_time)
        + struct.pack(">HHH", NOM_PART_OBJ, NOM_MOC_VMO_METRIC_NU, NOM_ATTR_GRP_METRIC_VAL_OBS)
        + info
    )
    res = MDS_OBJECT + struct.pack(">HH", NOM_ACT_POLL_MDIB_DATA_EXT, len(reply)) + reply
    head = struct.pack(">HHH", invoke_id, CMD_CONFIRMED_ACTION, len(res))
    if linked is None:
        return _sp_ro(RORS_APDU, head + res)
    return _sp_ro(RORLS_APDU, bytes([linked, 1]) + head + res)


def numeric_attributes(n: Numeric) -> list[tuple[int, bytes]]:
    """The attributes of one numeric object in a poll result (handle, label, value)."""
    avas = [(NOM_ATTR_ID_HANDLE, struct.pack(">H", n.handle))]
    if n.label is not None:
        avas.append((NOM_ATTR_ID_LABEL, struct.pack(">I", n.label)))
    if n.time is not None:
        avas.append((NOM_ATTR_TIME_STAMP_ABS, encode_abs_time(n.time)))
    avas.append((NOM_ATTR_NU_VAL_OBS, encode_numeric(n)))
    return avas


def compound_attributes(
    handle: int, parts: list[Numeric], label: int | None = None
) -> list[tuple[int, bytes]]:
    """A compound numeric object (e.g. NBP sys/dia/mean, Guide p. 77)."""
    vals = b"".join(encode_numeric(p) for p in parts)
    avas = [(NOM_ATTR_ID_HANDLE, struct.pack(">H", handle))]
    if label is not None:
        avas.append((NOM_ATTR_ID_LABEL, struct.pack(">I", label)))
    avas.append((NOM_ATTR_NU_CMPD_VAL_OBS, struct.pack(">HH", len(parts), len(vals)) + vals))
    return avas


def decode_connect_indication(datagram: bytes) -> ConnectIndication:
    """A CONNECT INDICATION EVENT datagram (Guide p. 53; example p. 291; attributes
    "Connect Indication Attributes" p. 107): Nomenclature, ROapdus, ROIVapdu,
    EventReportArgument with event NOM_NOTI_CONN_INDIC, then an AttributeList."""
    r = Reader(datagram)
    nom = r.u32()
    if nom >> 16 != 0:
        raise ProtocolError("not_connect_indication", f"nomenclature 0x{nom:08x}")
    ro_type, length = r.u16(), r.u16()
    if ro_type != ROIV_APDU:
        raise ProtocolError("not_connect_indication", f"ro_type {ro_type}")
    r = r.sub(length)
    r.u16()  # invoke id
    command, clen = r.u16(), r.u16()
    r = r.sub(clen)
    obj_class = r.u16()
    r.take(4)
    r.u32()  # event time
    event, elen = r.u16(), r.u16()
    if command != CMD_EVENT_REPORT or event != NOM_NOTI_CONN_INDIC:
        raise ProtocolError("not_connect_indication", f"class {obj_class} event 0x{event:04x}")
    attrs = decode_attributes(r.sub(elen))
    out: dict[str, object] = {}
    for aid, value in attrs:
        if aid == NOM_ATTR_ID_MODEL:
            out["manufacturer"], out["model"] = _model(value)
        elif aid == NOM_ATTR_SYS_ID:
            v = Reader(value)
            out["system_id"] = v.take(min(v.u16(), v.left)).hex(":")
        elif aid == NOM_ATTR_NET_ADDR_INFO and len(value) >= 10:  # IpAddressInfo (p. 108)
            out["mac"] = value[:6].hex(":")
            out["ip"] = ".".join(str(b) for b in value[6:10])
        elif aid == NOM_ATTR_PCOL_SUPPORT:  # ProtoSupport (p. 108)
            v = Reader(value)
            n, plen = v.u16(), v.u16()
            entries = v.sub(plen)
            for _ in range(n):
                appl, trans, port, _opts = (entries.u16() for _ in range(4))
                if appl == AP_ID_DATA_OUT and trans == TP_ID_UDP:
                    out["data_export_port"] = port
        elif aid == NOM_ATTR_ID_PROD_SPECN:  # ProductionSpec (p. 102)
            v = Reader(value)
            n, plen = v.u16(), v.u16()
            entries = v.sub(plen)
            for _ in range(n):
                spec_type = entries.u16()
                entries.u16()  # component id
                size = entries.u16()
                text = variable_label(size.to_bytes(2, "big") + entries.take(size))
                key = {1: "serial_number", 2: "part_number"}.get(spec_type)
                if key is not None and key not in out:  # the first entry: the monitor's own
                    out[key] = text
    return ConnectIndication(((nom >> 8) & 0xFF, nom & 0xFF), tuple(attrs), **out)  # type: ignore[arg-type]
