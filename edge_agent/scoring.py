"""The risk model on the gateway: a verified bundle run by LiteRT, plus NEWS2.

`load_model(dirs, trusted_keys)` activates the first bundle that passes every check
(DESIGN.md): Ed25519 signature by a trusted key, sha256 and size of model.tflite,
manifest schema, the interpreter loads it, inputs are found BY NAME as the manifest's
`inputs` say (`window`, `static`; the converter does not keep positions) with the
manifest's shapes, and every golden window reproduces its expected output within
tolerance. A bundle failing any step is refused with the reason and the next one is
tried. No TensorFlow here: `ai_edge_litert` (or `tflite_runtime` where that is what is
installed).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contracts.bundle import BundleError, Manifest, load_trusted_keys, verify_bundle
from contracts.news2 import News2, news2

log = logging.getLogger(__name__)

SIGNATURE_KEY = "serving_default"


def interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # an older gateway image with tflite-runtime only
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
    return Interpreter


@dataclass(frozen=True)
class _Tensor:
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int


def _tensor(d: dict[str, Any]) -> _Tensor:
    scale, zero = d.get("quantization", (0.0, 0))
    return _Tensor(
        int(d["index"]),
        tuple(int(x) for x in d["shape"]),
        np.dtype(d["dtype"]),
        float(scale),
        int(zero),
    )


class RiskModel:
    """A verified, loaded bundle: `score(window, static) -> risk in [0, 1]`. Thread-safe."""

    def __init__(self, folder: Path, manifest: Manifest, num_threads: int = 1) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        blob = (self.folder / "model.tflite").read_bytes()
        try:
            self._it = interpreter_class()(model_content=blob, num_threads=num_threads)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BundleError("load_failed", f"LiteRT cannot load {folder}: {e}") from None
        self._lock = threading.Lock()
        self._inputs, self._output = self._map()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def threshold(self) -> float:
        return self.manifest.threshold.value

    def _map(self) -> tuple[dict[str, _Tensor], _Tensor]:
        try:
            sig = self._it.get_signature_runner(SIGNATURE_KEY)
            ins = {k: _tensor(d) for k, d in sig.get_input_details().items()}
            outs = [_tensor(d) for d in sig.get_output_details().values()]
        except (ValueError, KeyError):  # no signature: match tensor names that contain the key
            ins = {}
            for d in self._it.get_input_details():
                for spec in self.manifest.inputs:
                    if spec.name in d["name"]:
                        ins[spec.name] = _tensor(d)
            outs = [_tensor(d) for d in self._it.get_output_details()]
        wanted = {t.name for t in self.manifest.inputs}
        if set(ins) != wanted:
            raise BundleError(
                "bad_inputs", f"model inputs {sorted(ins)} != manifest {sorted(wanted)}"
            )
        for t in self.manifest.inputs:
            if list(ins[t.name].shape) != list(t.shape):
                raise BundleError(
                    "bad_inputs", f"input {t.name} shape {ins[t.name].shape} != manifest {t.shape}"
                )
        if len(outs) != 1:
            raise BundleError("bad_outputs", f"model has {len(outs)} outputs, expected 1 (risk)")
        p = self.manifest.preprocessing
        if list(ins["window"].shape[1:]) != [p.window.steps, len(p.features)]:
            raise BundleError(
                "bad_inputs",
                f"window {ins['window'].shape} != [1, {p.window.steps}, {len(p.features)}]",
            )
        return ins, outs[0]

    def _set(self, t: _Tensor, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(t.shape)
        if t.dtype.kind in "iu":  # an int8 interface: quantise as the tensor says
            info = np.iinfo(t.dtype)
            x = np.clip(np.round(x / t.scale) + t.zero_point, info.min, info.max).astype(t.dtype)
        self._it.set_tensor(t.index, x)

    def score(self, window: np.ndarray, static: np.ndarray) -> float:
        with self._lock:
            self._set(self._inputs["window"], window)
            self._set(self._inputs["static"], static)
            self._it.invoke()
            out = self._it.get_tensor(self._output.index).reshape(-1)[0]
        if self._output.dtype.kind in "iu":
            return float((float(out) - self._output.zero_point) * self._output.scale)
        return float(out)

    def check_golden(self) -> int:
        """Run the manifest's golden windows; BundleError on any mismatch. Returns count."""
        for i, g in enumerate(self.manifest.golden):
            got = self.score(np.array(g.window), np.array(g.static))
            if not abs(got - g.expected) <= g.tolerance:
                raise BundleError(
                    "golden_mismatch",
                    f"golden window {i}: got {got:.4f}, expected {g.expected:.4f} ± {g.tolerance}",
                )
        return len(self.manifest.golden)


def activate(folder: Path, trusted: dict[str, Any]) -> RiskModel:
    """Verify, load and golden-check one bundle folder; BundleError with the reason."""
    manifest = verify_bundle(folder, trusted)
    model = RiskModel(folder, manifest)
    n = model.check_golden()
    log.info(
        "model %s %s active from %s (%d golden windows ok)", model.name, model.version, folder, n
    )
    return model


def load_model(dirs: list[Path], trusted_keys: list[Path]) -> tuple[RiskModel | None, list[str]]:
    """The first bundle of `dirs` that activates, and the refusal reasons of the others."""
    refused: list[str] = []
    try:
        trusted = load_trusted_keys([p for p in trusted_keys if Path(p).exists()])
    except (ValueError, OSError) as e:
        return None, [f"trusted keys unreadable: {e}"]
    if not trusted:
        return None, [f"no trusted public keys in {[str(p) for p in trusted_keys]}"]
    for d in dirs:
        try:
            return activate(Path(d), trusted), refused
        except BundleError as e:
            log.error("bundle %s refused: %s", d, e)
            refused.append(f"{d}: {e}")
    return None, refused


def news2_of(values: dict[str, float | None]) -> News2:
    """NEWS2 from one step's aggregated vitals (missing ones listed, scored 0)."""
    return news2(
        resp=values.get("Resp"),
        spo2=values.get("O2Sat"),
        sbp=values.get("SBP"),
        hr=values.get("HR"),
        temp=values.get("Temp"),
    )


def time_inference(model: RiskModel, n: int = 1000) -> float:
    """Median seconds per `score` on the first golden window (or zeros)."""
    p = model.manifest.preprocessing
    if model.manifest.golden:
        w, s = np.array(model.manifest.golden[0].window), np.array(model.manifest.golden[0].static)
    else:
        w = np.zeros((p.window.steps, len(p.features)))
        s = np.zeros(len(p.static_features))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model.score(w, s)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
