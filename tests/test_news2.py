"""NEWS2 against the Royal College of Physicians' NEWS2 chart (2017), every band edge.

Source: RCP, "National Early Warning Score (NEWS) 2", December 2017, Chart 1 (scoring)
and Chart 2 (clinical response thresholds). Each case is a chart boundary value or its
neighbour across the edge, written out from the chart (not computed from the code).
"""

from __future__ import annotations

import dataclasses

import pytest

from contracts import messages
from contracts.news2 import news2

# (value, sub-score) at every edge of every row of Chart 1, both sides.
RESP = [(0, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (60, 3)]
SPO2_SCALE1 = [(70, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
SBP = [(60, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)]
HR = [(30, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2)]
HR += [(130, 2), (131, 3), (180, 3)]
TEMP = [(34.0, 3), (35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1)]
TEMP += [(39.0, 1), (39.1, 2), (41.0, 2)]
# Scale 2: (SpO2, on oxygen, sub-score).
SPO2_SCALE2 = [
    (70, False, 3),
    (83, False, 3),
    (84, False, 2),
    (85, False, 2),
    (86, False, 1),
    (87, False, 1),
    (88, False, 0),
    (92, False, 0),
    (93, False, 0),
    (97, False, 0),
    (100, False, 0),
    (83, True, 3),
    (84, True, 2),
    (87, True, 1),
    (88, True, 0),
    (92, True, 0),
    (93, True, 1),
    (94, True, 1),
    (95, True, 2),
    (96, True, 2),
    (97, True, 3),
    (100, True, 3),
]


@pytest.mark.parametrize(("value", "score"), RESP)
def test_respiration_rate_band_edges(value, score):
    assert news2(resp=value).subscores["resp"] == score


@pytest.mark.parametrize(("value", "score"), SPO2_SCALE1)
@pytest.mark.parametrize("on_oxygen", [False, True])
def test_spo2_scale_1_band_edges_do_not_depend_on_oxygen(value, score, on_oxygen):
    n = news2(spo2=value, on_oxygen=on_oxygen)
    assert n.subscores["spo2"] == score and n.scale == 1


@pytest.mark.parametrize(("value", "on_oxygen", "score"), SPO2_SCALE2)
def test_spo2_scale_2_band_edges_on_air_and_on_oxygen(value, on_oxygen, score):
    n = news2(spo2=value, on_oxygen=on_oxygen, scale=2)
    assert n.subscores["spo2"] == score and n.scale == 2


def test_spo2_scale_2_without_a_recorded_oxygen_scores_as_air_and_says_so():
    n = news2(spo2=97, scale=2)
    assert n.subscores["spo2"] == 0 and n.subscores["oxygen"] == 0
    assert "oxygen" in n.assumed


@pytest.mark.parametrize(("value", "score"), SBP)
def test_systolic_pressure_band_edges(value, score):
    assert news2(sbp=value).subscores["sbp"] == score


@pytest.mark.parametrize(("value", "score"), HR)
def test_pulse_band_edges(value, score):
    assert news2(hr=value).subscores["hr"] == score


@pytest.mark.parametrize(("value", "score"), TEMP)
def test_temperature_band_edges(value, score):
    assert news2(temp=value).subscores["temp"] == score


@pytest.mark.parametrize(("on_oxygen", "score"), [(False, 0), (True, 2)])
def test_supplemental_oxygen_scores_two(on_oxygen, score):
    n = news2(on_oxygen=on_oxygen)
    assert n.subscores["oxygen"] == score and n.total == score
    assert "oxygen" not in n.assumed


@pytest.mark.parametrize(("level", "score"), [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])
def test_acvpu_alert_scores_zero_and_any_other_level_three(level, score):
    n = news2(acvpu=level)
    assert n.subscores["consciousness"] == score and "consciousness" not in n.assumed


def test_unrecorded_oxygen_and_consciousness_are_assumed_air_and_alert():
    n = news2(resp=16, spo2=98, sbp=120, hr=70, temp=37.0)
    assert n.total == 0 and n.assumed == ("oxygen", "consciousness") and n.missing == ()
    assert news2(on_oxygen=False, acvpu="A").assumed == ()


@pytest.mark.parametrize("level", ["a", "alert", "X", ""])
def test_an_acvpu_level_not_on_the_chart_is_refused_by_name(level):
    with pytest.raises(ValueError, match="ACVPU"):
        news2(acvpu=level)


@pytest.mark.parametrize("scale", [0, 3, True])
def test_a_spo2_scale_not_on_the_chart_is_refused_by_name(scale):
    with pytest.raises(ValueError, match="SpO2 scale"):
        news2(scale=scale)


# Chart 2, response thresholds: (vitals, total, band).
BANDS = [
    ({"resp": 16, "spo2": 98, "sbp": 120, "hr": 70, "temp": 37.0}, 0, "low"),
    # 4, no single 3: low
    ({"resp": 22, "spo2": 95, "hr": 95, "on_oxygen": False}, 4, "low"),
    # a single parameter scoring 3, aggregate 3: low-medium
    ({"resp": 16, "hr": 70, "acvpu": "V"}, 3, "low-medium"),
    ({"sbp": 90}, 3, "low-medium"),
    # 4 with a 3 in it: still low-medium
    ({"sbp": 85, "hr": 95}, 4, "low-medium"),
    # 5 and 6: medium (with or without a 3)
    ({"resp": 22, "spo2": 95, "hr": 95, "temp": 38.5}, 5, "medium"),
    ({"resp": 22, "spo2": 94, "on_oxygen": True, "hr": 95}, 6, "medium"),
    ({"sbp": 85, "on_oxygen": True}, 5, "medium"),
    # 7 and above: high
    ({"resp": 22, "spo2": 93, "hr": 95, "on_oxygen": True}, 7, "high"),
    ({"resp": 26, "spo2": 90, "sbp": 88, "hr": 135, "temp": 39.5, "acvpu": "U"}, 17, "high"),
]


@pytest.mark.parametrize(("vitals", "total", "band"), BANDS)
def test_response_band_edges(vitals, total, band):
    n = news2(**vitals)
    assert (n.total, n.risk) == (total, band)


def test_news2_out_on_the_wire_carries_scale_assumed_and_reassess():
    n = dataclasses.replace(news2(spo2=95, on_oxygen=True, scale=2), reassess=("oxygen",))
    out = messages.News2Out(
        total=n.total,
        risk=n.risk,
        subscores=dict(n.subscores),
        missing=list(n.missing),
        scale=n.scale,
        assumed=list(n.assumed),
        reassess=list(n.reassess),
    )
    back = messages.News2Out.model_validate_json(out.model_dump_json(), strict=True)
    assert back.scale == 2 and back.assumed == ["consciousness"] and back.reassess == ["oxygen"]
    # an old payload (before scale/assumed/reassess) still reads, with the defaults
    old = messages.News2Out.model_validate_json(
        b'{"total": 3, "risk": "low-medium", "subscores": {"hr": 3}, "missing": []}', strict=True
    )
    assert (old.scale, old.assumed, old.reassess) == (1, [], [])
    with pytest.raises(ValueError, match="scale"):
        messages.News2Out(total=0, risk="low", subscores={}, scale=3)
