"""The alarm-burden curve on real stays: cost and figures (issue 13).

    python -m benches.bench_burden                 # the first 2,000 stays of set A
    python -m benches.bench_burden --stays 500

Reads the first `--stays` stays of the PhysioNet 2019 set A archive (archive order),
scores them with the committed bundle as the gateway does (`cloud_hub.burden.score_rows`,
LiteRT), builds the burden curve (every stay replayed through the gateway's
`AlarmMachine` at every candidate threshold, `cloud_hub.burden.operating_curve`) and
prints the CPU seconds of each part (the machine's 2 cores are shared: wall time
measures the neighbours too), the burden at the bundle's shipped threshold and the
threshold `choose_threshold` picks for budgets of 0.5, 1 and 2.5 alarm-hours per
patient-day. Set A is the committed model's training hospital (its training stays
among them): the figures are in-sample, not a new site's.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from cloud_hub.burden import choose_threshold, operating_curve, score_rows
from contracts.paths import default_bundle_dir, default_trusted_keys_dir, physionet_archive
from edge_agent.score_file import STATIC, iter_items, make_scorer, stays_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stays", type=int, default=2000)
    args = ap.parse_args()
    model = make_scorer([default_bundle_dir()], [default_trusted_keys_dir()]).model
    spec = model.manifest.preprocessing
    items = itertools.islice(iter_items(physionet_archive()), args.stays)
    stays = [s for it in items for s in stays_of(it)]
    t = time.process_time()
    risks = []
    for s in stays:
        cols = {**{n: s.static[:, i] for i, n in enumerate(STATIC)}, "ICULOS": s.iculos}
        static = np.column_stack([cols[n] for n in spec.static_names])
        risks.append(score_rows(model, spec, s.name, s.iculos, s.vitals, static, s.label))
    score_cpu = time.process_time() - t
    t = time.process_time()
    curve = operating_curve(risks)
    curve_cpu = time.process_time() - t
    hours = sum(r.hours.shape[0] for r in risks)
    print(
        f"{len(stays)} stays, {hours} hours, {curve.septic_stays} septic, "
        f"{len(curve.points)} thresholds"
    )
    print(f"scoring: {score_cpu:.1f} CPU s; curve: {curve_cpu:.1f} CPU s")
    shipped = operating_curve(risks, [model.threshold]).points[0]
    print(f"shipped threshold: {_point(shipped)}")
    for budget in (0.5, 1.0, 2.5):
        print(f"budget {budget:g}: {_point(choose_threshold(curve, budget))}")


def _point(p) -> str:
    share = "n/a" if p.septic_alarmed_share is None else f"{p.septic_alarmed_share:.2f}"
    lead = "n/a" if p.median_lead_hours is None else f"{p.median_lead_hours:.1f} h"
    return (
        f"threshold {p.threshold:.3f}: {p.alarm_hours_per_patient_day:.2f} alarm-hours/"
        f"patient-day, septic alarmed in [onset-12 h, onset-3 h] {share}, median lead {lead}"
    )


if __name__ == "__main__":
    main()
