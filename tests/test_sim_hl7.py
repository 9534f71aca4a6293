"""The monitor's HL7 messages: the standard PCD-01 layout and the vendor-style profiles,
read by third-party parsers (python-hl7, hl7apy strict) and by the simulator's own."""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hl7apy import parser as hl7apy_parser
from hl7apy.consts import VALIDATION_LEVEL
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.mdc import BY_CODE
from contracts.mllp import frame
from contracts.units import to_catalogue
from contracts.vitals import VITAL_NAMES
from firmware_sim.hl7 import (
    DECIMALS,
    PROFILES,
    MllpDecoder,
    Observation,
    age_at,
    birth_date_for,
    build_oru,
    encode_oru,
    format_ts,
    format_value,
    parse_oru,
    parse_ts,
)
from tests.support.sim import parse_with_hl7, split_mllp

T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
SAMPLES = Path(__file__).parent / "samples" / "hl7"
ALL_VALUES = {
    "HR": 88.0,
    "O2Sat": 97.0,
    "Temp": 37.456,
    "SBP": 121.04,
    "MAP": 90.0,
    "DBP": 70.0,
    "Resp": 18.0,
}


def _obs(**kw) -> Observation:
    base = dict(
        monitor_id="MON01",
        seq=7,
        bed="bed-3",
        stay_id="pn-p000123",
        obs_time=T0,
        values={"HR": 88.0, "O2Sat": None, "Temp": 37.456, "SBP": 121.04, "MAP": 90.0},
        birth_date=birth_date_for(64.7, T0 - timedelta(hours=5)),
        sex="F",
        icu_admit=T0 - timedelta(hours=5),
        hospital_admit=T0 - timedelta(hours=29),
        nbp_time=T0 - timedelta(minutes=7),
    )
    base.update(kw)
    return Observation(**base)


def strict_errors(text: str) -> list[str]:
    """hl7apy's strict validation of `text` against its own MSH-12 version: the list of
    errors (empty: valid); a parse error is returned as one entry."""
    try:
        msg = hl7apy_parser.parse_message(
            text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
        )
    except Exception as e:  # hl7apy raises its own types (and ValueError) while parsing
        return [f"parse: {e}"]
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as report:
        try:
            msg.validate(report_file=report.name)
        except Exception:
            return [line for line in Path(report.name).read_text().splitlines() if line.strip()]
    return []


# --- the standard layout ----------------------------------------------------------


def test_standard_message_follows_the_documented_pcd01_layout() -> None:
    msg = build_oru(_obs(), "standard")
    segs = msg.split("\r")
    assert not msg.endswith("\r")  # separated, not terminated
    assert [s[:3] for s in segs] == ["MSH", "PID", "PV1", "OBR", *["OBX"] * 8]
    eui = PROFILES["standard"].device_id("MON01")
    assert len(eui) == 16 and int(eui, 16) >= 0
    assert segs[0] == (
        f"MSH|^~\\&|VIGILSIM^{eui}^EUI-64|MON01|VIGIL|GATEWAY|20260301120000.250+0000||"
        "ORU^R01^ORU_R01|MON01-7|P|2.6|||AL|NE|||||"
        "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
    )
    assert segs[1] == "PID|1||pn-p000123^^^VIGIL^PI||SIM^bed-3||19620228|F"
    pv1 = segs[2].split("|")
    assert pv1[1:4] == ["1", "I", "ICU^^bed-3"] and pv1[44] == "20260301070000.250+0000"
    obr = segs[3].split("|")
    assert obr[4] == "182777000^monitoring of patient^SCT" and obr[7] == format_ts(T0)
    assert segs[4].startswith("OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|")
    assert segs[5] == (
        "OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|88|/min^/min^UCUM|||||R|||"
        f"20260301120000.250+0000||||{eui}^EUI-64"
    )
    # SpO2 off: the OBX is sent, empty, with OBX-11 X
    assert segs[6].startswith("OBX|3|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1||%^%^UCUM|||||X|")
    assert "ZAD" not in msg and "Z" not in {s[0] for s in segs}  # no private segment


