"""`vigil hub train` and `vigil hub keys init`: train and compare models; make a signing key.

TensorFlow and MLflow are imported inside the commands so `vigil --help` stays fast.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from contracts.paths import work_dir


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(2)


def default_key_dir() -> Path:
    return work_dir() / "keys"


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter and retracing notes drown the progress lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(no_args_is_help=True, help="Bundle signing keys (Ed25519).")
    app.add_typer(keys_app, name="keys")

    @keys_app.command("init")
    def keys_init(
        dir: Path | None = typer.Option(
            None, "--dir", help="Key folder (default <work_dir>/keys)."
        ),
        name: str = typer.Option("signing", help="File stem: NAME.key and NAME.pub."),
    ) -> None:
        """Make an Ed25519 key pair for signing model bundles (never commit NAME.key)."""
        from contracts.bundle import generate_key

        folder = dir or default_key_dir()
        try:
            key, pub, kid = generate_key(folder, name)
        except (FileExistsError, OSError) as e:
            raise _fail(str(e)) from None
        typer.echo(f"private key: {key} (mode 0600, keep secret)")
        typer.echo(f"public key:  {pub} (key id {kid}; copy into the gateways' trusted keys)")

    @app.command("train")
    def train_cmd(
        arch: str = typer.Option(
            "lstm,gru,two_branch", "--arch", help="Comma-separated: lstm, gru, two_branch."
        ),
        window: int = typer.Option(12, "--window", help="Window length in hours (steps)."),
        units: int = typer.Option(32, "--units", help="Recurrent units."),
        dropout: float = typer.Option(0.1, "--dropout", help="Dropout before the output."),
        epochs: int = typer.Option(12, "--epochs", help="Maximum epochs (best by val AUROC kept)."),
        lr: float = typer.Option(2e-3, "--lr", help="Adam learning rate."),
        batch_size: int = typer.Option(1024, "--batch-size", help="Training batch size."),
        patience: int = typer.Option(
            3, "--patience", help="Stop after N epochs without a better validation AUROC."
        ),
        class_weight: str = typer.Option(
            "auto", "--class-weight", help="auto (balanced by class frequency) or none."
        ),
        seed: int = typer.Option(2019, "--seed", help="Seed for the split and the weights."),
        limit_stays: int | None = typer.Option(
            None, "--limit-stays", help="Use a seeded random subset of N stays."
        ),
        data: Path | None = typer.Option(
            None,
            "--data",
            help="Canonical table (default <work_dir>/canonical/physionet2019.parquet).",
        ),
        tracking_uri: str | None = typer.Option(
            None,
            "--tracking-uri",
            help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else SQLite in <work_dir>/mlflow).",
        ),
        experiment: str = typer.Option("vigil-sepsis", help="MLflow experiment name."),
        model_name: str = typer.Option("vigil-sepsis", help="Registered model name."),
        baselines: bool = typer.Option(True, help="Also evaluate NEWS2 and logistic regression."),
        bundle: Path | None = typer.Option(
            None, "--bundle", help="Convert the champion into a signed int8 bundle in this folder."
        ),
        key: Path | None = typer.Option(
            None, "--key", help="Signing key for --bundle (default <work_dir>/keys/signing.key)."
        ),
    ) -> None:
        """Train and compare models on a patient-level split; track and register in MLflow."""
        _quiet_tensorflow()
        from cloud_hub.training.dataset import DatasetError
        from cloud_hub.training.train import TrainConfig, compare

        signing_key = key or default_key_dir() / "signing.key"
        if bundle is not None and not signing_key.exists():
            raise _fail(f"signing key {signing_key} not found: run `vigil hub keys init` first")
        try:
            cfg = TrainConfig(
                archs=tuple(a.strip() for a in arch.split(",") if a.strip()),
                steps=window,
                units=units,
                dropout=dropout,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                class_weight=class_weight,
                patience=patience,
                seed=seed,
                limit_stays=limit_stays,
                **({"data": data} if data is not None else {}),
                tracking_uri=tracking_uri,
                experiment=experiment,
                registered_model=model_name,
                baselines=baselines,
            )
            comp = compare(cfg, echo=typer.echo)
        except (ValueError, DatasetError) as e:
            raise _fail(str(e)) from None
        typer.echo("\nValidation split (threshold chosen here):")
        typer.echo(comp.table("val"))
        typer.echo("\nTest split (at the validation threshold):")
        typer.echo(comp.table("test"))
        typer.echo(
            f"\n{len(comp.results)} models in {comp.seconds:.0f} s; "
            f"parent run {comp.parent_run_id} in {comp.tracking_uri}"
        )
        if bundle is not None:
            if comp.champion is None:
                raise _fail("no network was trained: nothing to bundle")
            from cloud_hub.training.bundle import bundle_champion

            try:
                out = bundle_champion(comp, bundle, signing_key, echo=typer.echo)
            except Exception as e:  # conversion runs apart; report, never a traceback wall
                raise _fail(f"bundle not written: {e}") from None
            typer.echo(f"signed bundle: {out}")
