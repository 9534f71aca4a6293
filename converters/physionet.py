"""PhysioNet/CinC Challenge 2019 files -> the canonical hourly table (Parquet).

Input: the challenge's `training_setA.tar.gz` (read member by member with `tarfile`,
never extracted), a folder of `.psv` files (searched recursively) or one `.psv` file.
Each `.psv` is one ICU stay: pipe-separated, a header line, one row per ICU hour,
`NaN` for not measured.

Output rows (`contracts.canonical`): `stay_id` = `pn-` + file stem (`pn-p000001`),
`hour` = `ICULOS`, the seven monitor vitals as they are (the challenge already uses
the catalogue's units), `Age` (100 means >= 90, the source's cap), `Gender`,
`HospAdmTime`, `ICULOS`, `label` = `SepsisLabel` (Int8), `source` = `physionet2019`.
Labs, EtCO2 and Unit1/Unit2 are not imported: a bedside monitor has none of them,
so a garbage cell in those columns is not checked either.

Fingerprint: sha256 over the sorted `(file name, sha256 of the file's bytes)` of
the stays imported (file name without folders, so the archive and an extracted
folder of the same files give the same fingerprint). Files that were read but
skipped still count: they are part of the input. When the dataset's `SHA256SUMS.txt`
lies beside the archive (or in/above the folder), each file is checked against it
and a mismatch is reported (the file is still imported, its values checked).

Speed: well-formed files (the standard header, rectangular rows) are parsed in
batches by one multi-threaded Arrow CSV read; a batch that Arrow rejects is parsed
again file by file, and a file Arrow rejects is parsed line by line in Python, which
is slow but names the row and cell that is wrong. Bad-input policy: see
`converters.canonical_io`.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import logging
import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from contracts.vitals import STATIC_FEATURES, VITAL_NAMES

from .canonical_io import (
    ImportReport,
    Problem,
    SourceError,
    blank_implausible,
    finish_import,
    load_canonical,
    read_fingerprint,
    to_arrow,
)

__all__ = [
    "DATASET",
    "ImportReport",
    "SourceError",
    "import_physionet",
    "load_canonical",
    "read_fingerprint",
    "read_physionet",
]

log = logging.getLogger(__name__)

DATASET = "physionet2019"
STAY_PREFIX = "pn-"
LABEL = "SepsisLabel"
# The challenge's 41 columns, in the order every set-A file has them.
STANDARD_HEADER = (
    "HR|O2Sat|Temp|SBP|MAP|DBP|Resp|EtCO2|BaseExcess|HCO3|FiO2|pH|PaCO2|SaO2|AST|BUN|"
    "Alkalinephos|Calcium|Chloride|Creatinine|Bilirubin_direct|Glucose|Lactate|Magnesium|"
    "Phosphate|Potassium|Bilirubin_total|TroponinI|Hct|Hgb|PTT|WBC|Fibrinogen|Platelets|"
    "Age|Gender|Unit1|Unit2|HospAdmTime|ICULOS|SepsisLabel"
)
NEEDED: tuple[str, ...] = (*VITAL_NAMES, *STATIC_FEATURES, LABEL)
_NULLS = ["NaN", "nan", "NA", ""]
BATCH_FILES = 2000  # files per Arrow read: big enough to use both cores, small in memory


@dataclass(frozen=True)
class _Input:
    name: str  # file name (no folders): p000001.psv
    data: bytes


@dataclass
class _Parsed:
    """Rows of one or more files: needed columns, file index and line number per row."""

    values: dict[str, np.ndarray]
    file_idx: np.ndarray
    line: np.ndarray


def stay_id_of(name: str) -> str:
    base = name.rsplit("/", 1)[-1]  # plain string ops: called once per file, 20k times
    return STAY_PREFIX + (base[:-4] if base.endswith(".psv") else base.rsplit(".", 1)[0])


def _wanted(stays: Iterable[str] | None) -> set[str] | None:
    if stays is None:
        return None
    out = set()
    for s in stays:
        s = str(s).strip()
        out.add(s if s.startswith(STAY_PREFIX) else STAY_PREFIX + s.removesuffix(".psv"))
    return out


# ---------------------------------------------------------------- reading the source


def _select(
    items: Iterator[tuple[str, bytes | None]], limit: int | None, wanted: set[str] | None
) -> tuple[list[_Input], list[str]]:
    """Pick the inputs to import; returns them sorted by name, plus duplicate names.

    `items` yields (name, bytes); with `limit`, only the first `limit` stays in sorted
    order are kept in memory (a heap), since archive order is not sorted.
    """
    heap: list[_Rev] = []  # the kept names, largest on top
    chosen: dict[str, bytes] = {}
    dups: list[str] = []
    for name, data in items:
        sid = stay_id_of(name)
        if wanted is not None and sid not in wanted:
            continue
        if name in chosen:
            dups.append(name)
            continue
        if limit is None:
            chosen[name] = data
            continue
        if len(chosen) < limit:
            chosen[name] = data
            heapq.heappush(heap, _Rev(name))
        elif heap and name < heap[0].name:
            evicted = heapq.heapreplace(heap, _Rev(name)).name
            del chosen[evicted]
            chosen[name] = data
    return [_Input(n, chosen[n]) for n in sorted(chosen)], dups


class _Rev:
    """Reverse-ordered name, so heapq (a min-heap) keeps the largest name on top."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __lt__(self, other: _Rev) -> bool:
        return self.name > other.name


