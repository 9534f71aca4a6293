"""NEWS2 (National Early Warning Score 2, Royal College of Physicians 2017).

Computed from the same monitor vitals as the model. A monitor does not report
supplemental oxygen or consciousness: unless given, air and 'Alert' are assumed
(sub-score 0) and the result says which parameters were missing.
SpO2 uses scale 1 (no hypercapnic respiratory failure).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class News2:
    """One NEWS2 result, the one type every part uses: the gateway's state and nurse
    terminal show it as it is; on the wire it is `contracts.messages.News2Out`, with the
    same field names."""

    total: int
    risk: str  # the RCP's clinical risk band: low / low-medium / medium / high
    subscores: Mapping[str, int]
    missing: tuple[str, ...] = ()


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
    if spo2 <= 91:
        return 3
    if spo2 <= 93:
        return 2
    if spo2 <= 95:
        return 1
    return 0


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


def news2(
    *,
    resp: float | None = None,
    spo2: float | None = None,
    sbp: float | None = None,
    hr: float | None = None,
    temp: float | None = None,
    on_oxygen: bool = False,
    alert: bool = True,
) -> News2:
    """NEWS2 from whatever vitals are present; missing ones score 0 and are listed."""
    parts = {
        "resp": (resp, score_resp),
        "spo2": (spo2, score_spo2),
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
    sub["oxygen"] = 2 if on_oxygen else 0
    sub["consciousness"] = 0 if alert else 3
    total = sum(sub.values())
    return News2(total, clinical_risk(total, sub), sub, tuple(missing))


def news2_from_row(row: dict[str, float]) -> News2:
    """NEWS2 from a canonical row (HR, O2Sat, Temp, SBP, Resp)."""
    return news2(
        resp=row.get("Resp"),
        spo2=row.get("O2Sat"),
        sbp=row.get("SBP"),
        hr=row.get("HR"),
        temp=row.get("Temp"),
    )
