"""What a durable commit costs: the gateway's store with synchronous=FULL vs NORMAL.

The gateway's `Store` (edge_agent/store.py, SQLite WAL) runs with `synchronous=FULL`:
every commit is fsynced to the WAL before the write returns, so a message the outbox
called stored survives a power cut (tests/test_durability.py). NORMAL syncs only at
checkpoints. Both are measured in one run, rounds interleaved, on the same folder:

- outbox write: `Store.enqueue` of a risk-sized message (about 450 bytes), one commit;
- acknowledgement: `Store.acked([id])` (outbox -> outbox_sent), one commit;
- step + risk: `add_step` and `add_risk` of one bed's closed step, two commits.

Each write is timed alone (time.perf_counter around the call); medians and p99 over
all rounds. The folder is on the disk the store would use (default: a temporary
folder under --dir, the system's temp folder unless given): fsync costs what that
disk costs (tmpfs would show no difference).

Run: .venv/bin/python -m benches.bench_durability [--writes 2000] [--rounds 3] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from edge_agent import store as store_mod
from edge_agent.store import Store

PAYLOAD = b'{"kind": "risk", "pad": "' + b"x" * 420 + b'"}'


def _round(folder: Path, synchronous: str, writes: int) -> dict[str, list[float]]:
    """One fresh store with `synchronous`; per-write seconds for each kind of write."""
    store_mod.SYNCHRONOUS = synchronous
    path = folder / f"bench-{synchronous.lower()}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    s = Store(path)
    mode = s.db.conn.execute("PRAGMA synchronous").fetchone()[0]
    assert mode == {"NORMAL": 1, "FULL": 2}[synchronous], mode
    out: dict[str, list[float]] = {"outbox write": [], "acknowledgement": [], "step + risk": []}
    try:
        for i in range(writes):
            t0 = time.perf_counter()
            row = s.enqueue("vigil/v1/gw/bench/bed/b1/risk", PAYLOAD)
            t1 = time.perf_counter()
            s.acked([row])
            t2 = time.perf_counter()
            start = f"2026-12-01T00:{i // 60 % 60:02d}:{i % 60:02d}.{i // 3600:03d}Z"
            s.add_step(
                {
                    "bed": "b1",
                    "stay": "s1",
                    "step_start": start,
                    "step_seconds": 60,
                    "values": [80.0, 97.0, 36.8, 120.0, 80.0, 18.0],
                    "static": [65.0, 1.0],
                    "readings": 60,
                }
            )
            s.add_risk(
                {
                    "event_id": f"e{i}",
                    "bed": "b1",
                    "stay": "s1",
                    "window_end": start,
                    "risk": 0.1,
                    "threshold": 0.5,
                    "alarm_level": "none",
                    "insufficient": 0,
                    "observed": 6,
                    "news2": 1,
                    "model": "m",
                    "version": "1",
                }
            )
            t3 = time.perf_counter()
            out["outbox write"].append(t1 - t0)
            out["acknowledgement"].append(t2 - t1)
            out["step + risk"].append(t3 - t2)
        assert s.failing is None, s.failing
    finally:
        s.close()
    return out


def _p(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", type=int, default=2000, help="writes of each kind per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the stores go (default: temp folder)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vigil-durability-", dir=args.dir))
    fs = os.statvfs(folder)
    results: dict[str, dict[str, list[float]]] = {"NORMAL": {}, "FULL": {}}
    try:
        for _ in range(args.rounds):
            for mode in ("NORMAL", "FULL"):  # interleaved: both see the same disk
                for kind, vals in _round(folder, mode, args.writes).items():
                    results[mode].setdefault(kind, []).extend(vals)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        store_mod.SYNCHRONOUS = "FULL"
    print(f"store folder: {folder} (block size {fs.f_bsize}); {args.writes} writes x "
          f"{args.rounds} rounds per setting; per-write times")  # fmt: skip
    print(f"{'write':<18}{'NORMAL median':>15}{'NORMAL p99':>12}{'FULL median':>13}"
          f"{'FULL p99':>10}{'FULL/NORMAL':>13}")  # fmt: skip
    for kind in results["FULL"]:
        n, f = results["NORMAL"][kind], results["FULL"][kind]
        mn, mf = statistics.median(n), statistics.median(f)
        print(f"{kind:<18}{mn * 1e3:>12.3f} ms{_p(n, 0.99) * 1e3:>9.3f} ms"
              f"{mf * 1e3:>10.3f} ms{_p(f, 0.99) * 1e3:>7.3f} ms{mf / mn:>12.1f}x")  # fmt: skip
    med = {k: statistics.median(v) for k, v in results["FULL"].items()}
    step = 2 * med["outbox write"] + 2 * med["acknowledgement"] + med["step + risk"]
    print(f"FULL: one bed's closed step (2 outbox writes, 2 acks, step + risk) "
          f"~ {step * 1e3:.2f} ms of store time, one store: ~ {1 / step:,.0f} bed-steps/s")  # fmt: skip


if __name__ == "__main__":
    main()