def test_third_party_parser_reads_every_field() -> None:
    obs = _obs()
    r = parse_with_hl7(build_oru(obs, "standard"))
    assert r.name == "SIM^bed-3"  # PID-5 filled, pseudonymous
    assert r.control_id == "MON01-7" and r.bed == "bed-3" and r.stay_id == "pn-p000123"
    assert r.icu_admit == obs.icu_admit.replace(microsecond=250000)
    assert r.hospital_admit is None  # not sent: a monitor does not know it
    assert r.codes["HR"] == "147842^MDC_ECG_HEART_RATE^MDC"
    assert r.units == {
        "HR": "/min^/min^UCUM",
        "O2Sat": "%^%^UCUM",
        "Temp": "Cel^Cel^UCUM",
        "SBP": "mm[Hg]^mm[Hg]^UCUM",
        "MAP": "mm[Hg]^mm[Hg]^UCUM",
        "DBP": "mm[Hg]^mm[Hg]^UCUM",
        "Resp": "/min^/min^UCUM",
    }
    assert r.values == {
        "HR": 88.0,
        "O2Sat": None,
        "Temp": 37.46,
        "SBP": 121.0,
        "MAP": 90.0,
        "DBP": None,
        "Resp": None,
    }
    assert r.status["HR"] == "R" and r.status["O2Sat"] == "X" and r.status["DBP"] == "X"


# --- hl7apy strict validation of every profile ---------------------------------------


@pytest.mark.parametrize("values", [ALL_VALUES, {}, {"HR": 61.0, "Temp": 36.6}])
@pytest.mark.parametrize("name", ["standard", "ge", "ge-degf"])
def test_pcd01_profiles_validate_strictly_as_hl7_v2_6(name: str, values: dict) -> None:
    text = build_oru(_obs(values=values), name)
    assert text.split("\r")[0].split("|")[11] == "2.6"
    assert strict_errors(text) == []


def test_mindray_profile_validates_but_for_its_observed_msh7() -> None:
    # Real Mindray monitors write MSH-7 with milliseconds and no dot
    # (20260124124738000+0800, sample 13): not an HL7 DTM, so hl7apy cannot even parse
    # it. The profile keeps that quirk (a gateway must read it); with MSH-7 written as
    # HL7 says, the rest of the message validates strictly as v2.6.
    text = build_oru(_obs(values=ALL_VALUES), "mindray")
    msh = text.split("\r")[0].split("|")
    assert msh[6] == "20260301120000250+0000"
    assert strict_errors(text) == [f"parse: {msh[6]} is not an HL7 valid date value"]
    assert strict_errors(text.replace(msh[6], "20260301120000.250+0000")) == []
    real = (SAMPLES / "13-mindray-field-oru-r40-leadoff.hl7").read_bytes().decode()
    assert "20260124124738000+0800" in real and strict_errors(real)[0].startswith("parse:")


def test_philips_profile_is_strict_v2_3_up_to_the_piic_quirks_of_the_real_capture() -> None:
    # The PIIC export (sample 07, a real capture) writes PV1-3 as `unit^^bed&0&0`
    # (sub-components in an IS field) and an OBR with only OBR-7: hl7apy strict v2.3
    # rejects the real message for exactly these, and so ours. Without them ours is
    # valid v2.3.
    text = build_oru(_obs(values=ALL_VALUES), "philips")
    real = (SAMPLES / "07-philips-piic-nbp-spo2-hr.hl7").read_bytes().decode("latin-1")
    real = real.replace("\n", "\r").strip()
    pl3 = "parse: Cannot add <SubComponent IS>: max limit (1) reached for <Component PL_3 (BED) of type IS>"
    assert strict_errors(text) == strict_errors(real) == [pl3]
    obr = ["Error: Missing required child OBR.OBR_4", "Error: Missing required child OBR.OBR_27"]
    text, real = text.replace("&0&0", ""), real.replace("&0&0", "")
    assert strict_errors(text) == strict_errors(real) == obr
    text = text.replace("OBR|||||||", "OBR||||VITALS|||")  # OBR-4
    text = text.replace("\rOBX", "|" * 20 + "1\rOBX", 1)  # OBR-27, quantity/timing
    assert strict_errors(text) == []


# --- what each vendor-style profile looks like --------------------------------------


def _rows(text: str) -> list[list[str]]:
    return [s.split("|") for s in text.split("\r") if s.startswith("OBX")]


def test_ge_style_profile() -> None:
    text = build_oru(_obs(), "ge")
    msh = text.split("\r")[0].split("|")
    eui = PROFILES["ge"].device_id("MON01")
    assert eui.startswith("080019")  # GE's IEEE OUI
    assert msh[2] == f"VSP^{eui}^EUI-64" and msh[3] == "GE Healthcare"
    assert msh[6] == "20260301120000" and msh[14:16] == ["NE", "AL"]  # no time zone
    assert msh[17] == "UNICODE UTF-8" and msh[20].startswith("PCD_DEC_001^IHE PCD^")
    rows = _rows(text)
    assert [r[4] for r in rows if r[2] == ""] == ["1.0.0.0", "1.13.1.0"]  # MDS, BP channel
    codes = [r[3].split("^")[0] for r in rows if r[2] == "NM"]
    assert "150456" not in codes  # SpO2 off: no OBX at all
    assert "150033" in codes and all(r[18] == f"{eui}^B40_GE" for r in rows if r[2] == "NM")
    full = _rows(build_oru(_obs(values=ALL_VALUES), "ge"))
    resp = [r for r in full if r[3].startswith("151562^")]
    assert [r[4] for r in resp] == ["1.20.1.1", "1.6.1.1"]  # airway and ECG impedance
    temp = next(r for r in _rows(build_oru(_obs(), "ge-degf")) if r[3].startswith("150344"))
    assert temp[6] == "[degF]^[degF]^UCUM" and temp[5] == "99.4"
    assert to_catalogue("Temp", float(temp[5]), temp[6]) == pytest.approx(37.456, abs=0.03)


