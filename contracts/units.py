"""Units of measure on the monitor line (UCUM and MDC), converted to catalogue units.

A monitor names each value's unit in OBX-6, as UCUM (`mm[Hg]`, `/min`, `Cel`,
`[degF]`, `kPa`, `%`), as an MDC dimension code (`266016^MDC_DIM_MMHG^MDC`), as MDIL
hex (`0004-0f20^mmHg^MDIL`) or by a vendor's plain text (`mmHg`, `bpm`). `to_catalogue`
returns the value in the catalogue unit of the vital (`contracts/vitals.py`), or raises
`UnitError` naming the unit it does not know or cannot convert to that vital's
dimension: a value with an unknown or missing unit is set aside, never guessed
(98.6 read as °C, or 10.7 kPa read as mmHg, would be wrong numbers that look valid).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .vitals import BY_NAME


class UnitError(ValueError):
    """The unit is missing, unknown, or of another dimension than the vital's."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # missing_unit | unknown_unit | wrong_unit


@dataclass(frozen=True)
class Unit:
    name: str  # a readable name, e.g. "mmHg"
    dimension: str  # rate, percent, fraction, pressure, temperature
    to_catalogue: Callable[[float], float]


def _same(x: float) -> float:
    return x


RATE = Unit("/min", "rate", _same)
PERCENT = Unit("%", "percent", _same)
FRACTION = Unit("fraction", "fraction", lambda x: x * 100.0)
MMHG = Unit("mmHg", "pressure", _same)
KPA = Unit("kPa", "pressure", lambda x: x * 760.0 / 101.325)
CEL = Unit("°C", "temperature", _same)
FAHR = Unit("°F", "temperature", lambda x: (x - 32.0) * 5.0 / 9.0)
KELVIN = Unit("K", "temperature", lambda x: x - 273.15)

# MDC dimension codes (partition 4): context-free code -> unit.
MDC_DIM: dict[int, Unit] = {
    264864: RATE,  # MDC_DIM_BEAT_PER_MIN
    264928: RATE,  # MDC_DIM_RESP_PER_MIN
    262688: PERCENT,  # MDC_DIM_PERCENT
    262656: FRACTION,  # MDC_DIM_DIMLESS (a saturation sent as a fraction)
    266016: MMHG,  # MDC_DIM_MMHG
    265987: KPA,  # MDC_DIM_KILO_PASCAL
    268192: CEL,  # MDC_DIM_DEGC
    266560: FAHR,  # MDC_DIM_FAHR
    266528: KELVIN,  # MDC_DIM_KELVIN
}
MDC_DIM_REF: dict[str, Unit] = {
    "MDC_DIM_BEAT_PER_MIN": RATE,
    "MDC_DIM_RESP_PER_MIN": RATE,
    "MDC_DIM_PERCENT": PERCENT,
    "MDC_DIM_DIMLESS": FRACTION,
    "MDC_DIM_MMHG": MMHG,
    "MDC_DIM_KILO_PASCAL": KPA,
    "MDC_DIM_DEGC": CEL,
    "MDC_DIM_FAHR": FAHR,
    "MDC_DIM_KELVIN": KELVIN,
}
# UCUM codes and the plain spellings vendors use (compared case-sensitively first,
# then lower-cased: UCUM is case-sensitive, vendors' text is not).
TEXT: dict[str, Unit] = {
    "/min": RATE,
    "1/min": RATE,
    "min-1": RATE,
    "{beat}/min": RATE,
    "{beats}/min": RATE,
    "{Beats}/min": RATE,
    "{breath}/min": RATE,
    "{breaths}/min": RATE,
    "{resp}/min": RATE,
    "bpm": RATE,
    "rpm": RATE,
    "brpm": RATE,
    "%": PERCENT,
    "1": FRACTION,
    "{ratio}": FRACTION,
    "mm[Hg]": MMHG,
    "mmHg": MMHG,
    "kPa": KPA,
    "Cel": CEL,
    "°C": CEL,
    "degC": CEL,
    "deg C": CEL,
    "[degF]": FAHR,
    "°F": FAHR,
    "degF": FAHR,
    "deg F": FAHR,
    "K": KELVIN,
}
_TEXT_LOWER = {k.lower(): v for k, v in TEXT.items() if k != "K"}

# The dimension each catalogue vital is measured in.
DIMENSION: dict[str, str] = {
    "HR": "rate",
    "Resp": "rate",
    "O2Sat": "percent",
    "SBP": "pressure",
    "DBP": "pressure",
    "MAP": "pressure",
    "Temp": "temperature",
}
assert set(DIMENSION) == set(BY_NAME)  # every catalogue vital has one


def parse_unit(field: str) -> Unit | None:
    """OBX-6 (`identifier^text^system`, components already split by `^`) -> Unit or None."""
    parts = field.split("^")
    ident = parts[0].strip()
    text = parts[1].strip() if len(parts) > 1 else ""
    system = parts[2].strip().upper() if len(parts) > 2 else ""
    candidates = [ident, text]
    for c in candidates:
        if not c:
            continue
        if c.isascii() and c.isdigit() and system in ("", "MDC"):
            u = MDC_DIM.get(int(c))
            if u is not None:
                return u
        if len(c) == 9 and c[4] == "-" and system in ("", "MDIL", "MDC"):
            try:
                code = int(c[:4], 16) << 16 | int(c[5:], 16)
            except ValueError:
                code = -1
            if code in MDC_DIM:
                return MDC_DIM[code]
        u = MDC_DIM_REF.get(c) or TEXT.get(c) or _TEXT_LOWER.get(c.lower())
        if u is not None:
            return u
    return None


def to_catalogue(vital: str, value: float, unit_field: str) -> float:
    """`value` in OBX-6's unit -> the catalogue unit of `vital`; UnitError if it cannot."""
    if not unit_field.strip(" ^"):
        raise UnitError("missing_unit", f"{vital}: no unit in OBX-6")
    unit = parse_unit(unit_field)
    if unit is None:
        raise UnitError("unknown_unit", f"{vital}: unknown unit {unit_field[:40]!r}")
    want = DIMENSION[vital]
    if unit.dimension == "fraction" and want == "percent":
        if not 0.0 <= value <= 1.0:
            raise UnitError("wrong_unit", f"{vital}: {value} is not a fraction (unit {unit.name})")
        return unit.to_catalogue(value)
    if unit.dimension != want:
        raise UnitError(
            "wrong_unit", f"{vital}: unit {unit.name} is a {unit.dimension}, not a {want}"
        )
    return unit.to_catalogue(value)
