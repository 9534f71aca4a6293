"""MIMIC-III importer on the real MIMIC-III demo and on broken copies of it.

Expected values are computed here from the raw CSVs with plain pandas/datetime code
written for the test (a reading's hour, the hour's median, °F -> °C, age at intime),
not with the importer's functions.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import tarfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from contracts.canonical import COLUMNS
from contracts.paths import mimic_demo_archive
from converters.canonical_io import ImportReport, SourceError, load_canonical
from converters.mimic import ITEMS, import_mimic
from tests.support.data import needs_mimic

ARCHIVE = mimic_demo_archive()
pytestmark = needs_mimic

HR_ITEMS = (211, 220045)
TEMP_F_ITEMS = (678, 223761)

# The `demo` fixture: the import report, the canonical table and its fingerprint.
Demo = tuple[ImportReport, pd.DataFrame, str]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mimic")
    with tarfile.open(ARCHIVE) as tf:
        tf.extractall(d, filter="data")
    return d / "mimic3demo"


@pytest.fixture(scope="module")
def raw(demo_dir: Path) -> dict[str, pd.DataFrame]:
    ce = pd.read_csv(
        demo_dir / "CHARTEVENTS.csv",
        usecols=["icustay_id", "itemid", "charttime", "valuenum", "error"],
    )
    ce = ce[ce["itemid"].isin(list(ITEMS))]
    ce.index = ce.index + 2  # CSV record number, header = 1
    return {
        "ce": ce,
        "icu": pd.read_csv(demo_dir / "ICUSTAYS.csv"),
        "pat": pd.read_csv(demo_dir / "PATIENTS.csv"),
        "adm": pd.read_csv(demo_dir / "ADMISSIONS.csv"),
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    out = tmp_path_factory.mktemp("mimic_out") / "mimic.parquet"
    report = import_mimic(ARCHIVE, out)
    df, fp = load_canonical(out)
    return report, df, fp


def stay_with_most(raw: dict[str, pd.DataFrame], items: tuple[int, ...], dbsource: str) -> int:
    icu = raw["icu"]
    ids = set(icu.loc[icu["dbsource"] == dbsource, "icustay_id"])
    ce = raw["ce"]
    counts = ce[ce["itemid"].isin(items) & ce["icustay_id"].isin(ids)]["icustay_id"]
    return int(counts.value_counts().index[0])


def expected_hr_and_temp(raw: dict[str, pd.DataFrame], stay: int) -> pd.DataFrame:
    """Hourly medians of HR and Temp (°C) for one stay, computed directly from CSV rows."""
    icu = raw["icu"].set_index("icustay_id").loc[stay]
    intime = datetime.fromisoformat(icu["intime"])
    outtime = datetime.fromisoformat(icu["outtime"])
    ce = raw["ce"]
    ce = ce[(ce["icustay_id"] == stay) & (ce["error"].fillna(0) != 1) & ce["valuenum"].notna()]
    per_hour: dict[tuple[int, str], list[float]] = {}
    for r in ce.itertuples():
        t = datetime.fromisoformat(r.charttime)
        if t < intime or t > outtime:
            continue
        hour = int((t - intime).total_seconds() // 3600) + 1
        if r.itemid in HR_ITEMS:
            name, v = "HR", r.valuenum
            ok = 20 <= v <= 300
        elif r.itemid in (676, 223762, *TEMP_F_ITEMS):
            name = "Temp"
            v = (r.valuenum - 32) * 5 / 9 if r.itemid in TEMP_F_ITEMS else r.valuenum
            ok = 25 <= v <= 45
        else:
            continue
        if ok:
            per_hour.setdefault((hour, name), []).append(v)
    rows = [(h, n, float(np.median(vs))) for (h, n), vs in per_hour.items()]
    return pd.DataFrame(rows, columns=["hour", "vital", "value"])


@pytest.mark.parametrize("dbsource", ["carevue", "metavision"])
def test_real_demo_stay_matches_the_raw_chart_hour_by_hour(
    demo: Demo, raw: dict[str, pd.DataFrame], dbsource: str
) -> None:
    _, df, _ = demo
    stay = stay_with_most(raw, TEMP_F_ITEMS, dbsource)  # a stay charting °F temperatures
    got = df[df["stay_id"] == f"mimic-{stay}"].set_index("hour")
    want = expected_hr_and_temp(raw, stay)
    assert len(want) > 50
    for r in want.itertuples():
        assert math.isclose(got.loc[r.hour, r.vital], r.value, rel_tol=1e-9), (r.hour, r.vital)
    # Hours with nothing charted are NaN rows, and the grid is 1..last hour, contiguous.
    assert list(got.index) == list(range(1, got.index.max() + 1))
    hr_hours = set(want.loc[want["vital"] == "HR", "hour"])
    assert got.loc[[h for h in got.index if h not in hr_hours], "HR"].isna().all()
    assert (got["ICULOS"] == got.index).all()
    # Temperatures converted from °F land in the °C range.
    assert got["Temp"].dropna().between(34, 42).all()


def test_static_features_from_patients_and_admissions(
    demo: Demo, raw: dict[str, pd.DataFrame]
) -> None:
    _, df, _ = demo
    icu, pat, adm = raw["icu"], raw["pat"].set_index("subject_id"), raw["adm"]
    adm = adm.set_index("hadm_id")
    first = df.groupby("stay_id").first()
    capped = 0
    for r in icu.itertuples():
        sid = f"mimic-{r.icustay_id}"
        if sid not in first.index:
            continue
        intime = datetime.fromisoformat(r.intime)
        dob = datetime.fromisoformat(pat.loc[r.subject_id, "dob"])
        years = (intime - dob).days / 365.25
        age = first.loc[sid, "Age"]
        if years > 89:  # MIMIC's shifted elderly (about 300 years old)
            assert age == 90.0
            capped += 1
        else:
            assert abs(age - years) < 1 / 365  # within a day
        assert first.loc[sid, "Gender"] == (1.0 if pat.loc[r.subject_id, "gender"] == "M" else 0.0)
        admit = datetime.fromisoformat(adm.loc[r.hadm_id, "admittime"])
        hours = (admit - intime).total_seconds() / 3600
        assert math.isclose(first.loc[sid, "HospAdmTime"], hours, abs_tol=1e-6)
    assert capped > 0  # the demo has shifted patients: the cap is exercised


def test_mimic_label_is_unknown_never_zero(demo: Demo) -> None:
    report, df, _ = demo
    assert tuple(df.columns) == COLUMNS
    assert str(df["label"].dtype) == "Int8"
    assert df["label"].isna().all() and not (df["label"] == 0).any()
    assert report.positive_stays == 0 and report.unlabelled_rows == report.rows == len(df)
    assert (df["source"] == "mimic3").all()
    assert df["stay_id"].str.fullmatch(r"mimic-\d+").all()


def test_demo_report_counts_and_fingerprint(
    demo: Demo, raw: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    report, df, fp = demo
    icu = raw["icu"]
    assert report.stays == df["stay_id"].nunique()
    skipped = [p for p in report.problems if p.action == "skipped stay"]
    assert report.stays + len(skipped) == len(icu)  # every stay imported or explained
    flagged = int((raw["ce"]["error"] == 1).sum())
    assert report.set_aside["CHARTEVENTS vital rows flagged error=1 by the source"] == flagged
    # Each implausible reading is reported with its CSV row, and that row is the reading.
    implausible = [p for p in report.problems if p.action == "set NaN"]
    assert implausible and report.values_blanked == len(implausible)
    ce = raw["ce"]
    for p in implausible[:50]:
        itemid = int(p.column.split("itemid ")[1].rstrip(")"))
        assert ce.loc[p.row, "itemid"] == itemid
        assert float(p.value) == ce.loc[p.row, "valuenum"]
    # Fingerprint: sha256 over the sorted (file name, sha256) of the four input files.
    h = hashlib.sha256()
    with tarfile.open(ARCHIVE) as tf:
        members = {Path(m.name).name: m for m in tf.getmembers()}
        for name in sorted(["ADMISSIONS.csv", "CHARTEVENTS.csv", "ICUSTAYS.csv", "PATIENTS.csv"]):
            digest = hashlib.sha256(tf.extractfile(members[name]).read()).hexdigest()
            h.update(f"{name}\t{digest}\n".encode())
    assert fp == report.fingerprint == h.hexdigest()


def subset(
    demo_dir: Path,
    raw: dict[str, pd.DataFrame],
    dest: Path,
    stays: list[int],
    upper: bool,
    gz: bool,
) -> Path:
    """A folder holding the demo's rows of `stays` (optionally UPPERCASE headers, .csv.gz)."""
    dest.mkdir()
    icu = raw["icu"][raw["icu"]["icustay_id"].isin(stays)]
    tables = {
        "ICUSTAYS": icu,
        "PATIENTS": raw["pat"][raw["pat"]["subject_id"].isin(icu["subject_id"])],
        "ADMISSIONS": raw["adm"][raw["adm"]["hadm_id"].isin(icu["hadm_id"])],
    }
    ce = pd.read_csv(demo_dir / "CHARTEVENTS.csv", dtype=str, keep_default_na=False)
    tables["CHARTEVENTS"] = ce[ce["icustay_id"].isin([str(s) for s in stays])]
    for name, t in tables.items():
        t = t.rename(columns=str.upper) if upper else t
        if gz and name == "CHARTEVENTS":
            with gzip.open(dest / f"{name}.csv.gz", "wt") as f:
                t.to_csv(f, index=False)
        else:
            t.to_csv(dest / f"{name}.csv", index=False)
    return dest


