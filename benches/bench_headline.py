"""The headline table and the clinical summary, every figure from a run or an artefact.

Headline (one run of this script):
- inference latency per window, int8 LiteRT vs Keras `tf.function` vs ONNX Runtime:
  `benches.bench_inference` run here (child process, side by side, its --json);
- model size: the committed bundle's model.tflite (and the sizes that bench measured);
- ΔAUROC float -> int8: measured by that bench on the validation split, and the
  champion's own `parity_delta_auroc` logged in MLflow at conversion;
- training time: the champion run's `train_seconds` (MLflow, local store);
- hub ingest rate: `bench_hub.hub_rate` (1 `vigil hub serve` worker, SQLite) here;
- rollout time to 1,000 gateways: `benches.bench_rollout --rounds 1` run here.
Clinical summary: the held-out (test) split metrics that training logged for every
model of the champion's comparison run, and for NEWS2 (MLflow child runs).

    .venv/bin/python -m benches.bench_headline [--skip inference,hub,rollout] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contracts.paths import default_bundle_dir, work_dir

ROOT = Path(__file__).resolve().parent.parent

CLINICAL = (
    ("test_auroc", "AUROC", "{:.3f}"),
    ("test_auprc", "AUPRC", "{:.3f}"),
    ("test_utility", "utility (normalised)", "{:.3f}"),
    ("test_alarms_per_patient_day", "alarms / patient-day", "{:.2f}"),
    ("test_sensitivity", "sensitivity", "{:.2f}"),
    ("test_median_lead_hours", "median lead time (h)", "{:.1f}"),
)


def tracking_uri() -> str:
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{work_dir() / 'mlflow' / 'mlflow.db'}"
    )


def mlflow_figures() -> dict:
    """Champion run (training time, parity) and its comparison's child runs (test split)."""
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri())
    mv = c.get_model_version_by_alias("vigil-sepsis", "champion")
    champ = c.get_run(mv.run_id)
    parent = champ.data.tags.get("mlflow.parentRunId")
    runs = (
        c.search_runs(
            [champ.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
        )
        if parent
        else [champ]
    )
    models = []
    for r in runs:
        m = r.data.metrics
        models.append(
            {
                "model": r.data.tags.get("architecture", r.info.run_name),
                "kind": r.data.tags.get("kind", ""),
                "run": r.info.run_id,
                "champion": r.info.run_id == champ.info.run_id,
                **{k: m.get(k) for k, _, _ in CLINICAL},
                "test_threshold": m.get("test_threshold"),
            }
        )
    models.sort(key=lambda x: (x["kind"] != "network", -(x["test_auroc"] or 0)))
    cm = champ.data.metrics
    return {
        "tracking_uri": tracking_uri(),
        "champion": {
            "run": champ.info.run_id,
            "arch": champ.data.tags.get("architecture"),
            "model_version": mv.version,
            "train_seconds": cm.get("train_seconds"),
            "run_wall_seconds": (champ.info.end_time - champ.info.start_time) / 1000
            if champ.info.end_time
            else None,
            "parity_delta_auroc": cm.get("parity_delta_auroc"),
            "bundle_size_bytes": cm.get("bundle_size_bytes"),
            "test_auroc": cm.get("test_auroc"),
        },
        "comparison_run": parent,
        "models": models,
    }


def run_inference(tmp: Path) -> dict:
    out = tmp / "inference.json"
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "benches.bench_inference", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if r.returncode != 0 or not out.exists():
        raise RuntimeError(f"bench_inference failed: {r.stderr[-2000:]}")
    d = json.loads(out.read_text())
    d["bench_seconds"] = time.perf_counter() - t0
    return d


def run_hub(tmp: Path, messages: int) -> dict:
    from benches import bench_hub

    broker = bench_hub.start_mosquitto(tmp)
    try:
        msgs = bench_hub.build_messages(messages)
        rate = bench_hub.hub_rate(broker.port, f"sqlite:///{tmp}/hub.db", 1, msgs, 120.0, tmp)
    finally:
        broker.stop()
    return {"messages": messages, "hub_1_worker_sqlite_msg_s": rate}


def run_rollout(gateways: int) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "benches.bench_rollout", "--gateways", str(gateways),
         "--rounds", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    m = re.search(r"rollout to (\d+) gateways .*?: ([\d.]+) s from publish", r.stdout)
    a = re.search(r"full activation on one gateway .*?: ([\d.]+) ms", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"bench_rollout failed: {r.stdout[-1500:]} {r.stderr[-1500:]}")
    return {
        "gateways": int(m.group(1)),
        "seconds": float(m.group(2)),
        "activation_ms": float(a.group(1)) if a else None,
    }


def latency_row(rows: dict, needle: str) -> dict | None:
    """bench_inference's row whose engine name contains `needle` (its --json keys)."""
    for name, row in rows.items():
        if needle.lower() in name.lower() and "invoke" not in name.lower():
            return {"engine": name, **row}
    return None


def render(res: dict) -> str:
    lines = ["| figure | value | source |", "|---|---|---|"]
    inf = res.get("inference")
    if inf:
        rows = inf["latency"]
        lite = latency_row(rows, "int8 (gateway)") or latency_row(rows, "int8")
        assert lite is not None, rows
        for needle in ("int8 (gateway)", "tf.function", "onnx"):
            row = latency_row(rows, needle)
            if row:
                ratio = row["median_us"] / lite["median_us"]
                lines.append(
                    f"| inference per window, {row['engine']} | {row['median_us']:.1f} µs median, "
                    f"p99 {row['p99_us']:.1f} µs ({ratio:.1f}× int8) | bench_inference, this run |"
                )
        sz = inf["sizes_bytes"]
        lines.append(
            f"| model size int8 .tflite / float32 .tflite / .keras | "
            f"{sz['int8 .tflite'] / 1024:.1f} / {sz['float32 .tflite'] / 1024:.1f} / "
            f"{sz['.keras'] / 1024:.1f} KiB | bench_inference, this run |"
        )
        p = inf["parity"]
        dk = next((k for k in p if "delta_auroc" in k), None)
        if dk:
            lines.append(
                f"| ΔAUROC float → int8 (validation) | {p[dk]:+.4f} | bench_inference, this run |"
            )
    b = res["bundle"]
    lines.append(
        f"| committed bundle model.tflite | {b['model_bytes'] / 1024:.1f} KiB "
        f"({b['name']} v{b['version']}) | models/default/ |"
    )
    ch = res.get("mlflow", {}).get("champion")
    if ch:
        lines.append(
            f"| ΔAUROC float → int8 at conversion (champion) | {ch['parity_delta_auroc']:+.4f} | "
            f"MLflow run {ch['run'][:8]} |"
        )
        lines.append(
            f"| training time, champion ({ch['arch']}) | {ch['train_seconds']:.0f} s "
            f"(run wall {ch['run_wall_seconds']:.0f} s) | MLflow run {ch['run'][:8]} |"
        )
    hub = res.get("hub")
    if hub:
        lines.append(
            f"| hub ingest, 1 worker, SQLite | {hub['hub_1_worker_sqlite_msg_s']:,.0f} msg/s "
            f"({hub['messages']} QoS 1 vitals) | bench_hub.hub_rate, this run |"
        )
    ro = res.get("rollout")
    if ro:
        act = (
            f"; full activation {ro['activation_ms']:.1f} ms/gateway" if ro["activation_ms"] else ""
        )
        lines.append(
            f"| rollout to {ro['gateways']:,} gateways | {ro['seconds']:.2f} s publish → last "
            f"state{act} | bench_rollout, this run |"
        )
    out = "\n".join(lines)
    ml = res.get("mlflow")
    if ml:
        head = "| model | " + " | ".join(lbl for _, lbl, _ in CLINICAL) + " |"
        rows = [head, "|---" * (len(CLINICAL) + 1) + "|"]
        for m in ml["models"]:
            name = m["model"] + (" (champion)" if m["champion"] else "")
            cells = [(fmt.format(m[k]) if m[k] is not None else "-") for k, _, fmt in CLINICAL]
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
        out += (
            f"\n\nClinical summary (held-out test split; MLflow comparison run "
            f"{(ml['comparison_run'] or '')[:8]}, {ml['tracking_uri']}):\n\n" + "\n".join(rows)
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip", default="", help="comma list of: inference, hub, rollout")
    ap.add_argument("--hub-messages", type=int, default=5000)
    ap.add_argument("--gateways", type=int, default=1000)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="bench-headline-"))
    manifest = json.loads((default_bundle_dir() / "manifest.json").read_text())
    res: dict = {
        "bundle": {
            "name": manifest["name"],
            "version": manifest["version"],
            "model_bytes": (default_bundle_dir() / "model.tflite").stat().st_size,
        },
        "cpus": os.cpu_count(),
    }
    try:
        res["mlflow"] = mlflow_figures()
    except Exception as e:  # no local store or no champion: say so, no figure
        print(f"MLflow figures unavailable ({type(e).__name__}: {e})", flush=True)
    try:
        if "inference" not in skip:
            res["inference"] = run_inference(tmp)
            print(f"inference bench done in {res['inference']['bench_seconds']:.0f} s", flush=True)
        if "hub" not in skip:
            res["hub"] = run_hub(tmp, args.hub_messages)
            print(f"hub: {res['hub']}", flush=True)
        if "rollout" not in skip:
            res["rollout"] = run_rollout(args.gateways)
            print(f"rollout: {res['rollout']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    print()
    print(render(res))


if __name__ == "__main__":
    main()
