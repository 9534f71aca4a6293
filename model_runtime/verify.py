"""Check a bundle the way a gateway activates it: signature, sha256, schema, load, golden windows.

TensorFlow-free (contracts + LiteRT + NumPy), so it runs on a gateway-like install.
Raises `contracts.bundle.BundleError` with a short `reason`:

- from `contracts.bundle.read_bundle`/`verify_parts`: `incomplete`, `unreadable`,
  `bad_manifest`, `bad_signature`, `unknown_key`, `too_large` (over
  `contracts.bundle.MAX_MODEL_BYTES`, the gateway's own limit), `wrong_size`, `wrong_hash`;
- from here: `model_load` (LiteRT refuses the model), `io_mismatch` (the model's
  tensors are not what the manifest and its preprocessing say), `no_golden` (nothing
  to prove the model with), `golden_mismatch` (an output off by more than its tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contracts.bundle import (
    MODEL,
    BundleError,
    Manifest,
    read_bundle,
    verify_parts,
)

from .litert import RiskModel


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    key_id: str
    golden_max_error: float
    golden_count: int
    model: RiskModel | None = field(default=None, compare=False, repr=False)

    def line(self) -> str:
        return (
            f"OK {self.manifest.name} {self.manifest.version} "
            f"({self.manifest.architecture}, key {self.key_id}, "
            f"{self.golden_count} golden windows within tolerance, "
            f"max error {self.golden_max_error:.2g})"
        )


def check_model(manifest: Manifest, model: RiskModel) -> tuple[float, int]:
    """The model's tensors match the manifest, and every golden window scores as written."""
    spec = manifest.preprocessing
    want = {
        "window": (1, spec.window.steps, len(spec.features)),
        "static": (1, len(spec.static_features)),
    }
    declared = {t.name: tuple(t.shape) for t in manifest.inputs}
    for name, shape in want.items():
        if name not in model.inputs:
            raise BundleError("io_mismatch", f"model has no input named {name!r}")
        got = model.inputs[name].shape
        if got != shape:
            raise BundleError(
                "io_mismatch",
                f"model input {name!r} has shape {list(got)}, preprocessing needs {list(shape)}",
            )
        if declared.get(name) != got:
            raise BundleError(
                "io_mismatch",
                f"manifest declares input {name!r} as {declared.get(name)}, model has {list(got)}",
            )
    if not manifest.golden:
        raise BundleError("no_golden", "the manifest holds no golden windows to check the model")
    worst = 0.0
    for i, g in enumerate(manifest.golden):
        try:
            got = model.score(np.asarray(g.window), np.asarray(g.static))
        except Exception as e:  # any shape/type the interpreter refuses: not this model
            raise BundleError("golden_mismatch", f"golden window {i} cannot be fed: {e}") from None
        err = abs(got - g.expected)
        worst = max(worst, err)
        if not err <= g.tolerance:  # `not <=` also catches NaN
            raise BundleError(
                "golden_mismatch",
                f"golden window {i}: model gives {got:.5f}, manifest expects "
                f"{g.expected:.5f} ± {g.tolerance:g}",
            )
    return worst, len(manifest.golden)


def verify_full(folder: Path, trusted: dict) -> Verified:
    """Every check a gateway makes before activating the bundle in `folder`."""
    folder = Path(folder)
    raw, signature, model_bytes = read_bundle(folder)  # each file read once
    manifest = verify_parts(raw, signature, model_bytes, trusted)
    kid = signature["key_id"]
    try:
        model = RiskModel(model_bytes, manifest=manifest, folder=folder)
    except Exception as e:
        raise BundleError("model_load", f"LiteRT cannot load {MODEL}: {e}") from None
    worst, n = check_model(manifest, model)
    return Verified(manifest, kid, worst, n, model)
