"""The risk model on the gateway: a verified bundle run by LiteRT, plus NEWS2.

`load_model(dirs, trusted_keys)` activates the first bundle that passes every check
of `model_runtime.verify.verify_full` (docs/ARCHITECTURE.md, "Model bundle"): Ed25519
signature by a trusted key, sha256 and size of model.tflite, manifest schema, the
interpreter loads it (`model_load`), inputs are found BY NAME (`window`, `static`; the
converter does not keep positions) with the manifest's shapes (`io_mismatch`), and
every golden window reproduces its expected output within tolerance. A bundle failing
any step is refused with the reason and the next one is tried. No TensorFlow here: `ai_edge_litert` (or `tflite_runtime` where that is what is
installed).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from contracts.bundle import BundleError, load_trusted_keys
from contracts.news2 import News2, news2
from model_runtime.litert import RiskModel
from model_runtime.verify import verify_full

log = logging.getLogger(__name__)

__all__ = ["RiskModel", "activate", "load_model", "news2_of", "time_inference"]


def activate(folder: Path, trusted: dict[str, Any]) -> RiskModel:
    """Verify, load and golden-check one bundle folder; BundleError with the reason."""
    verified = verify_full(folder, trusted)
    model, n = verified.model, verified.golden_count
    assert model is not None  # verify_full always returns the model it checked
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
        except Exception as e:  # whatever a bundle's files hold: the next one is tried
            log.exception("bundle %s could not be checked", d)
            refused.append(f"{d}: internal: {type(e).__name__}")
    return None, refused


def news2_of(
    values: dict[str, float | None],
    *,
    on_oxygen: bool | None = None,
    acvpu: str | None = None,
    scale: int = 1,
) -> News2:
    """NEWS2 from one step's aggregated vitals (missing ones listed, scored 0) and the
    bed's nurse observations (oxygen, ACVPU, SpO2 scale; not recorded: listed in
    `assumed`, scored as air / Alert)."""
    return news2(
        resp=values.get("Resp"),
        spo2=values.get("O2Sat"),
        sbp=values.get("SBP"),
        hr=values.get("HR"),
        temp=values.get("Temp"),
        on_oxygen=on_oxygen,
        acvpu=acvpu,
        scale=scale,
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