def _iter_tar(path: Path, report: ImportReport) -> Iterator[tuple[str, bytes]]:
    """Yield (file name, bytes) of every .psv member; a broken archive is reported, and
    the members read before the break are kept."""
    n = 0
    try:
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                if not m.isfile() or not m.name.endswith(".psv"):
                    continue
                f = tf.extractfile(m)
                if f is None:
                    continue
                data = f.read()
                if len(data) != m.size:
                    raise EOFError(f"member {m.name} is {len(data)} of {m.size} bytes")
                n += 1
                yield m.name.rsplit("/", 1)[-1], data
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        report.add(
            Problem(
                str(path),
                None,
                None,
                None,
                f"archive truncated or corrupt after {n} complete .psv members: {e}",
                "skipped rest of archive",
            )
        )
        report.files_skipped += 1


def _iter_folder(path: Path, report: ImportReport) -> Iterator[tuple[str, bytes]]:
    for p in sorted(path.rglob("*.psv")):
        try:
            yield p.name, p.read_bytes()
        except OSError as e:
            report.add(Problem(str(p), None, None, None, f"cannot read: {e}", "skipped file"))
            report.files_skipped += 1


def _open_source(source: Path, report: ImportReport) -> Iterator[tuple[str, bytes]]:
    if not source.exists():
        raise SourceError(f"source {source} does not exist")
    if source.is_dir():
        return _iter_folder(source, report)
    if source.suffix == ".psv":
        return iter([(source.name, source.read_bytes())])
    if not tarfile.is_tarfile(source):
        raise SourceError(
            f"source {source} is neither a folder, a .psv file nor a readable tar archive"
        )
    return _iter_tar(source, report)


# ---------------------------------------------------------------- parsing


def _arrow_read(blob: bytes) -> pa.Table:
    return pacsv.read_csv(
        io.BytesIO(blob),
        read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(delimiter="|"),
        convert_options=pacsv.ConvertOptions(
            include_columns=list(NEEDED),
            column_types=dict.fromkeys(NEEDED, pa.float64()),
            null_values=_NULLS,
            strings_can_be_null=True,
        ),
    )


def _columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {
        c: table.column(c).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
        for c in NEEDED
    }


def _split_header(data: bytes) -> tuple[str, bytes]:
    nl = data.find(b"\n")
    if nl < 0:
        return data.decode("utf-8", "replace").strip(), b""
    return data[:nl].decode("utf-8", "replace").strip(), data[nl + 1 :]


def _irregular(body: bytes) -> bool:
    """True when Arrow could miscount rows in bulk (blank lines, CR line ends)."""
    return b"\n\n" in body or body.startswith(b"\n") or b"\r" in body


