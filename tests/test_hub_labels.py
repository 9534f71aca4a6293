"""Outcome labels (CSV import, nurse feedback) and the canonical export, on REAL
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cloud_hub.export import export_parquet
from cloud_hub.labels import HORIZON, LabelFileError, Outcome, import_outcomes, label_for
from cloud_hub.store import Accepted, write_batch
from cloud_hub.store.models import OutcomeLabel
from contracts.canonical import COLUMNS
from contracts.vitals import VITAL_NAMES
from converters.canonical_io import load_canonical, read_fingerprint
from tests.support.hub import T0, feedback, vitals
from vigil_cli.main import app


def outcomes(engine) -> dict[str, tuple[str, object]]:
    with engine.connect() as c:
        rows = c.execute(select(OutcomeLabel.__table__).where(OutcomeLabel.source == "records"))
        return {r.stay: (r.kind, r.onset_time) for r in rows}


CSV = """stay_id,onset_time
s1,2026-03-01T18:00:00Z
s2,
s3,not-a-time
,2026-03-01T10:00:00Z
s/4,2026-03-01T10:00:00Z
s1,2026-03-01T19:00:00Z
s5,2026-03-01 20:30:00
s6,2026-03-01T10:00:00Z,extra
"""


def test_labels_import_stores_good_rows_and_reports_bad_rows_by_number(db, tmp_path):
    _, engine = db
    path = tmp_path / "outcomes.csv"
    path.write_text(CSV)
    report = import_outcomes(engine, path)
    assert report.imported == 3
    assert [n for n, _ in report.errors] == [4, 5, 6, 7, 9]
    msgs = dict(report.errors)
    assert "not-a-time" in msgs[4] and "stay_id" in msgs[5] and "s/4" in msgs[6]
    assert "row 2" in msgs[7] and "more than the header" in msgs[9]
    got = outcomes(engine)
    assert set(got) == {"s1", "s2", "s5"}
    assert got["s2"] == ("no_sepsis", None)
    onset = got["s5"][1]
    assert (onset.hour, onset.minute) == (20, 30)  # naive times are UTC
    # a corrected file replaces the stay's record, it does not add a second one
    path.write_text("stay_id,onset_time\ns2,2026-03-02T01:00:00+01:00\n")
    assert import_outcomes(engine, path).errors == []
    kind, onset = outcomes(engine)["s2"]
    assert kind == "onset" and onset.hour == 0 and onset.day == 2


def test_labels_import_refuses_a_file_without_the_columns(db, tmp_path):
    _, engine = db
    path = tmp_path / "x.csv"
    path.write_text("patient,when\np1,2026-01-01\n")
    with pytest.raises(LabelFileError, match="stay_id, onset_time"):
        import_outcomes(engine, path)


def test_labels_import_cli_lists_bad_rows_and_exits_1(db, tmp_path):
    url, _ = db
    path = tmp_path / "outcomes.csv"
    path.write_text(CSV)
    res = CliRunner().invoke(app, ["hub", "labels", "import", str(path), "--db", url])
    assert res.exit_code == 1, res.output
    assert "row 4:" in res.output and "row 9:" in res.output
    assert "imported 3 outcome(s); 5 bad row(s)" in res.output


def test_label_rule_matches_the_base_dataset():
    onset = T0 + timedelta(hours=10)
    rec = [Outcome("records", "onset", onset)]
    assert label_for(onset - HORIZON - timedelta(seconds=1), rec) == 0
    assert label_for(onset - HORIZON, rec) == 1
    assert label_for(T0, [Outcome("records", "no_sepsis", None)]) == 0
    assert label_for(T0, []) is None
    # the hospital's record wins over a nurse's impression
    both = [Outcome("feedback", "deteriorating", T0), Outcome("records", "no_sepsis", None)]
    assert label_for(T0 + timedelta(hours=1), both) == 0
    cleared = [Outcome("feedback", "false_alarm", T0 + timedelta(hours=8))]
    assert label_for(T0 + timedelta(hours=2), cleared) == 0
    assert label_for(T0 + timedelta(hours=3), cleared) is None


def test_export_writes_the_canonical_table_with_labels_from_outcomes(db, tmp_path):
    _, engine = db
    msgs = []
    for stay in ("s1", "s2", "s3", "s4"):
        for h in range(12):
            msgs.append(vitals(stay=stay, hour=h + 0.25, HR=80.0 + h))
    # two more summaries in s1's hour 0, one of them without a heart rate
    msgs += [vitals(stay="s1", hour=0.5, HR=100.0), vitals(stay="s1", hour=0.75, HR=None)]
    write_batch(engine, [Accepted(m, T0) for m in msgs])
    write_batch(
        engine, [Accepted(feedback("false_alarm", stay="s4", at=T0 + timedelta(hours=8)), T0)]
    )
    csv = tmp_path / "o.csv"
    csv.write_text("stay_id,onset_time\ns1,2026-03-01T18:00:00Z\nfleet:s2,\n")
    assert not import_outcomes(engine, csv).errors
    out = tmp_path / "fleet.parquet"
    report = export_parquet(engine, out)
    t, fp = load_canonical(out)  # read back as training reads the base dataset
    assert len(fp) == 64 and fp == read_fingerprint(out)
    assert export_parquet(engine, tmp_path / "again.parquet") == report
    assert read_fingerprint(tmp_path / "again.parquet") == fp  # same data, same fingerprint
    assert list(pd.read_parquet(out).columns) == list(COLUMNS)
    assert list(t.columns) == list(COLUMNS)
    assert str(t["hour"].dtype) == "int64" and str(t["label"].dtype) == "Int8"
    assert all(str(t[c].dtype) == "float64" for c in (*VITAL_NAMES, "Age", "ICULOS"))
    assert pd.api.types.is_string_dtype(t["stay_id"]) and set(t["source"]) == {"fleet"}
    assert len(t) == 48 and report.rows == 48 and report.stays == 4
    s1 = t[t.stay_id == "fleet:s1"].set_index("hour")
    assert s1.loc[0, "HR"] == pytest.approx(90.0)  # mean of 80 and 100; the None skipped
    assert (s1["ICULOS"] == s1.index).all() and (s1["Age"] == 64.0).all()
    # s1: onset 18:00 = T0 + 10 h -> 1 from T0 + 4 h; hour 3's data ends T0 + 3h20m
    assert s1["label"].tolist() == [0] * 4 + [1] * 8
    assert t[t.stay_id == "fleet:s2"]["label"].tolist() == [0] * 12
    assert t[t.stay_id == "fleet:s3"]["label"].isna().all()
    # s4: false alarm at T0 + 8 h -> hours whose data ends by T0 + 2 h are 0, later unknown
    s4 = t[t.stay_id == "fleet:s4"]["label"]
    assert s4.tolist()[:2] == [0, 0] and s4.iloc[2:].isna().all()
    assert (report.positive, report.negative, report.unknown) == (8, 18, 22)
    only = export_parquet(engine, tmp_path / "l.parquet", only_labelled=True)
    assert only.rows == 26 and only.unknown == 0


def test_export_of_an_empty_store_is_an_empty_canonical_table(db, tmp_path):
    _, engine = db
    out = tmp_path / "empty.parquet"
    assert export_parquet(engine, out).rows == 0
    t = pd.read_parquet(out)
    assert list(t.columns) == list(COLUMNS) and len(t) == 0
