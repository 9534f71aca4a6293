"""Monitor vocabulary: ISO/IEEE 11073-10101 (MDC) codes of the vitals the model uses.

Real bedside monitors and their HL7 gateways (IHE PCD-01) name each OBX by an MDC
code: the context-free code `partition * 65536 + term` with its reference id, e.g.
`147842^MDC_ECG_HEART_RATE^MDC`. Philips monitors write the same code as MDIL hex,
`0002-4182` (partition `0002`, term `0x4182`), which `parse_code` turns into the MDC
code. LOINC is a secondary code system (`BY_LOINC` in `contracts/vitals.py`), and a
site may map vendor-private codes to catalogue vitals (`SiteVocabulary`).

One vital can come from several measurements: heart rate from the ECG, from the SpO2
pulse, from an arterial line or the NIBP cuff; blood pressure from an arterial line or
the cuff; respiration from capnography, the airway or thoracic impedance; temperature
from core or peripheral sites. Each `Term` carries a `source` and a default
`priority` (lower wins); a site can reorder sources (`SiteVocabulary.priority`).

Codes are listed only where they are certain to measure the vital: an unlabelled
invasive pressure channel (`MDC_PRESS_BLD_*`, which may be CVP or PA) or skin and
airway temperatures are in `NOT_MODEL_VITALS` and set aside with that reason unless a
site maps them. The numeric codes follow ISO/IEEE 11073-10101 as monitors send them
(checked against the public PCD-01 samples in `tests/samples/hl7/`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PART_SCADA = 2  # measurements
PART_DIM = 4  # units of measure


@dataclass(frozen=True)
class Term:
    """One MDC measurement code that gives a catalogue vital."""

    code: int  # context-free code: partition * 65536 + term
    ref: str  # reference id, e.g. MDC_ECG_HEART_RATE
    vital: str  # catalogue vital (contracts/vitals.py)
    source: str  # what measured it: ecg, spo2, abp, nibp, pulse, co2, airway, tthor, core, ...
    priority: int  # among sources of the same vital: lower wins

    @property
    def mdil(self) -> str:
        """The Philips MDIL spelling, e.g. `0002-4182`."""
        return f"{self.code >> 16:04x}-{self.code & 0xFFFF:04x}"


def _t(code: int, ref: str, vital: str, source: str, priority: int) -> Term:
    return Term(code, ref, vital, source, priority)


TERMS: tuple[Term, ...] = (
    # Heart rate: the ECG first, then an arterial line's pulse, the oximeter's, the cuff's.
    _t(147842, "MDC_ECG_HEART_RATE", "HR", "ecg", 1),
    _t(149522, "MDC_BLD_PULS_RATE_INV", "HR", "abp", 2),
    _t(149530, "MDC_PULS_OXIM_PULS_RATE", "HR", "spo2", 3),
    _t(149538, "MDC_PLETH_PULS_RATE", "HR", "spo2", 3),
    _t(149546, "MDC_PULS_RATE_NON_INV", "HR", "nibp", 4),
    _t(149514, "MDC_PULS_RATE", "HR", "pulse", 5),
    # SpO2
    _t(150456, "MDC_PULS_OXIM_SAT_O2", "O2Sat", "spo2", 1),
    # Arterial line (continuous) before the cuff (intermittent).
    _t(150037, "MDC_PRESS_BLD_ART_ABP_SYS", "SBP", "abp", 1),
    _t(150038, "MDC_PRESS_BLD_ART_ABP_DIA", "DBP", "abp", 1),
    _t(150039, "MDC_PRESS_BLD_ART_ABP_MEAN", "MAP", "abp", 1),
    _t(150033, "MDC_PRESS_BLD_ART_SYS", "SBP", "abp", 1),
    _t(150034, "MDC_PRESS_BLD_ART_DIA", "DBP", "abp", 1),
    _t(150035, "MDC_PRESS_BLD_ART_MEAN", "MAP", "abp", 1),
    _t(150021, "MDC_PRESS_BLD_NONINV_SYS", "SBP", "nibp", 2),
    _t(150022, "MDC_PRESS_BLD_NONINV_DIA", "DBP", "nibp", 2),
    _t(150023, "MDC_PRESS_BLD_NONINV_MEAN", "MAP", "nibp", 2),
    _t(150301, "MDC_PRESS_CUFF_SYS", "SBP", "nibp", 2),
    _t(150302, "MDC_PRESS_CUFF_DIA", "DBP", "nibp", 2),
    _t(150303, "MDC_PRESS_CUFF_MEAN", "MAP", "nibp", 2),
    # Respiration: capnography / airway flow, the monitor's own choice, thoracic impedance.
    _t(151594, "MDC_CO2_RESP_RATE", "Resp", "co2", 1),
    _t(151570, "MDC_AWAY_RESP_RATE", "Resp", "airway", 1),
    _t(151562, "MDC_RESP_RATE", "Resp", "resp", 2),
    _t(151578, "MDC_TTHOR_RESP_RATE", "Resp", "tthor", 3),
    # Temperature: core sites, then body/tympanic/oral, then axilla and the unlabelled one.
    _t(150368, "MDC_TEMP_CORE", "Temp", "core", 1),
    _t(188436, "MDC_TEMP_BLD", "Temp", "core", 1),
    _t(150352, "MDC_TEMP_ART", "Temp", "core", 1),
    _t(150396, "MDC_TEMP_VEN", "Temp", "core", 1),
    _t(150372, "MDC_TEMP_ESOPH", "Temp", "core", 1),
    _t(150380, "MDC_TEMP_NASOPH", "Temp", "core", 1),
    _t(150348, "MDC_TEMP_FOLEY", "Temp", "core", 1),
    _t(188420, "MDC_TEMP_RECT", "Temp", "core", 1),
    _t(150364, "MDC_TEMP_BODY", "Temp", "body", 2),
    _t(150392, "MDC_TEMP_TYMP", "Temp", "tympanic", 2),
    _t(188428, "MDC_TEMP_EAR", "Temp", "tympanic", 2),
    _t(188424, "MDC_TEMP_ORAL", "Temp", "oral", 2),
    _t(188452, "MDC_TEMP_AXILLA", "Temp", "axilla", 3),
    _t(150344, "MDC_TEMP", "Temp", "temp", 3),
)

# Known measurements that are not a model vital (set aside with this reason).
NOT_MODEL_VITALS: dict[int, str] = {
    150016: "MDC_PRESS_BLD (invasive pressure of an unlabelled site: may be CVP or PA)",
    150017: "MDC_PRESS_BLD_SYS (invasive pressure of an unlabelled site)",
    150018: "MDC_PRESS_BLD_DIA (invasive pressure of an unlabelled site)",
    150019: "MDC_PRESS_BLD_MEAN (invasive pressure of an unlabelled site)",
    150045: "MDC_PRESS_BLD_ART_PULM_SYS (pulmonary artery)",
    150046: "MDC_PRESS_BLD_ART_PULM_DIA (pulmonary artery)",
    150047: "MDC_PRESS_BLD_ART_PULM_MEAN (pulmonary artery)",
    150087: "MDC_PRESS_BLD_VEN_CENT_MEAN (central venous)",
    150388: "MDC_TEMP_SKIN (skin, not body temperature)",
    150356: "MDC_TEMP_AWAY (airway gas)",
    188508: "MDC_TEMP_ROOM (room)",
    188500: "MDC_TEMP_MYO (myocardium, during surgery)",
    148065: "MDC_ECG_V_P_C_CNT (PVC count)",
    148066: "MDC_ECG_V_P_C_RATE (PVC rate)",
    150488: "MDC_BLD_PERF_INDEX (perfusion index)",
    150448: "MDC_PULS_OXIM_PERF_REL (perfusion)",
    150452: "MDC_PULS_OXIM_PLETH (waveform)",
    151708: "MDC_CONC_AWAY_CO2_ET (end-tidal CO2)",
}

BY_CODE: dict[int, Term] = {t.code: t for t in TERMS}
BY_REF: dict[str, Term] = {t.ref: t for t in TERMS}
# Names some vendors use for the same code (e.g. Philips: MDC_ECG_CARD_BEAT_RATE).
BY_REF["MDC_ECG_CARD_BEAT_RATE"] = BY_CODE[147842]

_MDIL = re.compile(r"^([0-9a-fA-F]{4})-([0-9a-fA-F]{4})$")


def parse_code(identifier: str, system: str = "") -> int | None:
    """The MDC context-free code of an OBX-3 identifier, or None when it is not one.

    `147842` (system MDC, or none) -> 147842; `0002-4182` (MDIL) -> 147842. A numeric
    identifier in another declared system (e.g. LN, 99MNDRY) is not an MDC code.
    """
    identifier = identifier.strip()
    sys_u = system.strip().upper()
    m = _MDIL.match(identifier)
    if m and sys_u in ("", "MDIL", "MDC"):
        return int(m.group(1), 16) << 16 | int(m.group(2), 16)
    if (
        identifier.isascii()
        and identifier.isdigit()
        and sys_u in ("", "MDC")
        and len(identifier) <= 9
    ):
        return int(identifier)
    return None


def mdil(code: int) -> str:
    """MDC code -> MDIL hex spelling (`0002-4182`)."""
    return f"{code >> 16:04x}-{code & 0xFFFF:04x}"


@dataclass(frozen=True)
class SiteVocabulary:
    """A site's additions: vendor-private codes mapped to vitals, and source priorities.

    `private` maps `(system, identifier)` (system upper-case, e.g. `("99MNDRY", "364")`)
    or a bare identifier to `(vital, source)`; `priority` maps a vital to its sources
    in order of preference (e.g. `{"HR": ["ecg", "spo2", "abp", "nibp", "pulse"]}`).
    """

    private: Mapping[tuple[str, str], tuple[str, str]] | None = None
    priority: Mapping[str, tuple[str, ...]] | None = None

    def rank(self, vital: str, source: str, default: int) -> int:
        """The priority of `source` for `vital` at this site (lower wins)."""
        order = (self.priority or {}).get(vital)
        if not order:
            return default
        return order.index(source) + 1 if source in order else len(order) + default

    def lookup(self, system: str, identifier: str) -> tuple[str, str] | None:
        table = self.private or {}
        return table.get((system.strip().upper(), identifier.strip())) or table.get(
            ("", identifier.strip())
        )


def site_vocabulary(
    private: Iterable[Mapping[str, str]] = (), priority: Mapping[str, Iterable[str]] | None = None
) -> SiteVocabulary:
    """Build a `SiteVocabulary` from config rows `{system, code, vital, source}`."""
    from .vitals import BY_NAME

    table: dict[tuple[str, str], tuple[str, str]] = {}
    for row in private:
        vital = row["vital"]
        if vital not in BY_NAME:
            raise ValueError(f"site code {row.get('code')!r}: {vital!r} is not a catalogue vital")
        table[(str(row.get("system", "")).upper(), str(row["code"]))] = (
            vital,
            str(row.get("source", "site")),
        )
    prio = {k: tuple(v) for k, v in (priority or {}).items()}
    for vital in prio:
        if vital not in BY_NAME:
            raise ValueError(f"priority for {vital!r}: not a catalogue vital")
    return SiteVocabulary(private=table, priority=prio)