def _parse_bulk(idx: list[int], bodies: list[bytes]) -> _Parsed | None:
    """One Arrow read over many standard files; None if Arrow rejects any cell or row."""
    counts = np.array([b.count(b"\n") for b in bodies], dtype=np.int64)
    blob = STANDARD_HEADER.encode() + b"\n" + b"".join(bodies)
    try:
        table = _arrow_read(blob)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    if table.num_rows != int(counts.sum()):
        return None
    file_idx = np.repeat(np.asarray(idx, dtype=np.int64), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    line = np.arange(table.num_rows, dtype=np.int64) - starts + 2  # header is line 1
    return _Parsed(_columns(table), file_idx, line)


def _parse_lines(i: int, inp: _Input, header: list[str], report: ImportReport) -> _Parsed:
    """Line-by-line parse of one file: slow, but names every bad row and cell."""
    pos = {c: header.index(c) for c in NEEDED}
    text = inp.data.decode("utf-8", "replace")
    lines = text.split("\n")
    truncated = not text.endswith("\n")
    rows: list[list[float]] = []
    where: list[int] = []
    for ln, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        fields = raw.split("|")
        if len(fields) != len(header):
            last = ln == len(lines) and truncated
            report.add(
                Problem(
                    inp.name,
                    ln,
                    None,
                    raw[:60],
                    f"row has {len(fields)} fields, the header {len(header)}"
                    + (" (file ends mid-line: truncated?)" if last else ""),
                    "skipped row",
                )
            )
            report.rows_skipped += 1
            continue
        vals = []
        for c in NEEDED:
            cell = fields[pos[c]].strip()
            if cell in _NULLS:
                vals.append(np.nan)
                continue
            try:
                vals.append(float(cell))
            except ValueError:
                report.add(Problem(inp.name, ln, c, cell[:40], "not a number", "set NaN"))
                report.values_blanked += 1
                vals.append(np.nan)
        rows.append(vals)
        where.append(ln)
    arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(NEEDED))
    return _Parsed(
        {c: arr[:, k].copy() for k, c in enumerate(NEEDED)},
        np.full(len(rows), i, dtype=np.int64),
        np.asarray(where, dtype=np.int64),
    )


def _parse_batch(
    start: int, inputs: list[_Input], report: ImportReport, files: list[str]
) -> list[_Parsed]:
    """Parse a batch of files; indices into `files` start at `start`."""
    fast_idx: list[int] = []
    fast_bodies: list[bytes] = []
    slow: list[tuple[int, _Input, list[str]]] = []
    for k, inp in enumerate(inputs):
        i = start + k
        if not inp.data.strip():
            report.add(Problem(inp.name, None, None, None, "empty file", "skipped file"))
            report.files_skipped += 1
            continue
        header_line, body = _split_header(inp.data)
        header = [h.strip() for h in header_line.split("|")]
        missing = [c for c in NEEDED if c not in header]
        if missing:
            report.add(
                Problem(
                    inp.name,
                    1,
                    None,
                    header_line[:80],
                    f"wrong header: lacks {', '.join(missing)}",
                    "skipped file",
                )
            )
            report.files_skipped += 1
            continue
        if not body.strip():
            report.add(Problem(inp.name, None, None, None, "no data rows", "skipped file"))
            report.files_skipped += 1
            continue
        if header_line == STANDARD_HEADER and not _irregular(body):
            fast_idx.append(i)
            fast_bodies.append(body if body.endswith(b"\n") else body + b"\n")
        else:
            slow.append((i, inp, header))
    out: list[_Parsed] = []
    if fast_idx:
        bulk = _parse_bulk(fast_idx, fast_bodies)
        if bulk is not None:
            out.append(bulk)
        else:  # find the culprits file by file
            for i, body in zip(fast_idx, fast_bodies, strict=True):
                one = _parse_bulk([i], [body])
                if one is not None:
                    out.append(one)
                else:
                    slow.append((i, inputs[i - start], STANDARD_HEADER.split("|")))
    for i, inp, header in slow:
        out.append(_parse_lines(i, inp, header, report))
    return out