def test_mindray_style_profile() -> None:
    text = build_oru(_obs(), "mindray")
    eui = PROFILES["mindray"].device_id("MON01")
    assert eui.startswith("00A037")
    msh = text.split("\r")[0].split("|")
    assert msh[2] == f"MINDRAY_VIGILSIM^{eui}^EUI-64" and msh[3] == "MINDRAY"
    rows = {r[3].split("^")[1]: r for r in _rows(text)}
    assert rows["MDC_PULS_OXIM_SAT_O2"][5] == "-100"  # SpO2 off: the sentinel, status R
    assert rows["MDC_PULS_OXIM_SAT_O2"][11] == "R"
    assert rows["MDC_PRESS_CUFF_SYS"][5] == "121" and rows["MDC_PRESS_CUFF_DIA"][5] == "-100"
    assert rows["MDC_TTHOR_RESP_RATE"][6] == "264928^MDC_DIM_RESP_PER_MIN^MDC"
    assert rows["MDC_ECG_HEART_RATE"][4] == "1.7.4.147842"  # sub-id embeds the code
    assert rows["MDC_ECG_HEART_RATE"][18] == f"{eui}^^{eui}^EUI-64"
    assert rows["MNDRY_PAT_TYPE"][3].endswith("^99MNDRY")


def test_philips_style_profile() -> None:
    obs = _obs()
    raw = encode_oru(obs, "philips")
    assert "°C".encode("latin-1") in raw and "°C".encode() not in raw  # MSH-18 8859/1
    text = raw.decode("latin-1")
    segs = text.split("\r")
    assert segs[0] == "MSH|^~\\&|||||||ORU^R01|MON01-7|P|2.3||||||8859/1"
    assert segs[2] == "PV1||I|ICU^^bed-3&0&0"
    rows = {r[3]: r for r in _rows(text)}
    assert all(r[1] == "" and r[4] == "0" for r in rows.values())
    hr = rows["0002-4182^HR^MDIL"]
    assert hr[5:8] == ["88", "0004-0aa0^bpm^MDIL", "50-120"] and hr[11] == "F"
    nbp = rows["0002-4a05^NBPs^MDIL"]
    assert nbp[13:15] == ["APERIODIC", "20260301115300"]  # the cuff's own, older time
    assert "0002-f0e5^Pulse (NBP)^MDIL" in rows  # the private cuff pulse
    assert not any(k.startswith("0002-4bb8") for k in rows)  # SpO2 off: not sent
    assert rows["0002-4b48^Temp^MDIL"][6] == "0004-17a0^°C^MDIL"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_round_trips_through_the_simulators_decoder(name: str) -> None:
    obs = _obs()
    got = parse_oru(encode_oru(obs, name))
    assert got.seq == 7 and got.monitor_id == "MON01" and got.bed == "bed-3"
    assert got.stay_id == "pn-p000123" and got.sex == "F"
    for vital in VITAL_NAMES:
        sent = obs.values.get(vital)
        if sent is None:
            assert got.values[vital] is None, vital
        else:
            tol = 0.03 if name == "ge-degf" and vital == "Temp" else 0.051
            assert got.values[vital] == pytest.approx(sent, abs=tol), vital


def test_every_profile_names_its_vitals_with_known_mdc_codes() -> None:
    for name in ("standard", "ge", "mindray"):
        for m in PROFILES[name].metrics:
            code = int(m.code.split("^")[0])
            assert BY_CODE[code].vital == m.vital and m.code.split("^")[1] == BY_CODE[code].ref


# --- identifiers, values, times ---------------------------------------------------------


def test_age_in_whole_years_stays_constant_through_a_long_stay() -> None:
    admit = datetime(2024, 3, 1, 0, 30, tzinfo=UTC)  # the day after 29 February
    birth = birth_date_for(71.9, admit)
    assert all(age_at(birth, admit + timedelta(hours=h)) == 71 for h in range(0, 24 * 300, 7))
    assert birth_date_for(float("nan"), admit) is None


