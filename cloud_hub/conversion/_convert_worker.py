"""The TFLite converter, run as a child process by `cloud_hub.conversion.tflite` (never imported there).

The converter is native code that can die with a segmentation fault (full int8
conversion of a recurrent layer without `unroll=True`, docs/ARCHITECTURE.md "Known pitfalls");
in a child process that becomes an exit signal the parent reports, not a dead hub.

    python -m cloud_hub.conversion._convert_worker --keras M.keras --data REP.npz --out M.tflite
        [--mode int8|float]

REP.npz holds `window` [N, steps, F] and `static` [N, S] (normalised, float32): the
representative data for int8 calibration and the source of the fixed input shapes.
Exit 0: OUT written. Exit 3: a clear error on stderr, one line starting "error:".
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

WINDOW, STATIC, RISK = "window", "static", "risk"


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(3)


def convert(keras_path: Path, data_path: Path, out: Path, mode: str) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    data = np.load(data_path)
    windows = data[WINDOW].astype(np.float32)
    statics = data[STATIC].astype(np.float32)
    model = keras.models.load_model(keras_path, compile=False)
    names = sorted(t.name for t in model.inputs)
    if names != sorted([WINDOW, STATIC]):
        _fail(f"the model's inputs must be named {WINDOW!r} and {STATIC!r}, got {names}")

    # Batch fixed to 1: the gateway scores one window at a time, and a fixed shape lets
    # the unrolled recurrence become plain builtin ops.
    sig = [
        tf.TensorSpec([1, *windows.shape[1:]], tf.float32, name=WINDOW),
        tf.TensorSpec([1, *statics.shape[1:]], tf.float32, name=STATIC),
    ]

    def serve(window: tf.Tensor, static: tf.Tensor) -> dict[str, tf.Tensor]:
        return {RISK: model({WINDOW: window, STATIC: static}, training=False)}

    with tempfile.TemporaryDirectory(prefix="vigil-savedmodel-") as tmp:
        # Keras 3's ExportArchive tracks the variables so the converter can freeze them
        # (a bare tf.function leaves READ_VARIABLE ops that fail in calibration).
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serve, input_signature=sig)
        archive.write_out(tmp, verbose=False)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if mode == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]

            def representative() -> Iterator[dict[str, np.ndarray]]:
                for i in range(windows.shape[0]):
                    yield {WINDOW: windows[i : i + 1], STATIC: statics[i : i + 1]}

            conv.representative_dataset = representative
            # Builtin int8 kernels only: the model must run in plain LiteRT. Input and
            # output stay float: the model quantises them itself
            # (docs/ARCHITECTURE.md "Known pitfalls").
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        elif mode != "float":
            _fail(f"unknown mode {mode!r} (int8 or float)")
        try:
            blob = conv.convert()
        except Exception as e:  # the converter's own errors: one line for the parent
            _fail(f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e) else e}")
    out.write_bytes(blob)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cloud_hub.conversion._convert_worker")
    p.add_argument("--keras", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mode", default="int8", choices=("int8", "float"))
    a = p.parse_args(argv)
    return convert(a.keras, a.data, a.out, a.mode)


if __name__ == "__main__":
    sys.exit(main())
