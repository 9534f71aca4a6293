"""The monitor vocabulary (contracts/mdc.py) and unit conversion (contracts/units.py)."""

from __future__ import annotations

import pytest

from contracts.mdc import BY_CODE, TERMS, mdil, parse_code, site_vocabulary
from contracts.units import UnitError, parse_unit, to_catalogue
from contracts.vitals import BY_NAME


def test_every_term_names_a_catalogue_vital_and_has_one_code():
    assert {t.vital for t in TERMS} == set(BY_NAME)
    assert len({t.code for t in TERMS}) == len(TERMS)
    for t in TERMS:  # the context-free code is partition * 65536 + term, partition 2
        assert t.code >> 16 == 2 and t.ref.startswith("MDC_")


@pytest.mark.parametrize(
    ("identifier", "system", "ref"),
    [
        ("147842", "MDC", "MDC_ECG_HEART_RATE"),  # IHE PCD-01 (tests/samples/hl7/01)
        ("0002-4182", "MDIL", "MDC_ECG_HEART_RATE"),  # Philips MDIL (samples 07-09)
        ("0002-4a15", "MDIL", "MDC_PRESS_BLD_ART_ABP_SYS"),
        ("0002-4822", "MDIL", "MDC_PLETH_PULS_RATE"),
        ("0002-500a", "MDIL", "MDC_RESP_RATE"),
        ("150021", "", "MDC_PRESS_BLD_NONINV_SYS"),
        ("188424", "MDC", "MDC_TEMP_ORAL"),
    ],
)
def test_mdc_and_mdil_codes_map_to_the_same_terms(identifier, system, ref):
    code = parse_code(identifier, system)
    assert code is not None and BY_CODE[code].ref == ref
    assert parse_code(mdil(code), "MDIL") == code


@pytest.mark.parametrize(
    ("identifier", "system"), [("8867-4", "LN"), ("364", "99MNDRY"), ("12²", "MDC"), ("", "")]
)
def test_other_code_systems_and_junk_are_not_mdc(identifier, system):
    assert parse_code(identifier, system) is None


@pytest.mark.parametrize(
    ("vital", "value", "unit", "want"),
    [
        ("Temp", 98.6, "266560^MDC_DIM_FAHR^MDC", 37.0),
        ("Temp", 98.6, "[degF]^[degF]^UCUM", 37.0),
        ("Temp", 310.15, "K", 37.0),
        ("Temp", 36.6, "Cel^Cel^UCUM", 36.6),
        ("SBP", 16.0, "kPa", 120.0),
        ("SBP", 120.0, "0004-0f20^mmHg^MDIL", 120.0),
        ("MAP", 90.0, "266016^MDC_DIM_MMHG^MDC", 90.0),
        ("O2Sat", 0.97, "262656^MDC_DIM_DIMLESS^MDC", 97.0),
        ("O2Sat", 97.0, "%^%^UCUM", 97.0),
        ("HR", 80.0, "0004-0aa0^bpm^MDIL", 80.0),
        ("Resp", 14.0, "264928^MDC_DIM_RESP_PER_MIN^MDC", 14.0),
        ("Resp", 14.0, "{breaths}/min", 14.0),
    ],
)
def test_units_convert_to_catalogue_units(vital, value, unit, want):
    assert to_catalogue(vital, value, unit) == pytest.approx(want, abs=0.01)


@pytest.mark.parametrize(
    ("vital", "value", "unit", "kind"),
    [
        ("Temp", 98.6, "", "missing_unit"),
        ("Temp", 98.6, "^^", "missing_unit"),
        ("SBP", 120.0, "furlong", "unknown_unit"),
        ("SBP", 120.0, "Cel", "wrong_unit"),
        ("HR", 80.0, "%", "wrong_unit"),
        ("O2Sat", 97.0, "262656^MDC_DIM_DIMLESS^MDC", "wrong_unit"),  # not a fraction
    ],
)
def test_a_missing_unknown_or_foreign_unit_is_refused_never_guessed(vital, value, unit, kind):
    with pytest.raises(UnitError) as e:
        to_catalogue(vital, value, unit)
    assert e.value.kind == kind and vital in str(e.value)


def test_unit_text_is_read_case_insensitively_for_vendor_spellings():
    assert parse_unit("MMHG") is parse_unit("mmHg")
    assert parse_unit("K") is not None and parse_unit("k") is None  # UCUM kelvin only


def test_a_site_maps_private_codes_and_reorders_sources():
    site = site_vocabulary(
        [{"system": "99mndry", "code": "364", "vital": "HR", "source": "abp"}],
        {"HR": ["spo2", "ecg"]},
    )
    assert site.lookup("99MNDRY", "364") == ("HR", "abp")
    assert site.lookup("LN", "364") is None
    assert site.rank("HR", "spo2", 9) == 1 and site.rank("HR", "ecg", 9) == 2
    assert site.rank("HR", "nibp", 4) > 2  # unlisted sources come after listed ones
    with pytest.raises(ValueError, match="not a catalogue vital"):
        site_vocabulary([{"code": "1", "vital": "Lactate"}])
