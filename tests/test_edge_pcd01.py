"""edge_agent/pcd01.py on real PCD-01 messages (tests/samples/hl7, see SOURCES.md there).

Each sample asserts what the gateway extracts (vitals in catalogue units, times in UTC,
static features) and why each other OBX is set aside, not only that it is accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import hl7
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.mdc import site_vocabulary
from contracts.mllp import frame
from edge_agent.pcd01 import (
    MessageError,
    Pcd01Message,
    build_ack,
    parse_hl7_time,
    parse_message,
    to_readings,
)
from tests import samples


def _vitals(m: Pcd01Message) -> dict[str, float | None]:
    return {o.vital: o.value for o in m.observations}


def _aside(m: Pcd01Message) -> dict[str, str]:
    """OBX position -> reason (the reason's first word)."""
    return {a.segment: a.reason.split(":")[0] for a in m.set_aside}


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _parse(name: str, **kw: object) -> Pcd01Message:
    return parse_message(samples.load(name), **kw)


# -- the real samples -----------------------------------------------------------------


def test_01_ge_aware_gateway_arterial_line_and_pulmonary_pressures() -> None:
    m = _parse("01")
    assert (m.control_id, m.message_type, m.version) == (
        "12d15a9:11df9e61347:-7fee:30456965",
        "ORU^R01",
        "2.6",
    )
    assert (m.sending_app, m.sending_facility) == ("HL7", "MMS")
    assert m.device_ids == ("080019FFFF4F6AC0",)
    assert _vitals(m) == {"HR": 60.0, "MAP": 92.0, "SBP": 120.0, "DBP": 80.0}
    assert {o.vital: o.source for o in m.observations} == {
        "HR": "ecg",
        "MAP": "abp",
        "SBP": "abp",
        "DBP": "abp",
    }
    # no offset: read in the site's zone (UTC by default), from MSH-7 via OBR-7
    assert {o.obs_time for o in m.observations} == {datetime(2008, 12, 11, 14, 45, tzinfo=UTC)}
    assert _aside(m) == {
        "OBX 2": "not_a_model_vital",  # PVC count
        "OBX 6": "duplicate_lower_priority",  # invasive pulse rate vs ECG heart rate
        "OBX 7": "not_a_model_vital",  # pulmonary artery pressures
        "OBX 8": "not_a_model_vital",
        "OBX 9": "not_a_model_vital",
    }
    assert m.patient_id == "AB60001" and m.age is None and m.sex is None
    assert (m.location, m.bed_label) == ("3 WEST ICU^3001^1", "1")


def test_01_in_the_site_time_zone() -> None:
    m = _parse("01", tz=timezone(timedelta(hours=-5)))
    assert m.observations[0].obs_time == datetime(2008, 12, 11, 19, 45, tzinfo=UTC)


def test_02_nibp_with_plus0500_offsets_is_read_in_utc() -> None:
    m = _parse("02")
    assert _vitals(m) == {"SBP": 120.0, "DBP": 80.0, "MAP": 100.0}
    # OBR-7 20090813095715+0500 -> 04:57:15 UTC; MSH-7 20090713090030+0500
    assert {o.obs_time for o in m.observations} == {datetime(2009, 8, 13, 4, 57, 15, tzinfo=UTC)}
    assert m.msg_time == datetime(2009, 7, 13, 4, 0, 30, tzinfo=UTC)
    assert _aside(m) == {"OBX 1": "container", "OBX 2": "container"}  # MDS and VMD rows
    assert m.device_ids == ("ACDE48234567ABCD", "0123456789ABCDEF")
    assert (m.patient_id, m.sex) == ("789567", 1.0)


def test_03_maximum_fixture_statuses_groups_and_malformed_codes() -> None:
    m = _parse("03")
    # OBX 3 status C at its own OBX-14; OBX 4 status D (deleted); OBX 5 status F at OBR-7
    assert _vitals(m) == {"SBP": 140.0, "MAP": 100.0}
    times = {o.vital: o.obs_time for o in m.observations}
    assert times == {
        "SBP": datetime(2009, 8, 13, 4, 57, 25, tzinfo=UTC),
        "MAP": datetime(2009, 8, 13, 4, 57, 15, tzinfo=UTC),
    }
    assert {o.vital: o.status for o in m.observations} == {"SBP": "C", "MAP": "F"}
    assert _aside(m) == {
        "OBX 1": "unknown_code",  # the device profile code carrying a number
        "OBX 2": "container",
        "OBX 4": "status_D",
        "OBX 6": "container",  # second OBR group: 7-digit malformed codes
        "OBX 7": "container",
        "OBX 8": "unknown_code",
        "OBX 9": "unknown_code",
        "OBX 10": "unknown_code",
    }
    assert (m.patient_id, m.age, m.sex, m.bed_label) == ("111222333444", 32.0, 1.0, "")
    readings = to_readings(m, "bed-1", "mon", 7)
    assert [(r.obs_time, r.values) for r in readings] == [
        (datetime(2009, 8, 13, 4, 57, 15, tzinfo=UTC), {"MAP": 100.0}),
        (datetime(2009, 8, 13, 4, 57, 25, tzinfo=UTC), {"SBP": 140.0}),
    ]


def test_04_continua_oximeter_decimal_spo2_and_pleth_waveform() -> None:
    m = _parse("04")
    assert _vitals(m) == {"O2Sat": 80.5}
    assert m.observations[0].obs_time == datetime(2009, 7, 15, 7, 7, 7, tzinfo=UTC)
    assert _aside(m) == {"OBX 1": "container", "OBX 3": "not_a_model_vital"}
    assert m.patient_id == "789567"


def test_05_oral_temperature_in_fahrenheit_becomes_celsius() -> None:
    m = _parse("05")
    (o,) = m.observations
    assert (o.vital, o.source, o.status) == ("Temp", "oral", "R")
    assert o.value == pytest.approx(37.0)  # 98.6 °F
    assert _aside(m) == {"OBX 1": "container"}


def test_06_philips_pic_ix_example_with_spaces_and_negative_offset() -> None:
    m = _parse("06")
    assert _vitals(m) == {"HR": 60.0}  # 147842 spelled MDC_ECG_CARD_BEAT_RATE
    assert m.observations[0].obs_time == datetime(2021, 4, 26, 3, 3, 31, 496000, tzinfo=UTC)
    assert m.msg_time == datetime(2021, 4, 26, 3, 3, 32, 872000, tzinfo=UTC)
    assert _aside(m) == {
        "OBX 1": "container",
        "OBX 2": "container",
        "OBX 3": "container",
        "OBX 5": "unknown_code",  # rhythm enumeration (ST)
        "OBX 6": "unknown_code",  # filter label
        "OBX 7": "unknown_code",  # ECG waveform (NA), cut short in the source
    }
    assert (m.sending_app, m.patient_id, m.age, m.sex) == (
        "SendingApplication",
        "12345",
        50.0,
        None,
    )
    assert (m.location, m.bed_label) == ("My Unit^^Bed1^Institution", "Bed1")


def test_07_philips_mdil_hr_spo2_and_an_older_nbp_give_two_readings() -> None:
    m = _parse("07")
    assert (m.version, m.message_type, m.control_id) == (
        "2.3",
        "ORU^R01",
        "HP0802104821735B02WIN835",
    )
    assert _vitals(m) == {"O2Sat": 98.0, "SBP": 117.0, "DBP": 88.0, "MAP": 98.0, "HR": 80.0}
    by = {o.vital: o for o in m.observations}
    assert (by["HR"].source, by["HR"].code) == ("ecg", "0002-4182^HR^MDIL")
    assert by["SBP"].source == "nibp"
    # MSH-7 is empty: the message time is OBR-7; NBP has its own older OBX-14
    assert m.msg_time == datetime(2016, 8, 2, 10, 48, 21, tzinfo=UTC)
    assert by["SBP"].obs_time == datetime(2016, 8, 2, 10, 15, tzinfo=UTC)
    aside = _aside(m)
    assert aside["OBX 4"] == "duplicate_lower_priority"  # Pulse (SpO2) vs ECG HR
    assert aside["OBX 5"] == "not_a_model_vital"  # perfusion
    assert aside["OBX 9"] == "unknown_code"  # Pulse (NBP), Philips private term
    assert {aside[f"OBX {n}"] for n in (1, 2, *range(11, 20))} == {"unknown_code"}
    assert len(aside) == 14  # 19 OBX, 5 used
    assert (m.patient_id, m.age, m.sex) == ("2132436", 73.0, 0.0)
    assert (m.location, m.bed_label) == ("ICU/PCU^^iDemo3&0&0", "iDemo3")

    readings = to_readings(m, "bed-3", "piic", 42)
    assert [(r.obs_time, r.values) for r in readings] == [
        (datetime(2016, 8, 2, 10, 15, tzinfo=UTC), {"SBP": 117.0, "DBP": 88.0, "MAP": 98.0}),
        (datetime(2016, 8, 2, 10, 48, 21, tzinfo=UTC), {"O2Sat": 98.0, "HR": 80.0}),
    ]
    r = readings[0]
    assert (r.bed, r.stay, r.monitor_id, r.seq, r.icu_admit) == (
        "bed-3",
        "2132436",
        "piic",
        42,
        None,
    )
    assert r.static == {"Age": 73.0, "Gender": 0.0, "HospAdmTime": None, "ICULOS": None}


def test_07_site_priority_can_prefer_the_oximeter_pulse() -> None:
    vocab = site_vocabulary(priority={"HR": ["spo2", "ecg"]})
    m = _parse("07", vocabulary=vocab)
    by = {o.vital: o for o in m.observations}
    assert (by["HR"].source, by["HR"].priority, by["HR"].code) == (
        "spo2",
        1,
        "0002-4822^Pulse (SpO2)^MDIL",
    )
    assert _aside(m)["OBX 10"] == "duplicate_lower_priority"  # now the ECG one


def test_07_site_mapping_reads_a_private_code() -> None:
    vocab = site_vocabulary(
        [{"system": "MDIL", "code": "0002-f0e5", "vital": "HR", "source": "nibp"}]
    )
    m = _parse("07", vocabulary=vocab)
    assert _aside(m)["OBX 9"] == "duplicate_lower_priority"  # known now, but ECG HR wins
    assert {o.vital: o.source for o in m.observations}["HR"] == "ecg"


def test_08_empty_pid_with_hl7_nulls_arterial_line() -> None:
    m = _parse("08")
    assert _vitals(m) == {
        "HR": 60.0,
        "Resp": 11.0,
        "MAP": 86.0,
        "SBP": 112.0,
        "DBP": 62.0,
        "O2Sat": 99.0,
    }
    assert {o.vital: o.source for o in m.observations}["SBP"] == "abp"
    assert (m.patient_id, m.age, m.sex) == ("", None, None)  # PID-3/7/8 are ""
    assert _aside(m) == {
        "OBX 1": "unknown_code",
        "OBX 2": "unknown_code",
        "OBX 4": "not_a_model_vital",  # PVC
        "OBX 10": "duplicate_lower_priority",  # Pulse (SpO2)
        "OBX 11": "not_a_model_vital",  # Perf
        "OBX 12": "unknown_code",  # ICPm -1
        "OBX 13": "unknown_code",  # rhythm status text
    }
    (r,) = to_readings(m, "b", "m", 1)
    assert r.stay == "" and r.static["Age"] is None


def test_09_alarms_inops_and_st_rows_are_set_aside() -> None:
    m = _parse("09")
    assert _vitals(m) == {"HR": 120.0, "Resp": 40.0}
    aside = _aside(m)
    assert [aside[f"OBX {n}"] for n in (2, 3, 4, 5)] == ["unknown_code"] * 4  # MDIL-ALERT
    assert aside["OBX 21"] == "not_a_model_vital"  # PAPm
    assert len(aside) == 21 and (m.age, m.sex) == (83.0, 1.0)


def test_10_nmd_keepalive_is_rejected_with_an_ack() -> None:
    body = samples.load("10")
    with pytest.raises(MessageError) as ei:
        parse_message(body)
    e = ei.value
    assert (e.ack_code, e.reason, e.hl7_error[0]) == ("AR", "unsupported_type", "200")
    ack = hl7.parse(build_ack(body, e.ack_code, error=e).decode("ascii"))
    assert str(ack.segment("MSA")(1)) == "AR"
    assert str(ack.segment("MSA")(2)) == "HP0802104856591B02WIN879"
    assert str(ack.segment("MSH")(9)) == "ACK"  # NMD has no trigger event
    assert str(ack.segment("MSH")(12)) == "2.3"
    err = ack.segment("ERR")
    assert str(err(3)) == "200^Unsupported message type^HL70357"
    assert str(err(4)) == "E"
    assert "NMD" in ack.unescape(str(err(8)))


def test_11_suresigns_spot_check_v24_time_from_obr7() -> None:
    m = _parse("11")
    assert (m.version, m.sending_app, m.device_ids) == ("2.4", "", ("SureSignsVS",))
    assert _vitals(m) == {"O2Sat": 97.0, "HR": 105.0}
    assert {o.obs_time for o in m.observations} == {datetime(2023, 5, 5, 7, 42, 21, tzinfo=UTC)}
    assert m.msg_time == datetime(2023, 6, 29, 9, 47, 36, tzinfo=UTC)
    assert m.set_aside == () and m.bed_label == "6" and m.patient_id == "4"


@pytest.mark.parametrize("name", ["12", "13"])
def test_12_13_mindray_alarm_messages_are_rejected_unsupported(name: str) -> None:
    with pytest.raises(MessageError) as ei:
        _parse(name)
    e = ei.value
    assert (e.ack_code, e.reason, e.hl7_error) == (
        "AR",
        "unsupported_type",
        ("201", "Unsupported event code"),
    )
    ack = hl7.parse(build_ack(samples.load(name), "AR", error=e).decode())
    assert str(ack.segment("MSH")(9)) == "ACK^R40^ACK"
    # sending/receiving swapped: the monitor is the ACK's receiving application
    assert str(ack.segment("MSH")(5)).startswith("MINDRAY_")


def test_14_mindray_waveform_message_has_no_vital() -> None:
    m = _parse("14")
    assert m.observations == ()
    # MSH-7 20260124131540000+0800: milliseconds without a dot, then the offset
    assert m.msg_time == datetime(2026, 1, 24, 5, 15, 40, tzinfo=UTC)
    assert set(_aside(m).values()) == {"unknown_code", "not_a_model_vital"}
    assert m.device_ids == ("00A037000000",)
    assert (m.location, m.bed_label) == ("HDU^507^3", "3")
    assert to_readings(m, "b", "m", 1) == []


def test_every_real_sample_parses_or_is_rejected_by_type() -> None:
    accepted = {}
    for name in samples.REAL:
        try:
            accepted[name[:2]] = len(_parse(name).observations)
        except MessageError as e:
            assert e.reason == "unsupported_type", name
    assert set(accepted) == {f"{n:02d}" for n in range(1, 15)} - {"10", "12", "13"}
    assert sum(accepted.values()) == 4 + 3 + 2 + 1 + 1 + 1 + 5 + 6 + 2 + 2 + 0


# -- the built vendor-style messages --------------------------------------------------


def test_b01_ge_style_kpa_and_fahrenheit_converted() -> None:
    m = _parse("b01")
    v = _vitals(m)
    assert v["SBP"] == pytest.approx(120.0, abs=0.05)  # 16.0 kPa
    assert v["DBP"] == pytest.approx(80.26, abs=0.01)  # 10.7 kPa
    assert v["MAP"] == pytest.approx(93.0, abs=0.05)  # 12.4 kPa
    assert v["Temp"] == pytest.approx(37.0)  # 98.6 [degF]; the second channel set aside
    assert (v["HR"], v["O2Sat"], v["Resp"]) == (72.0, 97.0, 30.0)  # first of two RR
    assert _aside(m) == {
        "OBX 1": "container",
        "OBX 2": "container",
        "OBX 4": "not_a_model_vital",
        "OBX 6": "container",
        "OBX 10": "duplicate_lower_priority",
        "OBX 13": "duplicate_lower_priority",
    }
    assert (m.sending_app, m.sending_facility, m.device_ids) == (
        "VSP",
        "GE Healthcare",
        ("080019FFFE1443EC",),
    )
    assert (m.patient_id, m.age, m.sex, m.bed_label) == ("MRN0042", 52.0, 1.0, "BED07")
    assert [len(r.values) for r in to_readings(m, "b", "m", 1)] == [3, 4]


def test_b02_mindray_style_sentinels_are_absent_not_numbers() -> None:
    m = _parse("b02")
    assert _vitals(m) == {"Resp": 16.0, "SBP": 128.0, "MAP": 94.0, "Temp": 36.8}
    aside = _aside(m)
    assert aside == {
        "OBX 1": "sentinel",  # HR -100
        "OBX 2": "sentinel",  # SpO2 32767
        "OBX 3": "unknown_code",  # 99MNDRY private pulse, no site mapping
        "OBX 6": "sentinel",  # DBP -100
        "OBX 9": "unknown_code",
    }
    assert {o.vital: o.obs_time for o in m.observations}["SBP"] == datetime(
        2026, 1, 24, 5, 5, 12, tzinfo=UTC
    )


def test_b02_a_site_mapping_gives_the_private_pulse_when_the_ecg_has_none() -> None:
    vocab = site_vocabulary(
        [{"system": "99MNDRY", "code": "200001", "vital": "HR", "source": "spo2"}]
    )
    m = _parse("b02", vocabulary=vocab)
    by = {o.vital: o for o in m.observations}
    assert (by["HR"].value, by["HR"].source, by["HR"].priority) == (78.0, "spo2", 5)


def test_b03_every_set_aside_reason_and_crlf() -> None:
    m = _parse("b03")
    v = _vitals(m)
    assert v == {"HR": 88.0, "O2Sat": 95.0, "Resp": 14.0, "Temp": None, "SBP": 121.0, "MAP": 85.0}
    assert {o.vital: o.status for o in m.observations}["Temp"] == "X"  # device: not available
    assert _aside(m) == {
        "OBX 7": "status_W",
        "OBX 8": "missing_unit",
        "OBX 9": "unknown_unit",
        "OBX 10": "wrong_unit",
        "OBX 11": "not_numeric",  # empty NM
        "OBX 12": "sentinel",  # HL7 null ""
        "OBX 13": "not_numeric",  # "n/a"
        "OBX 14": "not_numeric",  # CWE
        "OBX 15": "waveform",  # NA
        "OBX 16": "bad_time",  # OBX-14 "2025-03-01"
        "OBX 17": "duplicate_lower_priority",
        "OBX 18": "not_a_model_vital",
        "OBX 19": "unknown_code",
        "OBX 20": "not_a_model_vital",
        "OBX 21": "container",
    }
    assert m.msg_time == datetime(2025, 3, 1, 7, 0, 0, 500000, tzinfo=UTC)
    assert m.icu_admit == datetime(2025, 2, 28, 19, tzinfo=UTC)
    assert (m.patient_id, m.age, m.sex, m.bed_label) == ("S-123", 45.0, 0.0, "B5")
    (r,) = to_readings(m, "b", "m", 1)
    assert r.static["ICULOS"] == pytest.approx(11 + 59 / 60 + 55 / 3600)
    assert r.values["Temp"] is None and "DBP" not in r.values  # missing stays missing


def test_b04_latin1_message_with_lf_ends() -> None:
    m = _parse("b04")
    v = _vitals(m)
    assert v["Temp"] == pytest.approx((99.1 - 32) * 5 / 9)  # "°F" in Latin-1
    assert (v["HR"], v["O2Sat"], v["Resp"]) == (64.0, 96.0, 17.0)
    assert _aside(m) == {"OBX 3": "unknown_code"}
    assert (m.location, m.bed_label) == ("Intensivstation Süd^^Bett 3&0&0", "Bett 3")


def test_b05_orf_r04_query_response() -> None:
    m = _parse("b05")
    assert (m.message_type, m.version, m.control_id) == ("ORF^R04", "2.4", "MONITORABC000000002")
    assert _vitals(m) == {
        "HR": 71.0,
        "O2Sat": 98.0,
        "SBP": 124.0,
        "DBP": 76.0,
        "MAP": 92.0,
        "Temp": 37.1,
    }
    assert m.set_aside == () and m.device_ids == ("EfficiaCM",)
    ack = hl7.parse(build_ack(samples.load("b05"), "AA").decode())
    assert str(ack.segment("MSH")(9)) == "ACK^R04^ACK"
    assert str(ack.segment("MSA")(2)) == "MONITORABC000000002"


# -- message-level errors, ACKs, times ------------------------------------------------

OK_MSG = (
    "MSH|^~\\&|MON|WARD|||20250301080000+0000||ORU^R01^ORU_R01|C1|P|{ver}||||||{cs}\r"
    "PID|||P1||Doe^J||{birth}|M\r"
    "OBR|1||||||20250301080000+0000\r"
    "OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|70|/min|||||R\r"
)


def _msg(ver: str = "2.6", cs: str = "", birth: str = "19700101") -> bytes:
    return OK_MSG.format(ver=ver, cs=cs, birth=birth).encode()


@pytest.mark.parametrize(
    ("body", "reason", "ack"),
    [
        (b"", "not_hl7", "AE"),
        (b"hello world", "not_hl7", "AE"),
        (b"MSH|^^^^|x", "bad_msh", "AE"),
        (_msg().replace(b"ORU^R01^ORU_R01", b"ADT^A01"), "unsupported_type", "AR"),
        (_msg(ver="2.2"), "unsupported_version", "AR"),
        (_msg(ver="2.7"), "unsupported_version", "AR"),
        (_msg().replace(b"|C1|", b"||"), "bad_msh", "AE"),
        (_msg().replace(b"20250301080000+0000||ORU", b"2025-03-01||ORU"), "bad_time", "AE"),
        (_msg(cs="UNICODE UTF-8").replace(b"Doe", b"D\xff\xfe"), "bad_encoding", "AE"),
        (_msg(cs="KOI8-R"), "unsupported_charset", "AR"),
    ],
)
def test_unusable_messages(body: bytes, reason: str, ack: str) -> None:
    with pytest.raises(MessageError) as ei:
        parse_message(body)
    assert (ei.value.reason, ei.value.ack_code) == (reason, ack)
    out = hl7.parse(build_ack(body, ack, error=ei.value).decode("ascii"))
    assert str(out.segment("MSA")(1)) == ack
    assert str(out.segment("ERR")(4)) == "E"
    assert str(out.segment("ERR")(3)).endswith("^HL70357")


@pytest.mark.parametrize("ver", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6"])
def test_versions_23_to_26(ver: str) -> None:
    assert _vitals(parse_message(_msg(ver=ver))) == {"HR": 70.0}


def test_message_type_without_structure_and_latin1() -> None:
    body = _msg(cs="8859/1").replace(b"ORU^R01^ORU_R01", b"ORU^R01").replace(b"Doe", b"D\xf6e")
    assert parse_message(body).message_type == "ORU^R01"


def test_other_separators_from_msh() -> None:
    body = _msg().replace(b"|", b"#").replace(b"^", b"$").replace(b"MSH#$~\\&", b"MSH#$~\\&")
    m = parse_message(body)
    assert _vitals(m) == {"HR": 70.0} and m.observations[0].code == "147842^MDC_ECG_HEART_RATE^MDC"


def test_birth_date_as_date_time_and_unreadable() -> None:
    assert parse_message(_msg(birth="197003021230")).age == 54.0  # 55 the next day
    m = parse_message(_msg(birth="1970-01-01"))
    assert m.age is None and _aside(m) == {"PID-7": "bad_birth_date"}


def test_no_pid_value_in_errors() -> None:
    secret = b"SECRET-ID-77"
    body = _msg().replace(b"P1", secret).replace(b"|C1|", b"||")
    with pytest.raises(MessageError) as ei:
        parse_message(body)
    assert "SECRET" not in str(ei.value)
    ack = build_ack(body, "AE", error=ei.value)
    assert b"SECRET" not in ack


def test_ack_aa_structure() -> None:
    body = samples.load("02")
    now = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    ack = hl7.parse(build_ack(body, "AA", now=now).decode("ascii"))
    msh = ack.segment("MSH")
    assert str(msh(3)) == "VIGIL"  # the original's receiving app was empty
    assert str(msh(5)) == "AcmeInc^ACDE48234567ABCD^EUI-64"  # the sender is now receiver
    assert (str(msh(7)), str(msh(9)), str(msh(12))) == (
        "20250301080000.000+0000",
        "ACK^R01^ACK",
        "2.6",
    )
    assert str(msh(10)) and str(msh(10)) != "MSGID1234"
    assert [str(s[0]) for s in ack] == ["MSH", "MSA"]  # no ERR for AA
    assert (str(ack.segment("MSA")(1)), str(ack.segment("MSA")(2))) == ("AA", "MSGID1234")
    again = hl7.parse(build_ack(body, "AA", now=now).decode())
    assert str(again.segment("MSH")(10)) != str(msh(10))  # a new control id each time


def test_ack_ae_for_a_used_message_with_text_and_ack_for_garbage() -> None:
    ack = hl7.parse(build_ack(samples.load("07"), "AE", text="unknown bed").decode())
    assert str(ack.segment("ERR")(3)) == "207^Application internal error^HL70357"
    assert ack.unescape(str(ack.segment("ERR")(8))) == "unknown bed"
    assert str(ack.segment("ERR")(1))  # v2.3: ERR-1 too
    junk = hl7.parse(build_ack(b"\x00garbage", "AE").decode())
    assert str(junk.segment("MSA")(2)) == "" and str(junk.segment("MSA")(1)) == "AE"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20160802101500", "2016-08-02T10:15:00+00:00"),
        ("20090813095715+0500", "2009-08-13T04:57:15+00:00"),
        ("20260124124738.0000+0800", "2026-01-24T04:47:38+00:00"),
        ("20260124124738000+0800", "2026-01-24T04:47:38+00:00"),
        ("20210425230332.872-0400", "2021-04-26T03:03:32.872+00:00"),
        ("20250301080000.123456789+0000", "2025-03-01T08:00:00.123456+00:00"),
        ("202503010800", "2025-03-01T08:00:00+00:00"),
        ("20250301", "2025-03-01T00:00:00+00:00"),
    ],
)
def test_hl7_times(text: str, expected: str) -> None:
    assert parse_hl7_time(text) == _t(expected)


