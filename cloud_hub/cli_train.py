"""`vigil hub train` and `vigil hub keys init`: train and compare models; make a signing key.

TensorFlow and MLflow are imported inside the commands so `vigil --help` stays fast.
`cloud_hub.cli` adds these commands to `vigil hub`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from cloud_hub.cli_options import (
    BatchSize,
    Epochs,
    LimitStays,
    ModelName,
    Patience,
    Seed,
    SigningKeyFile,
    TrackingUri,
    Units,
    Window,
    default_key_dir,
    default_signing_key,
)
from contracts.cli import CanonicalTable, fail

app = typer.Typer()
keys_app = typer.Typer(no_args_is_help=True, help="Bundle signing keys (Ed25519).")
app.add_typer(keys_app, name="keys")


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter and retracing notes drown the progress lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


@keys_app.command("init")
def keys_init(
    dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Key folder (default <work_dir>/keys).", file_okay=False),
    ] = None,
    name: Annotated[str, typer.Option(help="File stem: NAME.key and NAME.pub.")] = "signing",
) -> None:
    """Make an Ed25519 key pair for signing model bundles (never commit NAME.key).

    Example: vigil hub keys init --name signing
    """
    from contracts.bundle import generate_key

    folder = dir or default_key_dir()
    try:
        key, pub, kid = generate_key(folder, name)
    except FileExistsError as e:
        raise fail(f"--name {name}: {e}: choose another --name or --dir") from None
    except OSError as e:
        raise fail(f"--dir {folder}: cannot write the key pair ({e.strerror or e})") from None
    typer.echo(f"private key: {key} (mode 0600, keep secret)")
    typer.echo(f"public key:  {pub} (key id {kid}; copy into the gateways' trusted keys)")


@app.command("train")
def train_cmd(
    arch: Annotated[
        str, typer.Option("--arch", help="Comma-separated: lstm, gru, two_branch.")
    ] = "lstm,gru,two_branch",
    window: Window = 12,
    units: Units = 32,
    dropout: Annotated[float, typer.Option("--dropout", help="Dropout before the output.")] = 0.1,
    epochs: Epochs = 12,
    lr: Annotated[float, typer.Option("--lr", help="Adam learning rate.")] = 2e-3,
    batch_size: BatchSize = 1024,
    patience: Patience = 3,
    class_weight: Annotated[
        str, typer.Option("--class-weight", help="auto (balanced by class frequency) or none.")
    ] = "auto",
    seed: Seed = 2019,
    limit_stays: LimitStays = None,
    data: CanonicalTable = None,
    tracking_uri: TrackingUri = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "vigil-sepsis",
    model_name: ModelName = "vigil-sepsis",
    baselines: Annotated[
        bool, typer.Option(help="Also evaluate NEWS2 and logistic regression.")
    ] = True,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", help="Convert the champion into a signed int8 bundle in this folder."
        ),
    ] = None,
    key: SigningKeyFile = None,
    alarm_budget: Annotated[
        float | None,
        typer.Option(
            "--alarm-budget",
            help="Alarm-hours per patient-day (non-septic stays): choose the threshold on "
            "the burden curve of the gateway's alarm machine instead of by utility; the "
            "bundle's manifest carries the curve.",
        ),
    ] = None,
) -> None:
    """Train and compare models on a patient-level split; track and register in MLflow.

    With --alarm-budget the threshold is the one within that burden losing least
    sensitivity, measured on validation through the gateway's alarm machine.

    Example: vigil hub train --arch gru --epochs 8 --bundle models/candidate
    """
    _quiet_tensorflow()
    from cloud_hub.training.dataset import DatasetError
    from cloud_hub.training.train import TrainConfig, compare

    signing_key = key or default_signing_key()
    if bundle is not None and not signing_key.exists():
        raise fail(f"signing key {signing_key} not found: run `vigil hub keys init` first")
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
            alarm_budget=alarm_budget,
        )
        comp = compare(cfg, echo=typer.echo)
    except (ValueError, DatasetError) as e:
        raise fail(e) from None
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
            raise fail("no network was trained: nothing to bundle")
        from cloud_hub.training.bundle import bundle_champion

        try:
            out = bundle_champion(comp, bundle, signing_key, echo=typer.echo)
        except Exception as e:  # conversion runs apart; report, never a traceback wall
            raise fail(f"bundle not written: {e}") from None
        if alarm_budget is not None:
            from cloud_hub.burden import BudgetError
            from cloud_hub.training.burden import bundle_at_budget

            try:
                bundle_at_budget(comp, out, signing_key, alarm_budget, echo=typer.echo)
            except BudgetError as e:
                raise fail(
                    f"--alarm-budget {alarm_budget:g}: {e} (the bundle in {out} keeps the "
                    "utility threshold: do not ship it as a budgeted one)"
                ) from None
            except Exception as e:  # verification of the rewritten bundle; never a traceback
                raise fail(f"bundle at the alarm budget not written: {e}") from None
        typer.echo(f"signed bundle: {out}")
