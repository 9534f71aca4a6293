"""The vital-sign catalogue: names, units, codes and plausible ranges.

Canonical column names follow the PhysioNet 2019 challenge (HR, O2Sat, ...), so the
base dataset needs no renaming. LOINC codes and UCUM units are what the monitor
exports over HL7 v2.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VitalSign:
    name: str  # canonical column name
    label: str  # what a nurse reads
    unit: str  # catalogue unit (UCUM)
    loinc: str
    low: float  # physiologically plausible range (outside: artefact or wrong unit)
    high: float


VITALS: tuple[VitalSign, ...] = (
    VitalSign("HR", "Heart rate", "/min", "8867-4", 20.0, 300.0),
    VitalSign("O2Sat", "SpO2", "%", "59408-5", 50.0, 100.0),
    VitalSign("Temp", "Temperature", "Cel", "8310-5", 25.0, 45.0),
    VitalSign("SBP", "Systolic BP", "mm[Hg]", "8480-6", 30.0, 300.0),
    VitalSign("MAP", "Mean arterial pressure", "mm[Hg]", "8478-0", 15.0, 250.0),
    VitalSign("DBP", "Diastolic BP", "mm[Hg]", "8462-4", 10.0, 200.0),
    VitalSign("Resp", "Respiratory rate", "/min", "9279-1", 2.0, 80.0),
)

VITAL_NAMES: tuple[str, ...] = tuple(v.name for v in VITALS)
BY_NAME: dict[str, VitalSign] = {v.name: v for v in VITALS}
BY_LOINC: dict[str, VitalSign] = {v.loinc: v for v in VITALS}

# Static features: demographics and time in ICU (a bedside monitor has no labs).
STATIC_FEATURES: tuple[str, ...] = ("Age", "Gender", "HospAdmTime", "ICULOS")


def plausible(name: str, value: float) -> bool:
    """True when `value` lies in the catalogue's plausible range for vital `name`."""
    v = BY_NAME[name]
    return v.low <= value <= v.high
