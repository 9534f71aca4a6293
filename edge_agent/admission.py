"""A bed's admission context, from the hospital's ADT feed (edge_agent/pcd01.py `AdtEvent`)
or entered at the bedside terminal (`Gateway.admit/transfer/discharge`, source "bedside",
for sites without an ADT feed: the typed or scanned id pseudonymised the same way).

Many monitors send no patient demographics and no ICU admission time (PV1-44 empty,
PID-7/PID-8 empty, sometimes no PID-3 at all). When the hospital sends its ADT messages
to the gateway's listener, the gateway keeps, per bed, who is admitted there: the
patient (as a keyed pseudonym of PID-3, never the raw id), the stay pseudonym, the ICU
admission time, age, sex and since when. A reading of that bed for the same patient
(or with no patient id) takes what it lacks from it (`fill_reading`); a reading for
another patient is used as it is (the monitor knows best) and counted as a mismatch.

ICU admission time: PV1-44 for an admission (A01/A04/A08/A13), else the event time;
for a transfer (A02/A12) the ICU admission of the bed the patient comes from when it
is one of this gateway's beds (the ICU stay goes on), else the transfer's time (the
patient enters the ICU then); PV1-44 is then the hospital admission (`hosp_admit`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contracts.timeutil import iso_ms, parse_iso_utc

from .decoder import Reading

ADMITS = frozenset({"A01", "A04", "A08", "A13"})  # the patient is (again) in PV1-3's bed
MOVES = frozenset({"A02", "A12"})  # to PV1-3's bed, from PV1-6's
ENDS = frozenset({"A03", "A11"})  # no longer in PV1-3's bed


@dataclass(frozen=True)
class Admission:
    """Who is admitted in one bed (pseudonymous: no raw identifier is ever held here)."""

    bed: str
    patient: str  # keyed pseudonym of PID-3 alone: tells patients apart, links to nothing
    stay: str  # the stay pseudonym readings of this admission carry
    icu_admit: datetime | None
    hosp_admit: datetime | None  # PV1-44 of a transfer into the ICU (else as icu_admit)
    age: float | None
    sex: float | None
    since: datetime  # time of the ADT event (or bedside entry) that admitted the patient here
    event: str  # that event (A01, A02, ...; "bedside" for an admission at the terminal)
    source: str = "adt"  # "adt": the hospital's feed; "bedside": admitted at the terminal

    def row(self) -> dict[str, Any]:
        """The store's row (times as ISO-8601 UTC)."""
        row = dataclasses.asdict(self)
        for k in ("icu_admit", "hosp_admit", "since"):
            row[k] = iso_ms(row[k]) if row[k] is not None else None
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Admission:
        def t(v: str | None) -> datetime | None:
            return parse_iso_utc(v) if v else None

        since = t(row["since"])
        assert since is not None
        return cls(
            bed=row["bed"],
            patient=row["patient"],
            stay=row["stay"],
            icu_admit=t(row["icu_admit"]),
            hosp_admit=t(row["hosp_admit"]),
            age=row["age"],
            sex=row["sex"],
            since=since,
            event=row["event"],
            source=row.get("source") or "adt",
        )

    def describe(self) -> str:
        """For the events screen and logs: the stay, times, age and sex (no raw id)."""
        admit = f"{self.icu_admit:%Y-%m-%d %H:%M}Z" if self.icu_admit else "unknown"
        age = f"{self.age:.0f}" if self.age is not None else "unknown"
        sex = {1.0: "M", 0.0: "F"}.get(self.sex, "unknown") if self.sex is not None else "unknown"
        return f"stay {self.stay}, ICU admission {admit}, age {age}, sex {sex}"


def fill_reading(adm: Admission, r: Reading) -> Reading:
    """Reading `r` of the admitted patient completed from the bed's admission: ICU
    admission time (and ICULOS), Age, Gender and HospAdmTime where the message had none
    (`r.stay` is left as it is: the caller sets the stay)."""
    static = dict(r.static)
    icu_admit = r.icu_admit
    if icu_admit is None and adm.icu_admit is not None:
        icu_admit = adm.icu_admit
        static["ICULOS"] = (r.obs_time - icu_admit) / timedelta(hours=1)
    if static.get("Age") is None:
        static["Age"] = adm.age
    if static.get("Gender") is None:
        static["Gender"] = adm.sex
    if static.get("HospAdmTime") is None and adm.hosp_admit and icu_admit:
        static["HospAdmTime"] = (adm.hosp_admit - icu_admit) / timedelta(hours=1)
    return dataclasses.replace(r, icu_admit=icu_admit, static=static)