# ---------------------------------------------------------------- table assembly


def _concat(parts: list[_Parsed]) -> _Parsed:
    if not parts:
        empty = np.zeros(0, dtype=np.float64)
        return _Parsed(
            {c: empty.copy() for c in NEEDED}, np.zeros(0, np.int64), empty.astype(np.int64)
        )
    return _Parsed(
        {c: np.concatenate([p.values[c] for p in parts]) for c in NEEDED},
        np.concatenate([p.file_idx for p in parts]),
        np.concatenate([p.line for p in parts]),
    )


def _drop(p: _Parsed, keep: np.ndarray) -> _Parsed:
    """Rows of `p` selected by a mask or an index (a no-op for an all-true mask)."""
    if keep.dtype == bool and keep.all():
        return p
    return _Parsed({c: v[keep] for c, v in p.values.items()}, p.file_idx[keep], p.line[keep])


def _check_rows(p: _Parsed, files: list[str], report: ImportReport) -> _Parsed:
    """Rows without a usable ICU time are skipped; duplicate hours keep the first row;
    labels other than 0/1 become unknown. Each is reported."""
    iculos = p.values["ICULOS"]
    bad = ~np.isfinite(iculos) | (iculos < 0) | (np.floor(iculos) != iculos)
    for k in np.flatnonzero(bad):
        report.add(
            Problem(
                files[p.file_idx[k]],
                int(p.line[k]),
                "ICULOS",
                f"{iculos[k]:g}",
                "ICULOS (the row's hour) must be a whole number of hours >= 0",
                "skipped row",
            )
        )
    report.rows_skipped += int(bad.sum())
    p = _drop(p, ~bad)
    # Duplicate (stay, hour): the stable order is file then line, so the first wins.
    # Real files have strictly increasing hours: check that cheaply before sorting.
    fi, hr = p.file_idx, p.values["ICULOS"]
    if not np.any((fi[1:] == fi[:-1]) & (hr[1:] <= hr[:-1])):
        order = np.arange(len(fi))
    else:
        order = np.lexsort((p.line, hr, fi))
    fi, hr = p.file_idx[order], p.values["ICULOS"][order]
    dup_sorted = np.zeros(len(order), dtype=bool)
    dup_sorted[1:] = (fi[1:] == fi[:-1]) & (hr[1:] == hr[:-1])
    for k in order[dup_sorted]:
        report.add(
            Problem(
                files[p.file_idx[k]],
                int(p.line[k]),
                "ICULOS",
                f"{p.values['ICULOS'][k]:g}",
                "hour already seen earlier in this stay",
                "skipped row",
            )
        )
    report.rows_skipped += int(dup_sorted.sum())
    keep = np.ones(len(order), dtype=bool)
    keep[order[dup_sorted]] = False
    p = _drop(p, keep)
    lab = p.values[LABEL]
    odd = np.isfinite(lab) & (lab != 0) & (lab != 1)
    for k in np.flatnonzero(odd):
        report.add(
            Problem(
                files[p.file_idx[k]],
                int(p.line[k]),
                LABEL,
                f"{lab[k]:g}",
                "SepsisLabel must be 0 or 1",
                "label unknown",
            )
        )
    lab[odd] = np.nan
    return p


SUMS_FILE = "SHA256SUMS.txt"


def _published_sums(source: Path) -> tuple[Path, dict[str, str]] | None:
    """The dataset's SHA256SUMS.txt beside an archive or in/above a folder, if any."""
    base = source if source.is_dir() else source.parent
    for p in (base / SUMS_FILE, base.parent / SUMS_FILE):
        if p.is_file():
            sums = {}
            for line in p.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) == 2 and len(parts[0]) == 64:
                    sums[parts[1].lstrip("*").rsplit("/", 1)[-1]] = parts[0].lower()
            return p, sums
    return None


