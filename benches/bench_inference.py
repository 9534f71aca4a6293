"""Per-window inference latency: int8 TFLite (LiteRT) vs Keras vs ONNX Runtime, one run.

    python -m benches.bench_inference                      # the default model, see below
    python -m benches.bench_inference --keras M.keras [--data CANONICAL.parquet]
    python -m benches.bench_inference --model-uri models:/vigil-sepsis@champion
    python -m benches.bench_inference --small              # always: train a small model here

Model: `--keras` or `--model-uri`; by default the MLflow champion of the local store
(with the canonical table it was trained on); when neither exists, a small GRU
trained here on 600 real PhysioNet stays, so the benchmark always runs. The int8
model is the bundle's (`--bundle`, default `models/default/` when its MLflow run is
the model's) or converted here with the same pipeline (`cloud_hub.conversion.tflite`).

Every engine scores the same validation windows one at a time (batch 1, as the
gateway does), in interleaved rounds so machine load hits all alike; single thread
everywhere (TensorFlow, ONNX Runtime, LiteRT). Printed: median and p99 per window,
ratios to int8 LiteRT, model sizes, float → int8 ΔAUROC and max |diff|.
- LiteRT int8: `model_runtime.litert.RiskModel.score` (set inputs, invoke, read: what
  the gateway calls); LiteRT float32 for reference; and `invoke()` alone (inputs
  already set) to separate the kernels from Python's per-call overhead.
- Keras `tf.function` (the fair baseline: traced once, batch-1 signature) and eager
  `model(x)` (reference; on fewer windows: it is slow).
- ONNX Runtime (CPU, float32) on the model converted by tf2onnx from the same function.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from contracts.paths import default_bundle_dir


def _percentiles(ns: list[int]) -> tuple[float, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e3  # µs
    return float(np.median(a)), float(np.percentile(a, 99))


def load_source(args: argparse.Namespace) -> dict[str, Any]:
    """The Keras model, its validation/training windows and where they came from."""
    from cloud_hub.training.dataset import prepare
    from cloud_hub.training.train import default_data_path

    data = Path(args.data) if args.data else default_data_path()
    if not args.small and (args.keras or args.model_uri or data.exists()):
        import keras

        from cloud_hub.conversion.cli import _from_mlflow, _load_table

        try:
            if args.keras:
                model = keras.models.load_model(args.keras, compile=False)
                src: dict[str, Any] = {
                    "model": model,
                    "run_id": "",
                    "seed": args.seed,
                    "limit_stays": args.limit_stays,
                    "spec": None,
                }
                what = f"Keras file {args.keras}"
            else:
                uri = args.model_uri or "models:/vigil-sepsis@champion"
                src = _from_mlflow(uri, args.tracking_uri)
                what = f"MLflow {uri} (run {src['run_id'][:8]})"
            if data.exists():
                df, fp = _load_table(data)
                steps = next(int(t.shape[1]) for t in src["model"].inputs if t.name == "window")
                prepared = prepare(
                    df,
                    steps=steps,
                    seed=src["seed"],
                    fingerprint=fp,
                    limit_stays=src["limit_stays"],
                )
                return {
                    "model": src["model"],
                    "run_id": src["run_id"],
                    "train": prepared.splits["train"],
                    "val": prepared.splits["val"],
                    "what": f"{what}; validation split of {data}",
                }
            print(f"no canonical table at {data}: falling back to a small model", flush=True)
        except Exception as e:  # no champion yet, no store: the fallback still measures
            if args.keras or args.model_uri:
                raise
            print(f"no default model ({type(e).__name__}: {e}); training a small one", flush=True)
    from cloud_hub.conversion.quickmodel import small_data, train_small_model

    t0 = time.perf_counter()
    d = small_data(n_stays=args.small_stays, steps=12)
    model = train_small_model(d, arch="gru", units=32, epochs=3)
    return {
        "model": model,
        "run_id": "",
        "train": d.train,
        "val": d.val,
        "what": (
            f"small GRU(32) trained here on {args.small_stays} real PhysioNet stays "
            f"({time.perf_counter() - t0:.0f} s); their validation split"
        ),
    }


def int8_model(args: argparse.Namespace, src: dict[str, Any]) -> tuple[bytes, str]:
    from cloud_hub.conversion.tflite import convert_int8

    bundle = Path(args.bundle) if args.bundle else default_bundle_dir()
    manifest = bundle / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if args.bundle or (src["run_id"] and m.get("mlflow_run_id") == src["run_id"]):
            return (bundle / "model.tflite").read_bytes(), f"bundle {bundle} v{m.get('version')}"
    t0 = time.perf_counter()
    blob = convert_int8(src["model"], src["train"])
    return blob, f"converted here ({time.perf_counter() - t0:.0f} s, child process)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--keras", help="a .keras model")
    p.add_argument("--model-uri", help="an MLflow model URI")
    p.add_argument("--tracking-uri", help="MLflow store (default: the local one)")
    p.add_argument("--data", help="canonical table (default <work_dir>/canonical/...)")
    p.add_argument("--bundle", help="bundle whose model.tflite is the int8 model")
    p.add_argument("--seed", type=int, default=2019)
    p.add_argument("--limit-stays", type=int, default=None)
    p.add_argument("--small", action="store_true", help="train a small model here")
    p.add_argument("--small-stays", type=int, default=600)
    p.add_argument("--windows", type=int, default=2000, help="windows timed per engine")
    p.add_argument("--eager-windows", type=int, default=60, help="windows for eager Keras")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)

    import keras
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    from cloud_hub.conversion.tflite import auroc, check_parity, convert_float
    from model_runtime.litert import RiskModel

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    src = load_source(args)
    model: keras.Model = src["model"]
    val = src["val"]
    blob, int8_from = int8_model(args, src)
    print(f"model: {src['what']}\nint8: {int8_from}", flush=True)
    # Accuracy on every validation row the gateway would score.
    parity = check_parity(model, blob, val, raise_on_failure=False)
    float_blob = convert_float(model, src["train"])

    steps, n_feat = val.window.shape[1:]
    n_static = val.static.shape[1]
    sig = [
        tf.TensorSpec([1, steps, n_feat], tf.float32, name="window"),
        tf.TensorSpec([1, n_static], tf.float32, name="static"),
    ]

    @tf.function(input_signature=sig)
    def serve(window: tf.Tensor, static: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"risk": model({"window": window, "static": static}, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=sig, opset=17)
    onnx_bytes = proto.SerializeToString()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])

    with tempfile.TemporaryDirectory() as tmp:
        kp = Path(tmp) / "model.keras"
        model.save(kp)
        keras_size = kp.stat().st_size

    # Same windows for everyone: a seeded sample of scorable validation rows.
    idx = np.flatnonzero(val.scorable)
    rng = np.random.default_rng(0)
    idx = rng.choice(idx, size=min(args.windows, idx.size), replace=False)
    W = val.window[idx][:, None].astype(np.float32)  # [N, 1, steps, F]
    S = val.static[idx][:, None].astype(np.float32)
    n = W.shape[0]

    lite8 = RiskModel(blob)
    lite32 = RiskModel(float_blob)
    for lite in (lite8, lite32):  # inputs set once: the invoke-only rows time the kernels
        lite.score(W[0], S[0])
    engines = {
        "LiteRT int8 (gateway)": lambda i: lite8.score(W[i], S[i]),
        "LiteRT float32": lambda i: lite32.score(W[i], S[i]),
        "LiteRT int8, invoke() only": lambda i: lite8.interpreter.invoke(),
        "LiteRT float32, invoke() only": lambda i: lite32.interpreter.invoke(),
        "Keras tf.function": lambda i: float(serve(W[i], S[i])["risk"].numpy()[0, 0]),
        "ONNX Runtime float32": lambda i: float(
            sess.run(None, {"window": W[i], "static": S[i]})[0][0, 0]
        ),
        "Keras eager model(x)": lambda i: float(
            model({"window": W[i], "static": S[i]}, training=False).numpy()[0, 0]
        ),
    }
    limits = {name: n for name in engines}
    limits["Keras eager model(x)"] = min(args.eager_windows, n)

    # Agreement on the timed windows (same inputs): float engines vs Keras.
    ref = np.array([engines["Keras tf.function"](i) for i in range(min(n, 200))])
    agree = {
        name: float(np.max(np.abs(np.array([fn(i) for i in range(len(ref))]) - ref)))
        for name, fn in engines.items()
        if name != "Keras eager model(x)" and "invoke" not in name
    }
    for fn in engines.values():  # warm-up: traces, allocations, caches
        for i in range(20):
            fn(i)

    times: dict[str, list[int]] = {name: [] for name in engines}
    for r in range(args.rounds):
        for name, fn in engines.items():
            lo = r * limits[name] // args.rounds
            hi = (r + 1) * limits[name] // args.rounds
            for i in range(lo, hi):
                t0 = time.perf_counter_ns()
                fn(i)
                times[name].append(time.perf_counter_ns() - t0)

    base = _percentiles(times["LiteRT int8 (gateway)"])[0]
    print(
        f"\nper-window latency, batch 1, single thread ({n} windows; eager {limits['Keras eager model(x)']}):"
    )
    print("| engine | median µs | p99 µs | × int8 median | max abs diff vs Keras |")
    print("|---|---|---|---|---|")
    rows = {}
    for name, ns in times.items():
        med, p99 = _percentiles(ns)
        diff = agree.get(name)
        rows[name] = {"median_us": med, "p99_us": p99, "ratio": med / base, "n": len(ns)}
        print(
            f"| {name} | {med:.1f} | {p99:.1f} | {med / base:.1f} | "
            f"{'-' if diff is None else f'{diff:.4f}'} |"
        )
    sizes = {
        "int8 .tflite": len(blob),
        "float32 .tflite": len(float_blob),
        ".keras": keras_size,
        ".onnx": len(onnx_bytes),
    }
    print("\n| model file | KiB |\n|---|---|")
    for k, v in sizes.items():
        print(f"| {k} | {v / 1024:.1f} |")
    y = val.y[val.scorable]
    print(
        f"\nvalidation ({parity.n} scored windows, {int(y.sum())} positive): "
        f"AUROC float {parity.auroc_float:.4f}, int8 {parity.auroc_int8:.4f}, "
        f"Δ {parity.delta_auroc:+.4f}; |float - int8| max {parity.max_abs_diff:.4f}, "
        f"p99 {parity.p99_abs_diff:.4f}, mean {parity.mean_abs_diff:.4f}"
    )
    assert abs(auroc(y, parity.int8_risk) - parity.auroc_int8) < 1e-12
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": src["what"],
                    "int8": int8_from,
                    "latency": rows,
                    "sizes_bytes": sizes,
                    "parity": {k: v for k, v in parity.as_metrics().items()},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
