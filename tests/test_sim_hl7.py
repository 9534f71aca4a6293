"""The monitor's HL7 messages: layout, third-party parsing, round trips (pure functions)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.mllp import frame
from contracts.vitals import VITAL_NAMES, VITALS
from firmware_sim.hl7 import (
    DECIMALS,
    MllpDecoder,
    Observation,
    age_at,
    birth_date_for,
    build_oru,
    format_ts,
    format_value,
    parse_oru,
    parse_ts,
)
from tests.support.sim import parse_with_hl7, split_mllp

T0 = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


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
    )
    base.update(kw)
    return Observation(**base)


def test_message_follows_the_documented_layout() -> None:
    msg = build_oru(_obs())
    segs = msg.split("\r")
    assert not msg.endswith("\r")  # separated, not terminated
    assert [s[:3] for s in segs] == ["MSH", "PID", "PV1", "OBR", *["OBX"] * 7, "ZAD"]
    assert segs[0] == (
        "MSH|^~\\&|VIGILSIM|MON01|VIGIL|GATEWAY|20260301120000.250+0000||ORU^R01^ORU_R01"
        "|MON01-7|P|2.6"
    )
    assert segs[1] == "PID|1||pn-p000123^^^VIGIL^PI||||19620228|F"
    assert segs[4] == (
        "OBX|1|NM|8867-4^Heart rate^LN||88|/min^/min^UCUM|||||R|||20260301120000.250+0000"
    )
    assert segs[5].startswith("OBX|2|NM|59408-5^SpO2^LN|||%^%^UCUM|||||X|||")
    assert segs[-1] == "ZAD|20260228070000.250+0000"


def test_third_party_parser_reads_every_field() -> None:
    obs = _obs()
    r = parse_with_hl7(build_oru(obs))
    msg = hl7.parse(build_oru(obs))
    assert str(msg.segment("PID")[5]) == ""  # never a name
    assert r.control_id == "MON01-7" and r.bed == "bed-3" and r.stay_id == "pn-p000123"
    assert r.icu_admit == obs.icu_admit.replace(microsecond=250000)
    assert (r.hospital_admit - r.icu_admit) / timedelta(hours=1) == -24.0
    assert [str(o[3][0][0]) for o in msg.segments("OBX")] == [v.loinc for v in VITALS]
    assert [str(o[6][0][0]) for o in msg.segments("OBX")] == [v.unit for v in VITALS]
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


def test_age_in_whole_years_stays_constant_through_a_long_stay() -> None:
    admit = datetime(2024, 3, 1, 0, 30, tzinfo=UTC)  # the day after 29 February
    birth = birth_date_for(71.9, admit)
    assert all(age_at(birth, admit + timedelta(hours=h)) == 71 for h in range(0, 24 * 300, 7))
    assert birth_date_for(float("nan"), admit) is None


@pytest.mark.parametrize(
    "bad", ["", "a|b", "x^y", "tilde~", "back\\slash", "amp&", "new\rline", "é", "x" * 65]
)
def test_identifiers_that_would_break_the_layout_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid identifier"):
        build_oru(_obs(stay_id=bad))


def test_values_that_no_monitor_can_show_are_refused() -> None:
    with pytest.raises(ValueError, match="HR value inf"):
        build_oru(_obs(values={"HR": math.inf}))
    with pytest.raises(ValueError, match="unknown vital"):
        build_oru(_obs(values={"EtCO2": 30.0}))
    with pytest.raises(ValueError, match="no time zone"):
        format_ts(datetime(2026, 1, 1))


def test_mllp_decoder_counts_noise_and_truncated_frames() -> None:
    a, b = frame(build_oru(_obs(seq=1))), frame(build_oru(_obs(seq=2)))
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
    hosp_h=st.one_of(st.none(), st.floats(min_value=-5000, max_value=0)),
    age=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    sex=st.sampled_from("MFU"),
)
def test_any_reading_parses_with_the_third_party_parser_and_round_trips(
    monitor_id, stay_id, bed, seq, values, obs_time, admit_offset_h, hosp_h, age, sex
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
        hospital_admit=None if hosp_h is None else admit + timedelta(hours=hosp_h),
    )
    raw = frame(build_oru(obs))
    assert raw[0] == 0x0B and raw[-2:] == b"\x1c\x0d"
    r = parse_with_hl7(raw[1:-2])
    assert r.control_id == f"{monitor_id}-{seq}" and r.seq == seq
    assert r.stay_id == stay_id and r.bed == bed and r.sex == sex
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