def _verify_published_sums(source: Path, digests: dict[str, str], report: ImportReport) -> None:
    """Compare each file with the published checksum: a mismatch is a file that is not the
    published one (a damaged copy, or edited); it is imported and its values checked like
    any other, but the report says so."""
    found = _published_sums(source)
    if found is None:
        return
    path, sums = found
    checked = bad = 0
    for name, digest in digests.items():
        want = sums.get(name)
        if want is None:
            continue
        checked += 1
        if want != digest:
            bad += 1
            report.add(
                Problem(
                    name,
                    None,
                    None,
                    None,
                    f"sha256 differs from {path.name}: not the published file",
                    "kept, values checked",
                )
            )
    report.notes.append(
        f"checked {checked} of {len(digests)} files against {path}: "
        + (f"{bad} differ" if bad else "all match")
    )


def read_physionet(
    source: str | Path,
    limit: int | None = None,
    stays: Iterable[str] | None = None,
) -> tuple[pa.Table, ImportReport]:
    """Read PhysioNet 2019 stays into a canonical Arrow table (sorted by stay, hour)."""
    t0 = time.perf_counter()
    source = Path(source)
    report = ImportReport(source=str(source), dataset=DATASET)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    wanted = _wanted(stays)
    inputs, dups = _select(_open_source(source, report), limit, wanted)
    for d in dups:
        report.add(Problem(d, None, None, None, "same file name seen twice", "skipped file"))
        report.files_skipped += 1
    why = "requested stay not in the source" + (" or beyond the limit" if limit else "")
    for sid in sorted((wanted or set()) - {stay_id_of(i.name) for i in inputs}):
        report.add(Problem(sid, None, None, None, why, "not imported"))
    if not inputs:
        raise SourceError(
            f"no .psv stays found in {source}" + (" for those stays" if wanted else "")
        )
    report.files_read = len(inputs)

    digests = {inp.name: hashlib.sha256(inp.data).hexdigest() for inp in inputs}
    fp = hashlib.sha256()
    for name in sorted(digests):
        fp.update(f"{name}\t{digests[name]}\n".encode())
    report.fingerprint = fp.hexdigest()
    _verify_published_sums(source, digests, report)

    files = [inp.name for inp in inputs]
    parts: list[_Parsed] = []
    for s in range(0, len(inputs), BATCH_FILES):
        parts.extend(_parse_batch(s, inputs[s : s + BATCH_FILES], report, files))
    del inputs
    p = _check_rows(_concat(parts), files, report)
    del parts
    blank_implausible(
        {c: p.values[c] for c in (*VITAL_NAMES, *STATIC_FEATURES)},
        (p.file_idx, p.line),
        files,
        report,
    )

    fi, hr = p.file_idx, p.values["ICULOS"]  # files are sorted by name
    if np.any((fi[1:] < fi[:-1]) | ((fi[1:] == fi[:-1]) & (hr[1:] < hr[:-1]))):
        p = _drop(p, np.lexsort((hr, fi)))
    names = np.array([stay_id_of(f) for f in files], dtype=object)
    label = p.values[LABEL]
    cols: dict[str, np.ndarray] = {
        "stay_id": names[p.file_idx],
        "hour": p.values["ICULOS"].astype(np.int64),
        **{c: p.values[c] for c in (*VITAL_NAMES, *STATIC_FEATURES)},
        "label": label,
        "source": np.full(len(label), DATASET, dtype=object),
    }
    report.rows = len(label)
    report.stays = int(np.unique(p.file_idx).size)
    pos = np.isfinite(label) & (label == 1)
    report.positive_rows = int(pos.sum())
    report.positive_stays = int(np.unique(p.file_idx[pos]).size)
    report.unlabelled_rows = int((~np.isfinite(label)).sum())
    report.sort_problems()
    table = to_arrow(cols, report.fingerprint, DATASET, report.counts())
    report.seconds = time.perf_counter() - t0
    return table, report


def import_physionet(
    source: str | Path,
    out: str | Path,
    limit: int | None = None,
    stays: Iterable[str] | None = None,
) -> ImportReport:
    """Import PhysioNet 2019 stays from `source` and write the canonical Parquet `out`."""
    t0 = time.perf_counter()
    table, report = read_physionet(source, limit=limit, stays=stays)
    return finish_import(table, report, out, source, t0)