@pytest.mark.parametrize(
    "text", ["", "2025-03-01", "20251301", "20250301080000+2500", "2025030108000"]
)
def test_bad_hl7_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hl7_time(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.builds(
            lambda base, cut, noise: base[:cut] + noise,
            st.sampled_from([samples.load(n) for n in samples.NAMES]),
            st.integers(0, 3000),
            st.binary(max_size=40),
        ),
        st.builds(
            lambda s: ("MSH|^~\\&|" + s).encode("utf-8", "surrogatepass"),
            st.text(
                alphabet=st.sampled_from('|^~\\&\r\n0123456789.+-ORUXNMDCF²é"' + "\x00"),
                max_size=300,
            ),
        ),
    )
)
def test_arbitrary_bytes_return_or_raise_message_error(body: bytes) -> None:
    try:
        m = parse_message(body)
    except MessageError as e:
        assert e.ack_code in ("AE", "AR")
        build_ack(body, e.ack_code, error=e)
    else:
        assert isinstance(m, Pcd01Message)
        to_readings(m, "b", "m", 1)
        build_ack(body, "AA")


def test_mllp_framed_body_is_tolerated() -> None:
    # framing bytes at either end (a caller that hands the whole frame) are stripped
    assert _vitals(parse_message(frame(samples.load("02")))) == {
        "SBP": 120.0,
        "DBP": 80.0,
        "MAP": 100.0,
    }


def test_set_aside_rows_come_in_message_order() -> None:
    segs = [a.segment for a in _parse("07").set_aside]
    assert segs == sorted(segs, key=lambda s: int(s.split()[1]))
    assert segs[:4] == ["OBX 1", "OBX 2", "OBX 4", "OBX 5"]


def test_split_messages_raw_and_framed() -> None:
    from edge_agent.pcd01 import split_messages

    a, b = samples.load("02"), samples.load("b04")
    raw = split_messages(a.replace(b"\r", b"\r\n") + b"\n\n" + b)
    assert [parse_message(x).control_id for x in raw] == ["MSGID1234", "HP0301080000000B02WIN001"]
    framed = split_messages(b"junk" + frame(a) + b"\r\n" + frame(b) + b"\x0bMSH|cut short")
    assert len(framed) == 3 and framed[0] == a.rstrip(b"\r") + b"\r"
    assert split_messages(b"") == []


def test_no_time_anywhere_uses_now() -> None:
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    body = b"MSH|^~\\&|||||||ORU^R01|9|P|2.3\rOBX||NM|0002-4bb8^SpO2^MDIL|0|97|%|||||F\r"
    m = parse_message(body, now=now)
    assert m.msg_time == now and m.observations[0].obs_time == now
