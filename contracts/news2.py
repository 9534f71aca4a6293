"""NEWS2 (National Early Warning Score 2), as the Royal College of Physicians' chart.

Source: Royal College of Physicians, "National Early Warning Score (NEWS) 2:
Standardising the assessment of acute-illness severity in the NHS", December 2017,
Chart 1 (the NEWS2 scoring system) and Chart 2 (clinical response thresholds):

| parameter            | 3      | 2       | 1         | 0                    | 1              | 2          | 3          |
|----------------------|--------|---------|-----------|----------------------|----------------|------------|------------|
| respiration /min     | <= 8   |         | 9-11      | 12-20                |                | 21-24      | >= 25      |
| SpO2 scale 1 %       | <= 91  | 92-93   | 94-95     | >= 96                |                |            |            |
| SpO2 scale 2 %       | <= 83  | 84-85   | 86-87     | 88-92, >= 93 on air  | 93-94 on O2    | 95-96 on O2| >= 97 on O2|
| air or oxygen        |        | oxygen  |           | air                  |                |            |            |
| systolic BP mmHg     | <= 90  | 91-100  | 101-110   | 111-219              |                |            | >= 220     |
| pulse /min           | <= 40  |         | 41-50     | 51-90                | 91-110         | 111-130    | >= 131     |
| consciousness        |        |         |           | Alert                |                |            | CVPU       |
| temperature C        | <= 35.0|         | 35.1-36.0 | 36.1-38.0            | 38.1-39.0      | >= 39.1    |            |

Scale 2 is for patients with hypercapnic respiratory failure (target SpO2 88-92 %),
chosen by a clinician; every other patient is on scale 1. Response thresholds
(`clinical_risk`): aggregate 0-4 low, a single parameter scoring 3 low-medium (an
urgent ward-based response), 5-6 medium, 7 or more high.

A monitor reports the vital signs; supplemental oxygen and consciousness (ACVPU) are
nurse observations. Any of them not given is scored 0 and said so: monitor vitals in
`missing`, oxygen/consciousness in `assumed` (scored as air / Alert). Values between
two integer bands (a median of 91.5 %) score with the lower band's upper edge
inclusive, as the chart's integer rows read left to right.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

ACVPU_LEVELS = ("A", "C", "V", "P", "U")  # Alert, new Confusion, Voice, Pain, Unresponsive
SPO2_SCALES = (1, 2)
RISK_BANDS = ("low", "low-medium", "medium", "high")  # lowest first


@dataclass(frozen=True)
class News2:
    """One NEWS2 result, the one type every part uses: the gateway's state and nurse
    terminal show it as it is; on the wire it is `contracts.messages.News2Out`, with the
    same field names.

    `assumed`: nurse observations (oxygen, consciousness) not recorded, scored as air /
    Alert. `reassess`: recorded ones older than the site's re-assessment age, still
    used and flagged (the gateway sets it, `dataclasses.replace`)."""

    total: int
    risk: str  # the RCP's clinical risk band: low / low-medium / medium / high
    subscores: Mapping[str, int]
    missing: tuple[str, ...] = ()
    scale: int = 1
    assumed: tuple[str, ...] = ()
    reassess: tuple[str, ...] = ()


def clinical_risk(total: int, subscores: Mapping[str, int]) -> str:
    """Clinical risk band: low, low-medium (a single 3), medium (5-6), high (>= 7)."""
    if total >= 7:
        return "high"
    if total >= 5:
        return "medium"
    if any(v == 3 for v in subscores.values()):
        return "low-medium"
    return "low"


def _ok(x: float | None) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def score_resp(rr: float) -> int:
    if rr <= 8:
        return 3
    if rr <= 11:
        return 1
    if rr <= 20:
        return 0
    if rr <= 24:
        return 2
    return 3


def score_spo2(spo2: float) -> int:
    """SpO2 scale 1."""
    if spo2 <= 91:
        return 3
    if spo2 <= 93:
        return 2
    if spo2 <= 95:
        return 1
    return 0


def score_spo2_scale2(spo2: float, on_oxygen: bool) -> int:
    """SpO2 scale 2 (hypercapnic respiratory failure): high saturations score only on
    oxygen (over-oxygenation); on air 88 % and above scores 0."""
    if spo2 <= 83:
        return 3
    if spo2 <= 85:
        return 2
    if spo2 <= 87:
        return 1
    if spo2 <= 92 or not on_oxygen:
        return 0
    if spo2 <= 94:
        return 1
    if spo2 <= 96:
        return 2
    return 3


def score_sbp(sbp: float) -> int:
    if sbp <= 90:
        return 3
    if sbp <= 100:
        return 2
    if sbp <= 110:
        return 1
    if sbp <= 219:
        return 0
    return 3


def score_hr(hr: float) -> int:
    if hr <= 40:
        return 3
    if hr <= 50:
        return 1
    if hr <= 90:
        return 0
    if hr <= 110:
        return 1
    if hr <= 130:
        return 2
    return 3


def score_temp(t: float) -> int:
    if t <= 35.0:
        return 3
    if t <= 36.0:
        return 1
    if t <= 38.0:
        return 0
    if t <= 39.0:
        return 1
    return 2


def score_acvpu(level: str) -> int:
    """Alert 0; new Confusion, Voice, Pain, Unresponsive 3. ValueError for anything else."""
    if level not in ACVPU_LEVELS:
        raise ValueError(f"ACVPU must be one of {', '.join(ACVPU_LEVELS)}, got {level!r}")
    return 0 if level == "A" else 3


def news2(
    *,
    resp: float | None = None,
    spo2: float | None = None,
    sbp: float | None = None,
    hr: float | None = None,
    temp: float | None = None,
    on_oxygen: bool | None = None,
    acvpu: str | None = None,
    scale: int = 1,
) -> News2:
    """NEWS2 from whatever is present: missing vitals score 0 and are listed in
    `missing`; oxygen/consciousness not recorded (None) score as air/Alert and are
    listed in `assumed`. ValueError for an ACVPU level or SpO2 scale not on the chart."""
    if isinstance(scale, bool) or scale not in SPO2_SCALES:
        raise ValueError(f"SpO2 scale must be 1 or 2, got {scale!r}")
    if acvpu is not None:
        score_acvpu(acvpu)  # validates before anything is scored
    oxygen = bool(on_oxygen)

    def spo2_score(v: float) -> int:
        return score_spo2(v) if scale == 1 else score_spo2_scale2(v, oxygen)

    parts = {
        "resp": (resp, score_resp),
        "spo2": (spo2, spo2_score),
        "sbp": (sbp, score_sbp),
        "hr": (hr, score_hr),
        "temp": (temp, score_temp),
    }
    sub: dict[str, int] = {}
    missing: list[str] = []
    for key, (value, fn) in parts.items():
        if _ok(value):
            sub[key] = fn(float(value))  # type: ignore[arg-type]
        else:
            sub[key] = 0
            missing.append(key)
    assumed: list[str] = []
    sub["oxygen"] = 2 if oxygen else 0
    if on_oxygen is None:
        assumed.append("oxygen")
    sub["consciousness"] = score_acvpu(acvpu) if acvpu is not None else 0
    if acvpu is None:
        assumed.append("consciousness")
    total = sum(sub.values())
    return News2(
        total,
        clinical_risk(total, sub),
        sub,
        tuple(missing),
        scale=scale,
        assumed=tuple(assumed),
    )


def news2_from_row(row: dict[str, float]) -> News2:
    """NEWS2 from a canonical row (HR, O2Sat, Temp, SBP, Resp)."""
    return news2(
        resp=row.get("Resp"),
        spo2=row.get("O2Sat"),
        sbp=row.get("SBP"),
        hr=row.get("HR"),
        temp=row.get("Temp"),
    )
