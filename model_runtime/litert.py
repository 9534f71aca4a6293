"""Run a bundle's int8 model in LiteRT, without TensorFlow: parity, golden windows, verify.

This module imports only NumPy and `ai_edge_litert` (or `tflite_runtime` where that is
the one installed), so it runs where the gateway runs and `vigil convert verify`
proves a bundle on a machine without TensorFlow.

Tensors are mapped BY NAME, never by position: a converted two-input model does not
keep the Keras input order (the converter sorts signature inputs alphabetically, so
`static` comes before `window`). The names are the model's signature keys, which the
converter sets to the Keras input names (`window`, `static`) and the output name
(`risk`); they are what the manifest's `inputs[].name` / `outputs[].name` hold.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from contracts.bundle import Manifest

SIGNATURE_KEY = "serving_default"
WINDOW = "window"
STATIC = "static"
RISK = "risk"


class LiteRTError(RuntimeError):
    """The model cannot be loaded or run as a Vigil risk model; the message says why."""


def _interpreter_class() -> tuple[Any, Any]:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:  # a gateway image with tflite-runtime only
        from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore
    return Interpreter, OpResolverType


@dataclass(frozen=True)
class TensorInfo:
    """One interface tensor: signature name, tensor index, shape, dtype, quantisation."""

    name: str
    index: int
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    def as_manifest(self) -> dict[str, Any]:
        """The manifest's `TensorSpec` fields (contracts.bundle.TensorSpec)."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