def test_uppercase_full_database_layout_gives_the_same_stays(
    demo: Demo,
    demo_dir: Path,
    raw: dict[str, pd.DataFrame],
    tmp_path: Path,
) -> None:
    _, df, _ = demo
    stays = [
        stay_with_most(raw, TEMP_F_ITEMS, "carevue"),
        stay_with_most(raw, HR_ITEMS, "metavision"),
    ]
    folder = subset(demo_dir, raw, tmp_path / "upper", stays, upper=True, gz=True)
    report = import_mimic(folder, tmp_path / "upper.parquet")
    got, fp = load_canonical(tmp_path / "upper.parquet")
    want = df[df["stay_id"].isin([f"mimic-{s}" for s in stays])].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)
    assert report.files_read == 4 and fp  # a different file set: its own fingerprint
    assert fp != demo[2]


def test_broken_demo_files_are_reported_and_the_rest_imported(
    demo: Demo,
    demo_dir: Path,
    raw: dict[str, pd.DataFrame],
    tmp_path: Path,
) -> None:
    _, df, _ = demo
    a = stay_with_most(raw, TEMP_F_ITEMS, "carevue")
    b = stay_with_most(raw, HR_ITEMS, "metavision")
    folder = subset(demo_dir, raw, tmp_path / "broken", [a, b], upper=False, gz=False)
    ce = pd.read_csv(folder / "CHARTEVENTS.csv", dtype=str, keep_default_na=False)
    # A garbage number in an HR reading of stay b, and a °F reading under a °C item of a.
    hr_b = ce.index[(ce["icustay_id"] == str(b)) & ce["itemid"].isin(["220045"])][10]
    ce.loc[hr_b, ["value", "valuenum"]] = ["9O", "9O"]
    f_a = ce.index[(ce["icustay_id"] == str(a)) & (ce["itemid"] == "678")][5]
    fahrenheit = ce.loc[f_a, "valuenum"]
    ce.loc[f_a, "itemid"] = "676"  # Temperature C, value still in °F
    ce.to_csv(folder / "CHARTEVENTS.csv", index=False)
    # A ragged line (one field too many) as the first record: every later record's
    # number moves by one, and the report must still name the right ones.
    lines = (folder / "CHARTEVENTS.csv").read_text().split("\n")
    lines.insert(1, lines[1] + ",extra")
    # A truncated copy: the file stops in the middle of its last line.
    data = "\n".join(lines).encode()
    (folder / "CHARTEVENTS.csv").write_bytes(data[: data.rfind(b"\n", 0, len(data) - 1) + 30])
    last = len(ce) + 2  # record number of the cut line
    # PATIENTS with a wrong header: no date of birth.
    pat = pd.read_csv(folder / "PATIENTS.csv").rename(columns={"dob": "birthday"})
    pat.to_csv(folder / "PATIENTS.csv", index=False)

    report = import_mimic(folder, tmp_path / "broken.parquet")
    got, _ = load_canonical(tmp_path / "broken.parquet")
    by = {(p.file, p.row): p for p in report.problems}

    ragged = by[("CHARTEVENTS.csv", 2)]
    assert "16 fields, the header 15" in ragged.reason and ragged.action == "skipped row"
    garbage = by[("CHARTEVENTS.csv", hr_b + 3)]
    assert garbage.value == "9O" and "not a number" in garbage.reason
    wrong_unit = by[("CHARTEVENTS.csv", f_a + 3)]
    assert wrong_unit.column == "Temp (itemid 676)" and wrong_unit.action == "set NaN"
    assert "looks like °F" in wrong_unit.reason and float(wrong_unit.value) == float(fahrenheit)
    cut = by[("CHARTEVENTS.csv", last)]
    assert "truncated" in cut.reason and cut.action == "skipped row"
    header = by[("PATIENTS.csv", 1)]
    assert "wrong header" in header.reason and "dob" in header.reason
    assert report.files_skipped == 1 and report.files_read == 3

    # Everything else came through: the vitals equal the clean import except the cells
    # whose hour held a broken reading; Age/Gender are unknown without PATIENTS.
    assert set(got["stay_id"]) == {f"mimic-{a}", f"mimic-{b}"}
    assert got["Age"].isna().all() and got["Gender"].isna().all()
    want = df[df["stay_id"].isin(set(got["stay_id"]))].reset_index(drop=True)
    assert len(got) == len(want)
    vitals = ["HR", "O2Sat", "Temp", "SBP", "MAP", "DBP", "Resp"]
    differs = ~np.isclose(got[vitals], want[vitals], equal_nan=True)
    assert differs.sum() <= 4  # only the hours of the ragged, garbage, °F and cut readings
    pd.testing.assert_series_equal(got["HospAdmTime"], want["HospAdmTime"])


