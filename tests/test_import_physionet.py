"""PhysioNet 2019 importer on real stays of set A and on broken copies of them.

Expected values come from the raw .psv text read here with the csv module (not the
importer's parser) and from the archive's published SHA256SUMS.txt.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from contracts.canonical import COLUMNS
from contracts.paths import physionet_archive
from contracts.vitals import STATIC_FEATURES, VITAL_NAMES
from converters.canonical_io import FINGERPRINT_KEY, SourceError, load_canonical
from converters.physionet import STANDARD_HEADER, import_physionet
from tests.support.data import needs_physionet

ARCHIVE = physionet_archive()
SUMS = ARCHIVE.parent / "SHA256SUMS.txt"
# p000001-p000012: includes septic stays (p000009, p000011) and stays with Temp.
NAMES = [f"p{i:06d}.psv" for i in range(1, 13)]

pytestmark = needs_physionet


@pytest.fixture(scope="module")
def raw_files() -> dict[str, bytes]:
    """The real bytes of NAMES, read from the archive."""
    out: dict[str, bytes] = {}
    with tarfile.open(ARCHIVE, "r|gz") as tf:
        for m in tf:
            base = Path(m.name).name
            if base in NAMES:
                out[base] = tf.extractfile(m).read()
                if len(out) == len(NAMES):
                    break
    assert sorted(out) == NAMES
    return out


@pytest.fixture()
def folder(tmp_path: Path, raw_files: dict[str, bytes]) -> Path:
    d = tmp_path / "psv"
    d.mkdir()
    for name, data in raw_files.items():
        (d / name).write_bytes(data)
    return d


def raw_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode()), delimiter="|"))


def num(cell: str) -> float:
    return float(cell)  # 'NaN' reads as nan


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def published_sums() -> dict[str, str]:
    out = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split()
        out[Path(name).name] = digest
    return out


def expected_fingerprint(names: list[str], digests: dict[str, str]) -> str:
    h = hashlib.sha256()
    for n in sorted(names):
        h.update(f"{n}\t{digests[n]}\n".encode())
    return h.hexdigest()


def assert_stay_matches_raw(df: pd.DataFrame, name: str, data: bytes) -> None:
    stay = df[df["stay_id"] == "pn-" + name.removesuffix(".psv")]
    rows = raw_rows(data)
    assert len(stay) == len(rows)
    for (_, got), want in zip(stay.iterrows(), rows, strict=True):
        assert got["hour"] == int(num(want["ICULOS"]))
        for c in (*VITAL_NAMES, *STATIC_FEATURES):
            assert same(float(got[c]), num(want[c])), (name, want["ICULOS"], c)
        assert got["label"] == int(want["SepsisLabel"])
        assert got["source"] == "physionet2019"


def test_real_stays_from_the_archive_round_trip_cell_by_cell(
    tmp_path: Path, raw_files: dict[str, bytes]
) -> None:
    out = tmp_path / "pn.parquet"
    asked = ["pn-p000001", "p000009", "p000011", "pn-p999999"]
    report = import_physionet(ARCHIVE, out, stays=asked)
    df, fp = load_canonical(out)

    assert tuple(df.columns) == COLUMNS
    assert str(df["label"].dtype) == "Int8" and str(df["stay_id"].dtype) == "string"
    assert list(df["stay_id"].unique()) == ["pn-p000001", "pn-p000009", "pn-p000011"]
    for name in ("p000001.psv", "p000009.psv", "p000011.psv"):
        assert_stay_matches_raw(df, name, raw_files[name])
    # Septic stays: the label is SepsisLabel itself, 1 from 6 h before onset to the end.
    septic = df[df["stay_id"] == "pn-p000009"]
    assert septic["label"].iloc[-1] == 1 and septic["label"].iloc[0] == 0
    assert report.stays == 3 and report.rows == len(df)
    assert report.positive_stays == 2
    assert report.positive_rows == int((df["label"] == 1).sum())
    (missing,) = report.problems
    assert missing.file == "pn-p999999" and "not in the source" in missing.reason
    assert report.files_skipped == 0
    # The fingerprint is the one built from the dataset's published per-file sha256.
    want = expected_fingerprint(["p000001.psv", "p000009.psv", "p000011.psv"], published_sums())
    assert fp == report.fingerprint == want
    assert pq.read_schema(out).metadata[FINGERPRINT_KEY].decode() == want


def test_folder_archive_and_single_file_give_the_same_table(
    tmp_path: Path, folder: Path, raw_files: dict[str, bytes]
) -> None:
    a = import_physionet(folder, tmp_path / "a.parquet")
    b = import_physionet(ARCHIVE, tmp_path / "b.parquet", stays=NAMES)
    da, fa = load_canonical(tmp_path / "a.parquet")
    db, fb = load_canonical(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(da, db)
    assert fa == fb == a.fingerprint == b.fingerprint
    assert fa == expected_fingerprint(NAMES, published_sums())
    for name, data in raw_files.items():
        assert_stay_matches_raw(da, name, data)

    one = import_physionet(folder / "p000004.psv", tmp_path / "c.parquet")
    dc, _ = load_canonical(tmp_path / "c.parquet")
    assert one.stays == 1
    pd.testing.assert_frame_equal(
        dc, da[da["stay_id"] == "pn-p000004"].reset_index(drop=True), check_like=False
    )


def test_limit_takes_the_first_stays_in_sorted_order(tmp_path: Path) -> None:
    report = import_physionet(ARCHIVE, tmp_path / "l.parquet", limit=3)
    df, fp = load_canonical(tmp_path / "l.parquet")
    first3 = sorted(published_sums())[:3]
    assert list(df["stay_id"].unique()) == ["pn-" + n.removesuffix(".psv") for n in first3]
    assert fp == report.fingerprint == expected_fingerprint(first3, published_sums())


def test_fingerprint_is_stable_and_changes_with_one_cell(tmp_path: Path, folder: Path) -> None:
    # The dataset's published checksums beside the files: each file is checked too.
    sums = published_sums()
    (folder / "SHA256SUMS.txt").write_text(
        "".join(f"{sums[n]}  training_setA/{n}\n" for n in NAMES)
    )
    first = import_physionet(folder, tmp_path / "1.parquet")
    again = import_physionet(folder, tmp_path / "2.parquet")
    assert first.fingerprint == again.fingerprint
    assert first.problems == [] and "all match" in first.notes[0]
    f = folder / "p000003.psv"
    lines = f.read_text().split("\n")
    cells = lines[4].split("|")
    cells[0] = "101" if cells[0] != "101" else "102"  # a plausible HR: only the bytes differ
    lines[4] = "|".join(cells)
    f.write_text("\n".join(lines))
    changed = import_physionet(folder, tmp_path / "3.parquet")
    assert changed.fingerprint != first.fingerprint
    (p,) = changed.problems
    assert p.file == "p000003.psv" and "not the published file" in p.reason
    assert "1 differ" in changed.notes[0]


def test_broken_files_are_reported_by_file_row_and_reason_and_the_rest_imported(
    tmp_path: Path, folder: Path, raw_files: dict[str, bytes]
) -> None:
    def lines_of(name: str) -> list[str]:
        return raw_files[name].decode().split("\n")

    # Wrong header: HR renamed, so the file cannot be read as challenge data.
    lines = lines_of("p000002.psv")
    lines[0] = lines[0].replace("HR|", "HeartRate|", 1)
    (folder / "p000002.psv").write_text("\n".join(lines))
    # A garbage cell: HR on line 5 of p000003.
    lines = lines_of("p000003.psv")
    cells = lines[4].split("|")
    cells[0] = "8O"  # letter O, a classic typo
    lines[4] = "|".join(cells)
    (folder / "p000003.psv").write_text("\n".join(lines))
    # A temperature written in °F in the °C column: p000001 line 10.
    lines = lines_of("p000001.psv")
    cells = lines[9].split("|")
    cells[2] = "99.1"
    lines[9] = "|".join(cells)
    (folder / "p000001.psv").write_text("\n".join(lines))
    # A file cut mid-line (an interrupted copy).
    data = raw_files["p000005.psv"]
    cut = data.rfind(b"\n", 0, len(data) - 1) + 20
    (folder / "p000005.psv").write_bytes(data[:cut])
    n5 = len(raw_rows(data))

    report = import_physionet(folder, tmp_path / "broken.parquet")
    df, _ = load_canonical(tmp_path / "broken.parquet")
    by = {(p.file, p.row, p.column): p for p in report.problems}

    header = by[("p000002.psv", 1, None)]
    assert "wrong header" in header.reason and "HR" in header.reason
    assert header.action == "skipped file"
    assert "pn-p000002" not in set(df["stay_id"])

    garbage = by[("p000003.psv", 5, "HR")]
    assert garbage.value == "8O" and "not a number" in garbage.reason
    assert garbage.action == "set NaN"

    fahrenheit = by[("p000001.psv", 10, "Temp")]
    assert fahrenheit.value == "99.1" and "°F" in fahrenheit.reason
    assert fahrenheit.action == "set NaN"

    (trunc,) = [p for p in report.problems if p.file == "p000005.psv"]
    assert trunc.row == n5 + 1 and trunc.action == "skipped row" and "truncated" in trunc.reason

    # The rest is imported exactly; the bad cells are NaN and their rows kept.
    assert report.files_skipped == 1 and report.rows_skipped == 1
    assert report.values_blanked == 2
    assert report.stays == len(NAMES) - 1
    for name in NAMES:
        if name not in ("p000001.psv", "p000002.psv", "p000003.psv", "p000005.psv"):
            assert_stay_matches_raw(df, name, raw_files[name])
    s3 = df[df["stay_id"] == "pn-p000003"].reset_index(drop=True)
    assert len(s3) == len(raw_rows(raw_files["p000003.psv"]))
    assert np.isnan(s3.loc[3, "HR"])  # line 5 = fourth data row
    assert s3.loc[3, "O2Sat"] == num(raw_rows(raw_files["p000003.psv"])[3]["O2Sat"])
    s1 = df[df["stay_id"] == "pn-p000001"].reset_index(drop=True)
    assert np.isnan(s1.loc[8, "Temp"]) and len(s1) == len(raw_rows(raw_files["p000001.psv"]))
    assert len(df[df["stay_id"] == "pn-p000005"]) == n5 - 1


def test_a_truncated_archive_keeps_the_members_before_the_break(
    tmp_path: Path, raw_files: dict[str, bytes]
) -> None:
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        for name in NAMES:
            info = tarfile.TarInfo(f"training_setA/{name}")
            info.size = len(raw_files[name])
            tf.addfile(info, io.BytesIO(raw_files[name]))
    whole = good.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: int(len(whole) * 0.6)])

    report = import_physionet(cut, tmp_path / "cut.parquet")
    df, _ = load_canonical(tmp_path / "cut.parquet")
    (p,) = [p for p in report.problems if p.file == str(cut)]
    assert "truncated or corrupt" in p.reason and p.action == "skipped rest of archive"
    assert 0 < report.stays < len(NAMES)
    for sid in df["stay_id"].unique():  # what was kept is intact
        name = sid.removeprefix("pn-") + ".psv"
        assert_stay_matches_raw(df, name, raw_files[name])

    with pytest.raises(SourceError, match="no .psv stays"):
        (tmp_path / "tiny.tar.gz").write_bytes(whole[:200])
        import_physionet(tmp_path / "tiny.tar.gz", tmp_path / "t.parquet")


def test_cli_prints_the_summary_and_fails_on_a_missing_source(tmp_path: Path, folder: Path) -> None:
    from converters.cli import app

    (folder / "p000006.psv").write_text("not|a|challenge|file\n1|2|3|4\n")
    out, report_json = tmp_path / "cli.parquet", tmp_path / "report.json"
    args = ["physionet", str(folder), "--out", str(out), "--limit", "7"]
    res = CliRunner().invoke(app, [*args, "--report", str(report_json)])
    assert res.exit_code == 0, res.output
    assert "stays: 6" in res.output and "files skipped: 1" in res.output
    assert "p000006.psv:1: wrong header" in res.output
    assert f"fingerprint: {load_canonical(out)[1]}" in res.output
    saved = json.loads(report_json.read_text())
    assert saved["stays"] == 6 and saved["fingerprint"] == load_canonical(out)[1]
    (p,) = saved["problem_list"]
    assert (p["file"], p["row"], p["action"]) == ("p000006.psv", 1, "skipped file")

    res = CliRunner().invoke(app, ["physionet", str(tmp_path / "nope"), "--out", str(out)])
    assert res.exit_code != 0 and "does not exist" in res.output


def test_irregular_but_readable_files_import_the_same_values(
    tmp_path: Path, folder: Path, raw_files: dict[str, bytes]
) -> None:
    # Windows line ends.
    (folder / "p000006.psv").write_bytes(raw_files["p000006.psv"].replace(b"\n", b"\r\n"))
    # Columns in another order (a re-export): the header says where each one is.
    rows = [line.split("|") for line in raw_files["p000007.psv"].decode().strip().split("\n")]
    (folder / "p000007.psv").write_text("\n".join("|".join(r[::-1]) for r in rows) + "\n")
    # A row written twice, out of order, at the end: the first one of that hour wins.
    lines = raw_files["p000008.psv"].decode().strip().split("\n")
    dup = lines[3].split("|")
    dup[0] = "150"  # differs from the original row, so the test sees which one was kept
    (folder / "p000008.psv").write_text("\n".join([*lines, "|".join(dup)]) + "\n")

    report = import_physionet(folder, tmp_path / "irregular.parquet")
    df, _ = load_canonical(tmp_path / "irregular.parquet")
    for name in NAMES:
        assert_stay_matches_raw(df, name, raw_files[name])
    (p,) = report.problems
    assert (p.file, p.row, p.column) == ("p000008.psv", len(lines) + 1, "ICULOS")
    assert "already seen" in p.reason and p.action == "skipped row"
    assert report.rows_skipped == 1 and report.files_skipped == 0


@st.composite
def stay_rows(draw: st.DrawFn) -> list[list[str]]:
    """Rows of a challenge file: plausible vitals or NaN, increasing ICULOS, 0/1 label."""
    from contracts.vitals import BY_NAME

    header = STANDARD_HEADER.split("|")
    n = draw(st.integers(1, 12))
    start = draw(st.integers(1, 50))
    rows = []
    for k in range(n):
        row = ["NaN"] * len(header)
        for name in VITAL_NAMES:
            v = BY_NAME[name]
            cell = draw(st.one_of(st.just("NaN"), st.floats(v.low, v.high).map(repr)))
            row[header.index(name)] = cell
        row[header.index("Age")] = repr(draw(st.floats(15, 100)))
        row[header.index("Gender")] = draw(st.sampled_from(["0", "1"]))
        row[header.index("HospAdmTime")] = repr(draw(st.floats(-1000, 0)))
        row[header.index("ICULOS")] = str(start + k)
        row[header.index("SepsisLabel")] = draw(st.sampled_from(["0", "1"]))
        rows.append(row)
    return rows


@settings(max_examples=25, deadline=None)
@given(st.lists(stay_rows(), min_size=1, max_size=4))
def test_bulk_and_line_by_line_parsers_agree(stays: list[list[list[str]]]) -> None:
    """The fast path (one Arrow read) and the slow one (CRLF forces line by line) give
    the same table, and both equal the numbers written."""
    with tempfile.TemporaryDirectory() as tmp:
        fast, slow = Path(tmp, "fast"), Path(tmp, "slow")
        fast.mkdir()
        slow.mkdir()
        for i, rows in enumerate(stays):
            text = "\n".join([STANDARD_HEADER, *("|".join(r) for r in rows)]) + "\n"
            (fast / f"p{i:06d}.psv").write_text(text)
            (slow / f"p{i:06d}.psv").write_bytes(text.replace("\n", "\r\n").encode())
        a = import_physionet(fast, Path(tmp, "a.parquet"))
        b = import_physionet(slow, Path(tmp, "b.parquet"))
        da, _ = load_canonical(Path(tmp, "a.parquet"))
        db, _ = load_canonical(Path(tmp, "b.parquet"))
        pd.testing.assert_frame_equal(da, db)
        assert a.problems == b.problems == []
        header = STANDARD_HEADER.split("|")
        written = [r for rows in stays for r in rows]
        assert len(da) == len(written)
        for (_, got), row in zip(da.iterrows(), written, strict=True):
            for c in (*VITAL_NAMES, *STATIC_FEATURES):
                assert same(float(got[c]), float(row[header.index(c)]))
