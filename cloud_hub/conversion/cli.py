"""`vigil convert tflite` (Keras or MLflow model → signed int8 bundle) and `vigil convert verify`.

    vigil convert tflite [--model-uri models:/vigil-sepsis@champion | --keras M.keras]
        --data CANONICAL.parquet --key signing.key --out models/default
    vigil convert verify BUNDLE [--trusted DIR_OR_PUB ...]

`tflite` rebuilds the run's split from the canonical table (seed, window, subset from
the MLflow run, or from the options for a bare .keras file), checks that the data
reproduces the run's preprocessing exactly (else: train/serve skew, refused), then
calls `cloud_hub.conversion.bundle_build.build_bundle`. `verify` makes every check a gateway
makes before activating a bundle and exits non-zero with the reason on failure.
TensorFlow and MLflow are imported inside the commands (`vigil --help` stays fast).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cloud_hub.cli_options import SigningKeyFile, TrackingUri, default_signing_key
from contracts.cli import CanonicalTable, fail
from contracts.paths import default_trusted_keys_dir, work_dir

DEFAULT_MODEL_URI = "models:/vigil-sepsis@champion"

app = typer.Typer()
"""`tflite` and `verify`; `vigil_cli.main` adds them to the `vigil convert` group."""


def default_trusted() -> list[Path]:
    """The repository's trusted keys and the local key folder, where they exist."""
    return [p for p in (default_trusted_keys_dir(), work_dir() / "keys") if p.exists()]


def _load_table(path: Path) -> tuple[Any, str]:
    """Canonical table and its fingerprint, read as training reads it."""
    from cloud_hub.training.dataset import load_table

    return load_table(str(path))


def _from_mlflow(uri: str, tracking_uri: str | None) -> dict[str, Any]:
    """The model and what its run recorded: spec, seed, window, subset, metrics."""
    import mlflow
    import mlflow.keras
    from mlflow.exceptions import MlflowException

    from cloud_hub.training import tracking

    mlflow.set_tracking_uri(tracking.resolve_tracking_uri(tracking_uri))
    try:
        return _read_run(uri)
    except MlflowException as e:
        raise ValueError(f"{uri}: {str(e).splitlines()[0]}") from None


def _read_run(uri: str) -> dict[str, Any]:
    import mlflow
    import mlflow.keras

    from contracts.preprocessing import PreprocessSpec

    client = mlflow.MlflowClient()
    version = ""
    if uri.startswith("models:/"):
        ref = uri[len("models:/") :]
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, ver = ref.rsplit("/", 1)
            mv = client.get_model_version(name, ver)
        run_id, version = mv.run_id, str(mv.version)
    elif uri.startswith("runs:/"):
        run_id = uri[len("runs:/") :].split("/", 1)[0]
    else:
        raise ValueError("--model-uri must be models:/NAME@ALIAS, models:/NAME/V or runs:/ID/…")
    run = client.get_run(run_id)
    params = run.data.params
    spec = PreprocessSpec.model_validate(
        mlflow.artifacts.load_dict(f"runs:/{run_id}/preprocess_spec.json")
    )
    limit = params.get("limit_stays", "all")
    return {
        "model": mlflow.keras.load_model(uri),
        "run_id": run_id,
        "version": version,
        "spec": spec,
        "architecture": params.get("architecture", run.data.tags.get("architecture", "")),
        "seed": int(params.get("seed", 2019)),
        "limit_stays": None if limit in ("all", "None", "") else int(limit),
        "fingerprint": params.get("dataset_fingerprint", ""),
        "metrics": {k: v for k, v in run.data.metrics.items() if k.startswith(("val_", "test_"))},
    }


def _window_steps(model: Any) -> int:
    return next((int(t.shape[1]) for t in model.inputs if t.name == "window"), 0)


