"""IntelliVue Data Export codec: the guide's own hex examples, a real monitor's frame,
round trips with hypothesis, and corrupted frames counted and skipped (issue 16)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.intellivue import protocol as p
from edge_agent.intellivue.framing import FrameDecoder, crc16, escape, fcs, frame, raw_frame

SAMPLES = Path(__file__).parent / "samples" / "intellivue"


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace("0x", "").replace(",", " "))


# --- framing: Guide ch. 4 p. 31 "Examples" ------------------------------------------


def test_guide_fcs_examples() -> None:
    # "0x3a 0x71": CRC 0xd9 0x64 -> complemented, byte-swapped 0x9b 0x26
    assert crc16(b"\x3a\x71") == 0xD964
    assert fcs(b"\x3a\x71") == b"\x9b\x26"
    assert raw_frame(b"\x3a\x71") == _hex("c0 3a 71 9b 26 c1")
    # "0x3a 0x91": FCS 0x95 0xc1, whose 0xc1 is escaped as 0x7d 0xe1
    assert raw_frame(b"\x3a\x91") == _hex("c0 3a 91 95 7d e1 c1")


def test_escape_reserved_bytes() -> None:
    assert escape(b"\xc0\xc1\x7d\x01") == b"\x7d\xe0\x7d\xe1\x7d\x5d\x01"


def test_frame_round_trip_and_header() -> None:
    data = b"\xe1\x00\x00\x02\xc0\xc1\x7d"
    wire = frame(data)
    assert wire[0] == 0xC0 and wire[-1] == 0xC1
    assert wire.count(0xC0) == 1 and wire.count(0xC1) == 1  # the data's are escaped
    dec = FrameDecoder()
    assert dec.feed(wire) == [data]
    assert dec.stats.frames_ok == 1 and dec.stats.frames_bad == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=5),
    st.integers(min_value=1, max_value=64),
)
def test_frames_round_trip_in_any_chunking(payloads: list[bytes], chunk: int) -> None:
    wire = b"".join(frame(x) for x in payloads)
    dec = FrameDecoder()
    out = []
    for i in range(0, len(wire), chunk):
        out += dec.feed(wire[i : i + chunk])
    assert out == payloads
    assert dec.stats.frames_bad == 0 and dec.stats.noise_bytes == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.data())
def test_any_single_corruption_is_counted_never_raised(payload: bytes, data: st.DataObject) -> None:
    wire = bytearray(frame(payload))
    i = data.draw(st.integers(min_value=1, max_value=len(wire) - 2))
    wire[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    dec = FrameDecoder()
    out = dec.feed(bytes(wire) + frame(b"next"))
    # the corrupted frame is never returned (CRC-16 catches every single-byte error);
    # the next frame always is
    assert out == [b"next"]
    assert dec.stats.frames_bad >= 1


def test_bad_fcs_truncated_aborted_noise_are_counted() -> None:
    good = frame(b"hello")
    bad_fcs = bytearray(good)
    bad_fcs[6] ^= 0x01
    cut = good[:5]  # cable pulled mid-frame: the next BOF starts over
    aborted = good[:5] + b"\x7d\xc1"
    dec = FrameDecoder()
    out = dec.feed(b"\x00\x11garbage" + bytes(bad_fcs) + cut + good + aborted + good)
    assert out == [b"hello", b"hello"]
    assert dec.stats.bad["bad_fcs"] == 1
    assert dec.stats.bad["truncated"] == 1
    assert dec.stats.bad["aborted"] == 1
    assert dec.stats.noise_bytes == len(b"\x00\x11garbage")


def test_wrong_protocol_and_length_and_oversize() -> None:
    dec = FrameDecoder(max_frame=32)
    other = frame(b"x", protocol_id=0x12)
    body = bytes([0x11, 0x01, 0x00, 0x05]) + b"abc"  # header says 5, data is 3
    wrong_len = raw_frame(body)
    big = frame(bytes(100))
    assert dec.feed(other + wrong_len + big + frame(b"ok")) == [b"ok"]
    assert dec.stats.bad["unknown_type"] == 1
    assert dec.stats.bad["bad_length"] == 1
    assert dec.stats.bad["oversized"] == 1
    assert dec.buffered == 0


# --- association control: Guide ch. 10 pp. 298-304 --------------------------------

GUIDE_USER_DATA = _hex(
    "0x48 0x80 0x00 0x00 0x00 0x40 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x80 0x00 0x00 0x00"
    " 0x20 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x01 0x00 0x2c 0x00 0x01 0x00 0x28"
    " 0x80 0x00 0x00 0x00 0x00 0x00 0x09 0xc4 0x00 0x00 0x09 0xc4 0x00 0x00 0x03 0xe8"
    " 0xff 0xff 0xff 0xff 0x60 0x00 0x00 0x00 0x00 0x01 0x00 0x0c 0xf0 0x01 0x00 0x08"
    " 0x20 0x00 0x00 0x00 0x00 0x00 0x00 0x00"
)
# The guide's example user data (p. 304) in its own bytes: min_poll_period 0x9c4 and
# max_mtu_rx 0x9c4 (the prose beside it says 800000 and 1000: the bytes are what a
# monitor reads), 60-s averaged numerics as the extension option.
GUIDE_INFO = p.UserInfo(
    min_poll_period=0x9C4,
    max_mtu_rx=0x9C4,
    max_mtu_tx=1000,
    poll_options=0x60000000,
    ext_options=p.POLL_EXT_PERIOD_NU_AVG_60SEC,
)


def test_association_request_is_the_guides() -> None:
    msg = p.association_request(GUIDE_INFO)
    # "the length field of the Presentation Header must be set to 220 (0xDC) and the
    # length field of the Session Header must be set to 236 (0xEC)" (p. 304)
    assert msg[:2] == b"\x0d\xec"
    assert msg[2:16] == p.ASSOC_SESSION_DATA
    assert msg[16:18] == b"\xc1\xdc"
    assert msg[18 : 18 + 131] == p.ASSOC_REQ_PRESENTATION
    assert msg[149 : 149 + len(GUIDE_USER_DATA)] == GUIDE_USER_DATA
    assert msg[-16:] == bytes(16) and len(msg) == 2 + 236
    assert p.decode_message(msg).body == GUIDE_INFO


def test_association_response_user_data_found_and_read() -> None:
    info = p.UserInfo(system_type=p.SYST_SERVER, min_poll_period=8000, ext_options=None)
    msg = p.association_response(info)
    assert msg[0] == p.AC_SPDU
    got = p.decode_message(msg)
    assert got.kind == "association_result" and got.body == info


def test_release_and_abort_blocks() -> None:
    assert len(p.RELEASE_REQUEST) == 2 + 0x18 and len(p.ABORT) == 2 + 0x2E
    assert p.decode_message(p.RELEASE_RESPONSE).kind == "release_result"
    assert p.decode_message(p.ABORT).kind == "abort"
    assert p.decode_message(p.REFUSE).kind == "refuse"


# --- data export commands: Guide ch. 10 pp. 291-294 --------------------------------


def test_mds_create_result_is_the_guides() -> None:
    # p. 292: event_time 4736768 (0x00484700), invoke id 1
    assert p.mds_create_result(1, 4736768) == _hex(
        "0xE1 0x00 0x00 0x02 0x00 0x02 0x00 0x14 0x00 0x01 0x00 0x01 0x00 0x0e"
        " 0x00 0x21 0x00 0x00 0x00 0x00 0x00 0x48 0x47 0x00 0x0d 0x06 0x00 0x00"
    )


def test_single_poll_request_is_the_guides() -> None:
    assert p.poll_request(0, 1) == _hex(
        "0xE1 0x00 0x00 0x02 0x00 0x01 0x00 0x1c 0x00 0x00 0x00 0x07 0x00 0x16"
        " 0x00 0x21 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x0c 0x16 0x00 0x08"
        " 0x00 0x01 0x00 0x01 0x00 0x06 0x00 0x00"
    )


def test_extended_poll_request_is_the_guides() -> None:
    assert p.extended_poll_request(0, 1, attr_group=0) == _hex(
        "0xE1 0x00 0x00 0x02 0x00 0x01 0x00 0x20 0x00 0x00 0x00 0x07 0x00 0x1a"
        " 0x00 0x21 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0x00 0xf1 0x3b 0x00 0x0c"
        " 0x00 0x01 0x00 0x01 0x00 0x06 0x00 0x00 0x00 0x00 0x00 0x00"
    )


def test_extended_poll_result_header_is_the_guides() -> None:
    # p. 294: poll_number 1, sequence_no 0, rel_time 4766464, invalid absolute time
    msg = p.poll_result_message(0, 1, 4766464, None, [])
    assert msg[:4] == _hex("E1 00 00 02") and msg[4:6] == b"\x00\x02"
    assert msg[8:12] == _hex("00 00 00 07")
    assert msg[14:24] == _hex("0x00 0x21 0x00 0x00 0x00 0x00 0xf1 0x3b") + msg[22:24]
    assert msg[24:42] == _hex(
        "0x00 0x01 0x00 0x00 0x00 0x48 0xbb 0x00 0xff 0xff 0xff 0xff 0xff 0xff 0xff 0xff 0x00 0x01"
    )
    got = p.decode_message(msg).body
    assert isinstance(got, p.PollResult)
    assert (got.poll_number, got.sequence_no, got.rel_time, got.abs_time) == (1, 0, 4766464, None)


def test_float_type() -> None:
    # mantissa * 10**exponent, both two's complement (Guide p. 40)
    assert p.decode_float(0xFF00_0173) == pytest.approx(37.1)  # exp -1, mantissa 371
    assert p.decode_float(0x0000_003C) == 60.0
    assert p.decode_float(0xFEFF_FFFF) == pytest.approx(-0.01)
    for special in (0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002):
        assert p.decode_float(special) is None  # NaN, NRes, +INF, -INF


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-8000, max_value=8000, allow_nan=False), st.integers(0, 3))
def test_float_round_trip(value: float, decimals: int) -> None:
    raw = p.encode_float(value, decimals)
    assert p.decode_float(raw) == pytest.approx(round(value, decimals), abs=10**-decimals)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0x4182, 0x4BB8, 0x4A05, 0x500A, 0x4B48, 0x4822]),
            st.integers(0, 0xFFFF),
            st.sampled_from([0x0AA0, 0x0220, 0x0F20, 0x17A0, 0x0AE0]),
            st.one_of(st.none(), st.floats(0, 400, allow_nan=False).map(lambda v: round(v, 1))),
        ),
        max_size=12,
    ),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
)
def test_poll_result_round_trip(rows: list, poll_number: int, rel_time: int) -> None:
    t = datetime(2026, 12, 1, 4, 5, 6, tzinfo=UTC)
    nums = [
        p.Numeric(handle=i + 1, physio_id=pid, state=state, unit_code=unit, value=v)
        for i, (pid, state, unit, v) in enumerate(rows)
    ]
    msg = p.poll_result_message(
        7, poll_number, rel_time, t, [(n.handle, p.numeric_attributes(n)) for n in nums]
    )
    got = p.decode_message(frame_and_back(msg)).body
    assert isinstance(got, p.PollResult)
    assert (got.invoke_id, got.poll_number, got.rel_time, got.abs_time) == (
        7,
        poll_number,
        rel_time,
        t,
    )
    assert len(got.numerics) == len(nums)
    for a, b in zip(got.numerics, nums, strict=True):
        assert (a.handle, a.physio_id, a.state, a.unit_code) == (
            b.handle,
            b.physio_id,
            b.state,
            b.unit_code,
        )
        assert (a.value is None) == (b.value is None)
        if b.value is not None:
            assert a.value == pytest.approx(b.value)


def frame_and_back(msg: bytes) -> bytes:
    (out,) = FrameDecoder().feed(frame(msg))
    return out


def test_compound_nbp_and_validity() -> None:
    nbp = [
        p.Numeric(9, 0x4A05, 0, 0x0F20, 120.0),
        p.Numeric(9, 0x4A06, 0, 0x0F20, 80.0),
        p.Numeric(9, 0x4A07, p.DEMO_DATA, 0x0F20, 93.0),
    ]
    msg = p.poll_result_message(1, 2, 0, None, [(9, p.compound_attributes(9, nbp))])
    got = p.decode_message(msg).body
    assert isinstance(got, p.PollResult)
    assert [n.value for n in got.numerics] == [120.0, 80.0, 93.0]
    assert [n.valid for n in got.numerics] == [True, True, False]
    assert got.numerics[2].flags == ("demo_data",)
    assert got.numerics[0].mdc_code == 150021  # MDC_PRESS_BLD_NONINV_SYS
    assert got.numerics[0].unit_mdc == 266016  # MDC_DIM_MMHG
    for bit in (p.INVALID, p.QUESTIONABLE, p.UNAVAILABLE, p.CALIBRATION_ONGOING, p.TEST_DATA):
        assert not p.Numeric(1, 0x4182, bit, 0x0AA0, 60.0).valid
    # alarm bits (second octet) do not make a value invalid (Guide p. 77)
    assert p.Numeric(1, 0x4182, p.MSMT_STATE_IN_ALARM, 0x0AA0, 150.0).valid


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_message_raises_only_protocol_error(data: bytes) -> None:
    for head in (b"", b"\xe1\x00\x00\x02", b"\xe1\x00\x00\x02\x00\x02", b"\x0e"):
        with contextlib.suppress(p.ProtocolError):
            p.decode_message(head + data)


# --- a real monitor's frame ---------------------------------------------------------


def _wireshark_hex(path: Path) -> bytes:
    out = bytearray()
    for line in path.read_text().splitlines():
        if line.strip():
            out += bytes.fromhex(line[7:55])
    return bytes(out)


def test_real_connect_indication_decodes_to_the_publishers_monitor() -> None:
    packet = _wireshark_hex(SAMPLES / "koshsky_connect_indication.txt")
    assert len(packet) == 14 + 0x1BE  # Ethernet header + the IPv4 total length
    ci = p.decode_connect_indication(packet[14 + 20 + 8 :])  # Ethernet, IPv4, UDP headers
    # the publisher's client connects to 192.168.247.101:24105 (SOURCES.md)
    assert (ci.ip, ci.data_export_port) == ("192.168.247.101", 24105)
    assert ci.nomenclature == (1, 0)
    assert ci.manufacturer == "Philips" and ci.model == "866062"  # MX800's product number
    assert ci.mac == "00:09:fb:88:c1:bd"
    assert ci.serial_number == "DE351A4061"
    assert len(ci.attributes) == 16
    with pytest.raises(p.ProtocolError):
        p.decode_connect_indication(packet[14 + 20 + 8 : 14 + 20 + 8 + 40])


def test_real_monitor_patient_demographics_frame_mindleaving() -> None:
    """A real monitor's Patient Demographics poll result as one MIB/RS-232 frame, logged
    by the publisher's datalogger (base64 of the de-escaped frame, BOF to EOF) when
    their own parser failed on it ("out of the range of valid values"); provenance in
    SOURCES.md. Its FCS checks, and our codec decodes it."""
    import base64

    from edge_agent.intellivue.driver import Session

    text = (SAMPLES / "mindleaving_patient_demographics_frame.txt").read_text()
    raw = base64.b64decode(text.split("Faulty data: ", 1)[1].strip())
    assert raw[0] == 0xC0 and raw[-1] == 0xC1 and len(raw) == 300
    header, body, check = raw[1:5], raw[5:-3], raw[-3:-1]
    assert header == bytes([0x11, 0x01, 0x01, 0x24]) and len(body) == 0x124
    assert fcs(header + body) == check  # the monitor's own frame check sequence
    msg = p.decode_message(body)
    assert msg.kind == "poll_result" and msg.body.obj_class == 42  # NOM_MOC_PT_DEMOG
    demog = msg.body.demographics
    # the publisher's monitor: an admitted patient, id "123", female, no birth date set
    assert (demog.state, demog.patient_id, demog.sex, demog.dob) == (2, "123", 2, None)
    # on the wire (escaped again: the frame holds a 0xC0 byte), through the frame reader
    frames = FrameDecoder()
    (got,) = frames.feed(b"\xc0" + escape(header + body + check) + b"\xc1")
    assert got == body and frames.stats.frames_ok == 1
    s = Session("bed-1")
    s.state = "polling"
    assert s.receive(got) == [] and s.stay == "123"
    assert s.static(datetime(2026, 1, 1, tzinfo=UTC))["Gender"] == 0.0


def _jaj42(name: str) -> list[bytes]:
    text = (SAMPLES / name).read_text()
    return [bytes.fromhex(x.strip()) for x in text.splitlines() if x.strip() and x[0] != "#"]


def test_real_monitor_exchange_jaj42_against_the_publishers_inventory() -> None:
    """Real UDP payloads of a Philips M8000 (jaj42/intellipy, MIT; SOURCES.md): the MDS
    create event and the numerics poll answered in two linked parts. The publisher's
    own tests pin 20 numeric objects and these handles for HR, SpO2, pleth pulse,
    Resp, ABP and NBP; we decode the same, and the monitor was in demo mode, so every
    numeric carries DEMO_DATA and the driver scores none of them."""
    from edge_agent.intellivue.driver import Session

    mds, part1, part2, final = (
        p.decode_message(m) for m in _jaj42("jaj42_enumeration_replies.hex")[:4]
    )
    assert mds.kind == "mds_create"
    assert (mds.body.manufacturer, mds.body.model) == ("Philips", "M8000")
    parts = [part1.body, part2.body]
    assert [r.linked for r in parts] == [1, 3] and final.body.linked is None  # first, last
    assert sum(r.objects for r in parts) == 20  # the publisher's EXPECTED_COUNTS
    numerics = [n for r in parts for n in r.numerics]
    by_handle: dict[int, set[int]] = {}
    for n in numerics:
        by_handle.setdefault(n.handle, set()).add(n.physio_id)
    # the publisher's EXPECTED_NUMERICS handles, with the guide's physio ids
    assert by_handle[33459] == {0x4182}  # Heart Rate: NOM_ECG_CARD_BEAT_RATE
    assert by_handle[33749] == {0x4BB8}  # SpO2: NOM_PULS_OXIM_SAT_O2
    assert by_handle[33756] == {0x4822}  # pulse from the pleth: NOM_PLETH_PULS_RATE
    assert by_handle[33466] == {0x500A}  # Respiration Rate: NOM_RESP_RATE
    assert by_handle[35098] == {0x4A15, 0x4A16, 0x4A17}  # ABP sys/dia/mean
    assert by_handle[33386] == {0x4A05, 0x4A06, 0x4A07}  # NBP sys/dia/mean
    assert all(n.state & 0x0400 for n in numerics)  # DEMO_DATA, Guide p. 77
    s = Session("bed-1")
    s.state = "polling"
    s.receive(_jaj42("jaj42_enumeration_replies.hex")[0])
    (r,) = [x for m in _jaj42("jaj42_enumeration_replies.hex")[1:4] for x in s.receive(m)]
    assert r.values == {}  # demo data is never a value
    assert {r.quality[v] for v in ("HR", "O2Sat", "Resp", "SBP", "DBP", "MAP")} == {"demo_data"}
    assert r.monitor_id == "M8000" and r.obs_time.year == 2017


def test_real_monitor_discharged_demographics_jaj42() -> None:
    """The same monitor's Patient Demographics reply: the publisher's test says
    DISCHARGED, no patient id, SEX_UNKNOWN, no birth date; so do we, and the driver
    files no reading under a patient."""
    from edge_agent.intellivue.driver import Session

    (raw,) = _jaj42("jaj42_ptdemog_reply.hex")
    msg = p.decode_message(raw)
    assert msg.kind == "poll_result" and msg.body.obj_class == 42
    d = msg.body.demographics
    assert (d.state, d.patient_id, d.sex, d.dob) == (8, "", 0, None)  # 8: DISCHARGED
    s = Session("bed-1")
    s.state = "polling"
    s.receive(raw)
    assert s.stay == "" and s.static(datetime(2026, 1, 1, tzinfo=UTC))["Gender"] is None
