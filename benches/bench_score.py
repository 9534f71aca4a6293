"""`vigil edge score` on many stays: stays/s and the projection to 20,000 stays (issue 15).

    python -m benches.bench_score                 # 2,000 stays of set A, 2 processes
    python -m benches.bench_score --stays 0       # all 20,336 stays of set A
    python -m benches.bench_score --jobs 1 --stays 300 --profile

Reads the real PhysioNet 2019 set A archive (`contracts.paths.physionet_archive`),
takes its first `--stays` stays into a .tar.gz (so the run reads an archive exactly as
`vigil edge score ARCHIVE --out DIR` does) and scores them with
`edge_agent.score_file.score_many` (the command's code: the gateway's `BedWindows`,
the committed bundle through LiteRT, NEWS2 and the alarm machine, one challenge file
per stay). Prints stays/s, rows (hours)/s and the projection to 20,000 stays on the
same number of processes, against the goal of 180 s; and, as the machine is shared, the
CPU seconds used (this process and its workers) with the projection on idle cores.

`--profile` (one process, in this process) splits the time per stay-hour between the
gateway's per-step parts: `BedWindows._close` (per-vital median and the whole-history
`stay_windows` on every step: O(hours so far), the cost issue 15 asks to measure),
LiteRT and the rest.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import resource
import tarfile
import tempfile
import time
from pathlib import Path

from contracts.paths import default_bundle_dir, default_trusted_keys_dir, physionet_archive
from edge_agent.score_file import make_scorer, parse_text, score_many

GOAL_STAYS = 20_000
GOAL_SECONDS = 180.0


def subset(archive: Path, n: int, out: Path) -> int:
    """The first `n` stays (0: all) of `archive` into the .tar.gz `out`; how many."""
    count = 0
    with tarfile.open(archive, "r|gz") as src, tarfile.open(out, "w:gz") as dst:
        for m in src:
            if not (m.isfile() and m.name.endswith(".psv")):
                continue
            f = src.extractfile(m)
            assert f is not None
            data = f.read()
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
            count += 1
            if n and count >= n:
                break
    return count


def profile(archive: Path, n: int) -> None:
    """Time per stay-hour of the per-step parts, one process."""
    scorer = make_scorer([default_bundle_dir()], [default_trusted_keys_dir()])
    stays = []
    with tarfile.open(archive, "r|gz") as tf:
        for m in tf:
            if m.isfile() and m.name.endswith(".psv"):
                f = tf.extractfile(m)
                assert f is not None
                stays += parse_text(f.read(), Path(m.name).name)
                if len(stays) >= n:
                    break
    rows = sum(len(s.iculos) for s in stays)
    t0 = time.perf_counter()
    for s in stays:
        scorer.score(s)
    plain = time.perf_counter() - t0
    pr = cProfile.Profile()
    pr.enable()
    for s in stays:
        scorer.score(s)
    pr.disable()
    st = pstats.Stats(pr)
    total = sum(v[3] for k, v in st.stats.items() if k[2] == "score" and "score_file" in k[0])

    def cum(file_part: str, func: str) -> float:
        return sum(v[3] for k, v in st.stats.items() if k[2] == func and file_part in k[0])

    print(f"profile: {len(stays)} stays, {rows} hours; {plain / rows * 1e6:.0f} µs per hour")
    for label, t in (
        ("BedWindows._close (all)", cum("windows.py", "_close")),
        ("  aggregate_readings (per-vital median)", cum("preprocessing.py", "aggregate_readings")),
        ("  BedWindows.model_input (whole history)", cum("windows.py", "model_input")),
        ("    stay_windows", cum("preprocessing.py", "stay_windows")),
        ("LiteRT RiskModel.score", cum("litert.py", "score")),
        ("AlarmMachine.on_step", cum("alarms.py", "on_step")),
        ("news2", cum("news2.py", "news2")),
    ):
        print(f"  {label:<44} {t / total * 100:5.1f} % of the profiled time")


def _cpu() -> float:
    """User + system CPU seconds of this process and its ended children."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stays", type=int, default=2000, help="stays of set A (0: all)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--profile", action="store_true", help="per-part time, one process")
    args = ap.parse_args(argv)
    archive = physionet_archive()
    if not archive.exists():
        raise SystemExit(f"shared data absent: {archive}")
    if args.profile:
        profile(archive, args.stays or 300)
        return
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "stays.tar.gz"
        n = subset(archive, args.stays, part)
        out = Path(tmp) / "out"
        cpu0 = _cpu()
        t0 = time.perf_counter()
        summary = score_many(
            part, out, [default_bundle_dir()], [default_trusted_keys_dir()], jobs=args.jobs
        )
        wall = time.perf_counter() - t0
        cpu = _cpu() - cpu0  # this process and its (ended) workers
        files = len(list(out.glob("*.psv")))
    assert files == summary.stays, (files, summary.stays)
    rate = summary.stays / wall
    proj = GOAL_STAYS / rate
    verdict = "meets" if proj <= GOAL_SECONDS else "misses"
    print(
        f"scored {summary.stays} of {n} stays ({summary.rows} hours, "
        f"{len(summary.skipped)} skipped) with {args.jobs} process(es) in {wall:.1f} s "
        f"(worker start and bundle check included)"
    )
    print(f"  {rate:.1f} stays/s, {summary.rows / wall:.0f} hours/s")
    print(
        f"  projection: {GOAL_STAYS:,} stays in {proj:.0f} s on {args.jobs} process(es) "
        f"({verdict} the {GOAL_SECONDS:.0f} s goal)"
    )
    per_cpu = summary.stays / cpu
    print(
        f"  CPU: {cpu:.1f} s ({cpu / summary.rows * 1e6:.0f} µs per hour, {per_cpu:.1f} stays "
        f"per CPU-second); on {args.jobs} idle cores: {GOAL_STAYS:,} stays in "
        f"{GOAL_STAYS / per_cpu / args.jobs:.0f} s (the machine's load aside)"
    )
    for why in summary.skipped[:5]:
        print(f"  skipped: {why}")


if __name__ == "__main__":
    main()