@app.command("tflite")
def tflite_cmd(
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write (replaced whole).")],
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help=f"MLflow model (default {DEFAULT_MODEL_URI}).")
    ] = None,
    keras_path: Annotated[
        Path | None, typer.Option("--keras", help="A .keras file instead of an MLflow model.")
    ] = None,
    data: CanonicalTable = None,
    key: SigningKeyFile = None,
    tracking_uri: TrackingUri = None,
    seed: Annotated[int | None, typer.Option(help="Split seed (--keras; default 2019).")] = None,
    limit_stays: Annotated[
        int | None,
        typer.Option("--limit-stays", help="Seeded subset of N stays, as in training (--keras)."),
    ] = None,
    name: Annotated[str, typer.Option(help="Bundle name.")] = "vigil-sepsis",
    version: Annotated[
        str | None,
        typer.Option(help="Bundle version (default: registry version, else a UTC timestamp)."),
    ] = None,
    architecture: Annotated[
        str | None, typer.Option(help="Architecture (default: the run's).")
    ] = None,
    max_abs_diff: Annotated[
        float, typer.Option(help="Refuse if max |float - int8| exceeds.")
    ] = 0.25,
    max_p99_diff: Annotated[
        float, typer.Option(help="Refuse if the 99th percentile of |float - int8| exceeds.")
    ] = 0.08,
    max_delta_auroc: Annotated[float, typer.Option(help="Refuse if |ΔAUROC| exceeds.")] = 0.02,
    timeout: Annotated[float, typer.Option(help="Converter time limit, seconds.")] = 600.0,
) -> None:
    """Convert a trained model to a signed int8 TFLite bundle (parity-checked).

    Example: vigil convert tflite --model-uri models:/vigil-sepsis@champion --out models/candidate
    """
    # Bad arguments are named before TensorFlow loads (seconds, and its start-up chatter).
    if model_uri and keras_path:
        raise fail("give --model-uri or --keras, not both")
    if keras_path is not None and not keras_path.is_file():
        what = "is a folder" if keras_path.is_dir() else "not found"
        raise fail(f"--keras {keras_path}: Keras model {what}")
    if keras_path is not None and keras_path.suffix not in (".keras", ".h5"):
        raise fail(f"--keras {keras_path}: expected a .keras (or legacy .h5) file")
    if model_uri and not model_uri.startswith(("models:/", "runs:/")):
        raise fail(
            f"--model-uri {model_uri}: expected models:/NAME@ALIAS, models:/NAME/V or runs:/ID"
        )
    if data is not None and not data.is_file():
        raise fail(f"--data {data}: {'is a folder' if data.is_dir() else 'not found'}")
    signing_key = key or default_signing_key()
    if not signing_key.exists():
        raise fail(f"signing key {signing_key} not found: run `vigil hub keys init`")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from cloud_hub.training.dataset import DatasetError, prepare
    from cloud_hub.training.train import default_data_path
    from contracts.timeutil import iso_ms, utc_now

    from .bundle_build import build_bundle
    from .tflite import ConversionError, Tolerances

    try:
        if keras_path is not None:
            import keras

            model = keras.models.load_model(keras_path, compile=False)
            src: dict[str, Any] = {
                "model": model,
                "run_id": "",
                "version": "",
                "spec": None,
                "architecture": model.name,
                "seed": 2019 if seed is None else seed,
                "limit_stays": limit_stays,
                "fingerprint": "",
                "metrics": {},
            }
        else:
            src = _from_mlflow(model_uri or DEFAULT_MODEL_URI, tracking_uri)
            if src["spec"].window.steps != _window_steps(src["model"]):
                raise fail("the run's preprocessing window differs from the model's input")
        steps = _window_steps(src["model"])
        if not steps:
            raise fail("the model has no input named 'window' [steps, features]")
        table = data or default_data_path()
        typer.echo(f"reading {table}")
        df, fingerprint = _load_table(table)
        if src["fingerprint"] and fingerprint != src["fingerprint"]:
            raise fail(
                f"{table} has fingerprint {fingerprint[:16]}…, the run was trained on "
                f"{src['fingerprint'][:16]}…: convert with the run's data"
            )
        prepared = prepare(
            df,
            steps=steps,
            seed=src["seed"],
            fingerprint=fingerprint,
            limit_stays=src["limit_stays"],
            min_observed=src["spec"].min_observed if src["spec"] else 3,
        )
        del df
        if src["spec"] is not None and prepared.spec != src["spec"]:
            raise fail(
                "the data does not reproduce the run's preprocessing (normalisation "
                "constants differ): refusing a bundle that would skew train and serve"
            )
        built = build_bundle(
            src["model"],
            out,
            signing_key,
            spec=prepared.spec,
            representative=prepared.splits["train"],
            validation=prepared.splits["val"],
            architecture=architecture or src["architecture"] or "unknown",
            version=version or src["version"] or iso_ms(utc_now()).replace(":", "").split(".")[0],
            name=name,
            metrics=src["metrics"],
            mlflow_run_id=src["run_id"],
            dataset_fingerprint=fingerprint,
            tolerances=Tolerances(
                max_abs_diff=max_abs_diff,
                p99_abs_diff=max_p99_diff,
                delta_auroc=max_delta_auroc,
            ),
            timeout=timeout,
            echo=typer.echo,
        )
    except ConversionError as e:
        raise fail(f"conversion {e}", 1) from None
    except (DatasetError, ValueError, OSError) as e:
        raise fail(e) from None
    typer.echo(f"signed bundle: {built.folder}")


@app.command("verify")
def verify_cmd(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    trusted: Annotated[
        list[Path] | None,
        typer.Option(
            "--trusted",
            help="Trusted public key (.pub) or folder of them; repeatable "
            "(default: models/trusted_keys and <work_dir>/keys).",
        ),
    ] = None,
) -> None:
    """Check a bundle as a gateway would: signature, sha256, schema, LiteRT, golden windows.

    Example: vigil convert verify models/default --trusted models/trusted_keys
    """
    from contracts.bundle import BundleError, load_trusted_keys
    from model_runtime.verify import verify_full

    keys = {}
    for given in trusted or default_trusted():  # each file on its own: the error names it
        for f in sorted(given.glob("*.pub")) if given.is_dir() else [given]:
            try:
                keys.update(load_trusted_keys([f]))
            except OSError as e:
                raise fail(f"--trusted {f}: cannot read it ({e.strerror or e})") from None
            except (ValueError, TypeError) as e:  # not PEM, or not an Ed25519 key
                why = str(e).split(". See ")[0]
                raise fail(f"--trusted {f}: not an Ed25519 public key in PEM ({why})") from None
    if not keys:
        raise fail("no trusted public keys: pass --trusted DIR_OR_PUB")
    try:
        result = verify_full(bundle, keys)
    except BundleError as e:
        typer.echo(f"FAILED {bundle}: {e.reason}: {e.detail}")
        raise typer.Exit(1) from None
    typer.echo(result.line())
