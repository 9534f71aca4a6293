"""Import benchmark: PhysioNet 2019 set A and the MIMIC-III demo to the canonical table.

Measured in one run, on the same archive:
- `read archive`: streaming every member out of training_setA.tar.gz (gzip + tar),
  the floor any importer of this archive pays;
- `import_physionet` (full set A, to Parquet): median of --repeat runs;
- `per-file pandas` baseline: the obvious importer (one `pd.read_csv` per stay, then
  concat) on the first --baseline-files stays, next to `import_physionet` with the
  same `limit`, so the ratio is like for like;
- `import_mimic` on the MIMIC-III demo archive (one run per repeat, median).

    .venv/bin/python -m benches.bench_import [--repeat 3] [--baseline-files 2000]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd

from contracts.paths import mimic_demo_archive, physionet_archive
from converters.mimic import import_mimic
from converters.physionet import NEEDED, import_physionet

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def read_archive(path: Path) -> int:
    n = 0
    with tarfile.open(path, "r|*") as tf:
        for m in tf:
            if m.isfile():
                n += len(tf.extractfile(m).read())
    return n


def per_file_pandas(path: Path, limit: int) -> int:
    """The obvious importer: first `limit` stays (sorted), one read_csv each."""
    blobs: dict[str, bytes] = {}
    with tarfile.open(path, "r|*") as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(".psv"):
                blobs[Path(m.name).name] = tf.extractfile(m).read()
    frames = []
    for name in sorted(blobs)[:limit]:
        df = pd.read_csv(io.BytesIO(blobs[name]), sep="|", usecols=list(NEEDED))
        df.insert(0, "stay_id", "pn-" + name.removesuffix(".psv"))
        frames.append(df)
    return len(pd.concat(frames, ignore_index=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-files", type=int, default=2000)
    args = ap.parse_args()
    pn, mimic = physionet_archive(), mimic_demo_archive()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pn.parquet"
        read_s = [timed(lambda: read_archive(pn))[0] for _ in range(args.repeat)]
        full = [timed(lambda: import_physionet(pn, out)) for _ in range(args.repeat)]
        rep = full[-1][1]
        size_mb = out.stat().st_size / 1e6
        lim = args.baseline_files
        ours_lim = [timed(lambda: import_physionet(pn, out, limit=lim)) for _ in range(args.repeat)]
        base = [timed(lambda: per_file_pandas(pn, lim)) for _ in range(args.repeat)]
        rows_lim = ours_lim[-1][1].rows
        assert base[-1][1] == rows_lim, (base[-1][1], rows_lim)
        mim = [
            timed(lambda: import_mimic(mimic, Path(tmp) / "m.parquet")) for _ in range(args.repeat)
        ]
        mrep = mim[-1][1]

    med = statistics.median
    t_full = med(t for t, _ in full)
    print(f"PhysioNet 2019 set A: {rep.stays} stays, {rep.rows} rows, {rep.files_read} files")
    print(f"  read archive only (gzip+tar): {med(read_s):.2f} s  (median of {args.repeat})")
    print(
        f"  import_physionet, full set A: {t_full:.2f} s  ({rep.rows / t_full:,.0f} rows/s, "
        f"runs {', '.join(f'{t:.2f}' for t, _ in full)} s); Parquet {size_mb:.1f} MB"
    )
    t_ours, t_base = med(t for t, _ in ours_lim), med(t for t, _ in base)
    print(
        f"  first {lim} stays ({rows_lim} rows): import_physionet {t_ours:.2f} s vs "
        f"per-file pandas {t_base:.2f} s  (ratio {t_base / t_ours:.1f}x; both stream the whole archive)"
    )
    t_m = med(t for t, _ in mim)
    print(
        f"MIMIC-III demo: {mrep.stays} stays, {mrep.rows} hourly rows from CHARTEVENTS "
        f"(758,355 rows): import_mimic {t_m:.2f} s (median of {args.repeat})"
    )


if __name__ == "__main__":
    main()