def test_missing_or_unusable_sources_fail_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        import_mimic(tmp_path / "nope", tmp_path / "x.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="lacks CHARTEVENTS, ICUSTAYS"):
        import_mimic(tmp_path / "empty", tmp_path / "x.parquet")
    # A truncated demo archive: CHARTEVENTS, its first member, cannot be read whole.
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(ARCHIVE.read_bytes()[:2_000_000])
    with pytest.raises(SourceError):
        import_mimic(cut, tmp_path / "x.parquet")


def test_cli_mimic_prints_summary(
    demo_dir: Path, raw: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    from converters.cli import app

    stay = stay_with_most(raw, HR_ITEMS, "metavision")
    folder = subset(demo_dir, raw, tmp_path / "one", [stay], upper=False, gz=False)
    out = tmp_path / "one.parquet"
    res = CliRunner().invoke(app, ["mimic", str(folder), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "stays: 1" in res.output and "positive stays: 0" in res.output
    assert f"fingerprint: {load_canonical(out)[1]}" in res.output
    res = CliRunner().invoke(app, ["mimic", str(tmp_path / "none"), "--out", str(out)])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_a_truncated_gzip_chartevents_keeps_the_rows_before_the_break(
    demo_dir: Path,
    raw: dict[str, pd.DataFrame],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    import converters.mimic as mimic

    monkeypatch.setattr(mimic, "BLOCK_BYTES", 64 << 10)  # many blocks from a small file
    stay = stay_with_most(raw, HR_ITEMS, "metavision")
    folder = subset(demo_dir, raw, tmp_path / "gz", [stay], upper=True, gz=True)
    gz = folder / "CHARTEVENTS.csv.gz"
    text = gzip.decompress(gz.read_bytes()).decode()
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size * 6 // 10])

    report = import_mimic(folder, tmp_path / "gz.parquet")
    got, _ = load_canonical(tmp_path / "gz.parquet")
    (p,) = [p for p in report.problems if p.action == "skipped rest of file"]
    assert p.file == "CHARTEVENTS.csv.gz" and "truncated or corrupt" in p.reason
    n_kept = int(p.reason.split("after ")[1].split(" rows")[0])
    n_all = text.count("\n") - 1
    assert 0 < n_kept < n_all and p.row == n_kept + 2

    # What was kept is exactly what a file ending after those records gives.
    short = tmp_path / "short"
    shutil.copytree(folder, short)
    lines = text.split("\n")
    (short / "CHARTEVENTS.csv.gz").write_bytes(
        gzip.compress(("\n".join(lines[: n_kept + 1]) + "\n").encode())
    )
    clean = import_mimic(short, tmp_path / "short.parquet")
    want, _ = load_canonical(tmp_path / "short.parquet")
    assert not [q for q in clean.problems if q.action.startswith("skipped")]
    pd.testing.assert_frame_equal(got, want)