def _info(name: str, d: dict[str, Any]) -> TensorInfo:
    scale, zero = d.get("quantization", (0.0, 0))
    return TensorInfo(
        name=name,
        index=int(d["index"]),
        shape=tuple(int(x) for x in d["shape"]),
        dtype=np.dtype(d["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero),
    )


class RiskModel:
    """A loaded risk model: `score(window, static) -> float`, inputs matched by name.

    `window` is [steps, F] (or [1, steps, F]), `static` [S] (or [1, S]), both the
    normalised output of `contracts.preprocessing.stay_windows`. Float input and
    output: when the model has int8 interface tensors, inputs are quantised with the
    tensor's scale/zero point and the output dequantised, so callers never see int8.
    `score` is thread-safe (one interpreter, one lock).

    A model loaded from a verified bundle (`model_runtime.verify.verify_full`) also
    carries its `manifest` and `folder`, so `name`, `version` and `threshold` travel
    with every score it gives.
    """

    def __init__(
        self,
        model: bytes,
        num_threads: int = 1,
        delegates: bool = True,
        *,
        manifest: Manifest | None = None,
        folder: Path | None = None,
    ) -> None:
        self.manifest = manifest
        self.folder = Path(folder) if folder is not None else None
        self._lock = threading.Lock()
        interpreter_cls, resolver = _interpreter_class()
        kwargs: dict[str, Any] = {"model_content": bytes(model), "num_threads": num_threads}
        if not delegates:
            # The reference op list, as written in the file (XNNPACK would fold it into
            # one DELEGATE node).
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self._it = interpreter_cls(**kwargs)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise LiteRTError(f"LiteRT cannot load the model: {e}") from None
        self.inputs, self.outputs = self._map_tensors()
        self._window = self.inputs[WINDOW]
        self._static = self.inputs[STATIC]
        self._risk = self.outputs[RISK]

    def _map_tensors(self) -> tuple[dict[str, TensorInfo], dict[str, TensorInfo]]:
        try:
            sig = self._it.get_signature_runner(SIGNATURE_KEY)
            ins = {k: _info(k, d) for k, d in sig.get_input_details().items()}
            outs = {k: _info(k, d) for k, d in sig.get_output_details().items()}
        except (ValueError, KeyError):
            # No signature: fall back to tensor names that contain the input name.
            ins, outs = {}, {}
            for d in self._it.get_input_details():
                for key in (WINDOW, STATIC):
                    if key in d["name"]:
                        ins[key] = _info(key, d)
            details = self._it.get_output_details()
            if len(details) == 1:
                outs[RISK] = _info(RISK, details[0])
        missing = [k for k in (WINDOW, STATIC) if k not in ins]
        if missing or len(ins) != 2:
            raise LiteRTError(
                f"model inputs must be named {WINDOW!r} and {STATIC!r}; found {sorted(ins)}"
            )
        if RISK not in outs:
            if len(outs) != 1:
                raise LiteRTError(f"model must have one output {RISK!r}; found {sorted(outs)}")
            (only,) = outs.values()  # a single unnamed output (e.g. output_0) is the risk
            outs = {RISK: replace(only, name=RISK)}
        return ins, outs

    def _manifest(self) -> Manifest:
        if self.manifest is None:
            raise LiteRTError("this model was loaded without a bundle manifest")
        return self.manifest

    @property
    def name(self) -> str:
        return self._manifest().name

    @property
    def version(self) -> str:
        return self._manifest().version

    @property
    def threshold(self) -> float:
        return self._manifest().threshold.value

    @property
    def interpreter(self) -> Any:
        """The underlying LiteRT interpreter (for benchmarks and inspection)."""
        return self._it

    @property
    def steps(self) -> int:
        return self._window.shape[1]

    def _set(self, t: TensorInfo, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float32).reshape(t.shape)
        if t.dtype in ("int8", "uint8"):  # int8 interface: quantise as the tensor says
            info = np.iinfo(t.dtype)
            x = np.clip(np.round(x / t.scale) + t.zero_point, info.min, info.max).astype(t.dtype)
        self._it.set_tensor(t.index, x)

    def score(self, window: np.ndarray, static: np.ndarray) -> float:
        """Risk in [0, 1] for one window."""
        with self._lock:
            self._set(self._window, window)
            self._set(self._static, static)
            self._it.invoke()
            out = self._it.get_tensor(self._risk.index).reshape(-1)[0]
        if self._risk.dtype in ("int8", "uint8"):
            return float((float(out) - self._risk.zero_point) * self._risk.scale)
        return float(out)

    def score_many(self, windows: np.ndarray, statics: np.ndarray) -> np.ndarray:
        """Risk for each of N windows ([N, steps, F], [N, S]), one invoke each (batch 1)."""
        windows = np.asarray(windows, dtype=np.float32)
        statics = np.asarray(statics, dtype=np.float32)
        if windows.shape[0] != statics.shape[0]:
            raise ValueError(f"{windows.shape[0]} windows but {statics.shape[0]} static rows")
        return np.array(
            [self.score(w, s) for w, s in zip(windows, statics, strict=True)], dtype=np.float32
        )

    def op_names(self) -> list[str]:
        """Operator names of the graph (use `delegates=False` to see the file's own ops)."""
        return sorted({d["op_name"] for d in self._it._get_ops_details()})

    def tensor_dtypes(self) -> dict[str, int]:
        """How many tensors of each dtype the model holds (int8 inside proves quantisation)."""
        out: dict[str, int] = {}
        for d in self._it.get_tensor_details():
            name = np.dtype(d["dtype"]).name
            out[name] = out.get(name, 0) + 1
        return out

    def internal_quantization(self) -> dict[str, dict[str, float]]:
        """Scale/zero point of the int8 tensors the float inputs and output are quantised to.

        With float interface tensors the model quantises its inputs itself (a QUANTIZE
        op); these are the parameters it uses, written into the manifest for the record.
        """
        out: dict[str, dict[str, float]] = {}
        by_index = {d["index"]: d for d in self._it.get_tensor_details()}
        for op in self._it._get_ops_details():
            if op["op_name"] == "QUANTIZE" and len(op["inputs"]) == 1:
                src = int(op["inputs"][0])
                for t in (self._window, self._static):
                    if src == t.index:
                        d = by_index[int(op["outputs"][0])]
                        s, z = d["quantization"]
                        out[t.name] = {"scale": float(s), "zero_point": int(z)}
            if op["op_name"] == "DEQUANTIZE" and int(op["outputs"][0]) == self._risk.index:
                d = by_index[int(op["inputs"][0])]
                s, z = d["quantization"]
                out[self._risk.name] = {"scale": float(s), "zero_point": int(z)}
        return out
