"""The canonical hourly vitals table that every importer produces.

One row per stay-hour. Written as Parquet. Columns, in order:

| column       | type    | meaning                                                   |
|--------------|---------|-----------------------------------------------------------|
| stay_id      | string  | pseudonymous stay identifier (source prefix + source id)  |
| hour         | int     | hours since ICU admission (row time), 0-based or source's  |
| HR..Resp     | float   | vital signs in catalogue units, NaN when not measured      |
| Age          | float   | years (>= 90 written as 90 or source's cap)               |
| Gender       | float   | 0 female, 1 male                                          |
| HospAdmTime  | float   | hours between hospital and ICU admission (<= 0)           |
| ICULOS       | float   | hours since ICU admission (the row's time)                |
| label        | Int8    | SepsisLabel (1 from 6 h before onset); <NA> when unknown  |
| source       | string  | dataset the row came from (physionet2019, mimic3, fleet)  |
"""

from __future__ import annotations

from .vitals import STATIC_FEATURES, VITAL_NAMES

KEY_COLUMNS: tuple[str, ...] = ("stay_id", "hour")
LABEL_COLUMN = "label"
SOURCE_COLUMN = "source"
COLUMNS: tuple[str, ...] = (
    *KEY_COLUMNS,
    *VITAL_NAMES,
    *STATIC_FEATURES,
    LABEL_COLUMN,
    SOURCE_COLUMN,
)
# The columns' pandas dtypes (nullable Int8 label), for every reader and writer of the table.
DTYPES: dict[str, str] = {
    "stay_id": "string",
    "hour": "int64",
    **dict.fromkeys(VITAL_NAMES, "float64"),
    **dict.fromkeys(STATIC_FEATURES, "float64"),
    LABEL_COLUMN: "Int8",
    SOURCE_COLUMN: "string",
}