@pytest.mark.parametrize("name", sorted(PROFILES))
@pytest.mark.parametrize(
    "bad", ["", "a|b", "x^y", "tilde~", "back\\slash", "amp&", "new\rline", "é", "x" * 65]
)
def test_identifiers_that_would_break_the_layout_are_refused(name: str, bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid identifier"):
        build_oru(_obs(stay_id=bad), name)
    with pytest.raises(ValueError, match="not a valid identifier"):
        build_oru(_obs(bed=bad), name)


def test_values_that_no_monitor_can_show_are_refused() -> None:
    with pytest.raises(ValueError, match="HR value inf"):
        build_oru(_obs(values={"HR": math.inf}), "standard")
    with pytest.raises(ValueError, match="unknown vital"):
        build_oru(_obs(values={"EtCO2": 30.0}), "standard")
    with pytest.raises(ValueError, match="no time zone"):
        format_ts(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown profile 'acme'"):
        build_oru(_obs(), "acme")


def test_mllp_decoder_counts_noise_and_truncated_frames() -> None:
    a = frame(build_oru(_obs(seq=1), "standard"))
    b = frame(build_oru(_obs(seq=2), "standard"))
    stream = b"\x01\x02\x03" + a[: len(a) // 2] + b + b"\xff" + a
    dec = MllpDecoder()
    frames = [f for i in range(0, len(stream), 50) for f in dec.feed(stream[i : i + 50])]
    assert [parse_oru(f).seq for f in frames] == [2, 1]
    assert dec.noise_bytes == 4 and dec.truncated == 1
    w = split_mllp(stream)  # the tests' independent splitter agrees
    assert len(w.frames) == 2 and w.noise_bytes == 4 and w.truncated == 1


ids = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="|^~\\&"),
    min_size=1,
    max_size=64,
)
vital_value = st.one_of(
    st.none(),
    st.just(math.nan),
    st.floats(min_value=-999_999.0, max_value=999_999.0, allow_nan=False),
)
times = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(
    monitor_id=ids,
    stay_id=ids,
    bed=ids,
    seq=st.integers(min_value=1, max_value=10**12),
    values=st.fixed_dictionaries({n: vital_value for n in VITAL_NAMES}),
    obs_time=times,
    admit_offset_h=st.floats(min_value=0, max_value=5000),
    age=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    sex=st.sampled_from("MFU"),
)
def test_any_reading_parses_with_the_third_party_parser_and_round_trips(
    monitor_id, stay_id, bed, seq, values, obs_time, admit_offset_h, age, sex
) -> None:
    admit = obs_time - timedelta(hours=admit_offset_h)
    obs = Observation(
        monitor_id=monitor_id,
        seq=seq,
        bed=bed,
        stay_id=stay_id,
        obs_time=obs_time,
        values=values,
        birth_date=birth_date_for(age, admit),
        sex=sex,
        icu_admit=admit,
    )
    raw = frame(build_oru(obs, "standard"))
    assert raw[0] == 0x0B and raw[-2:] == b"\x1c\x0d"
    r = parse_with_hl7(raw[1:-2])
    assert r.control_id == f"{monitor_id}-{seq}" and r.seq == seq
    assert r.stay_id == stay_id and r.bed == bed and r.sex == sex and r.name == f"SIM^{bed}"
    ms = timedelta(milliseconds=1)
    assert timedelta(0) <= obs_time - r.obs_time < ms
    assert timedelta(0) <= admit - r.icu_admit < ms
    if age is not None:
        born = datetime.strptime(r.birth, "%Y%m%d").date()
        assert age_at(born, admit) == math.floor(age)
    for name in VITAL_NAMES:
        v = values[name]
        if v is None or math.isnan(v):
            assert r.values[name] is None and r.status[name] == "X"
        else:
            assert r.status[name] == "R"
            assert r.values[name] == pytest.approx(round(v, DECIMALS[name]), abs=1e-9)
    own = parse_oru(raw[1:-2])  # the simulator's own decoder (used by `sim watch`) agrees
    assert own.values == r.values and own.seq == seq and own.bed == bed


@given(st.floats(min_value=-999_999, max_value=999_999), st.sampled_from(VITAL_NAMES))
def test_value_text_is_plain_decimal(v: float, name: str) -> None:
    text = format_value(name, v)
    assert "e" not in text.lower()
    frac = text.partition(".")[2]
    assert len(frac) <= DECIMALS[name] and not frac.endswith("0")


def test_timestamps_round_trip_to_the_millisecond() -> None:
    assert parse_ts(format_ts(T0)) == T0
    assert format_ts(T0) == "20260301120000.250+0000"
    assert parse_ts("20260301200000250+0800") == T0  # Mindray: ms without a dot
    assert parse_ts("20260301120000") == T0.replace(microsecond=0)  # no zone: UTC
