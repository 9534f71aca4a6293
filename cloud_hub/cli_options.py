"""The options several `vigil hub` / `vigil convert` commands share, each declared once.

Each is an `Annotated` alias carrying the flag, its help and its environment
variable; the default stays in the command's signature (``db: HubDb = None``).
Options of one command stay beside it. `contracts.cli` holds what other parts share
too (`fail`, `--data`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contracts.paths import work_dir


def default_key_dir() -> Path:
    """Where `vigil hub keys init` puts keys: <work_dir>/keys."""
    return work_dir() / "keys"


def default_signing_key() -> Path:
    """The signing key `train --bundle` and `convert tflite` use unless --key is given."""
    return default_key_dir() / "signing.key"


# --- the hub store -------------------------------------------------------------------
HubDb = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="VIGIL_HUB_DB_URL",
        help="Hub store URL (default sqlite:///<work_dir>/hub.db; "
        "PostgreSQL: postgresql+psycopg://postgres@127.0.0.1:5432/<db>).",
    ),
]
Ledger = Annotated[
    Path | None,
    typer.Option(
        "--ledger",
        help="A release ledger folder instead of the hub store's (the default: --db).",
        file_okay=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def existing_store(db: str | None) -> str:
    """The store URL for a command that only reads it: a SQLite file must exist.

    `open_engine` creates a missing SQLite file (the ingest side's first start); a
    read-only command (`fleet`, `export`, `releases`, `targets`) given a mistyped
    path would then report an empty fleet. Raises `fail` naming --db instead.
    """
    from contracts.cli import fail

    url = db or _default_url()
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:" and not Path(path).is_file():
            what = "is a folder" if Path(path).is_dir() else "does not exist"
            raise fail(
                f"--db {url}: no hub store there ({path} {what}): check the path "
                "(`vigil hub serve --db URL` creates a store)"
            )
    return url


def _default_url() -> str:
    from cloud_hub.store import default_url

    return default_url()


# --- the MQTT broker (defaults shown in the help: `serve` passes None to its settings) -
BrokerHost = Annotated[
    str | None,
    typer.Option("--host", help="MQTT broker host (default 127.0.0.1).", show_default=False),
]
BrokerPort = Annotated[
    int | None,
    typer.Option("--port", help="MQTT broker port (default 1883).", show_default=False),
]
TlsCa = Annotated[
    Path | None,
    typer.Option(
        "--tls-ca", help="CA certificate of the broker (TLS).", exists=True, dir_okay=False
    ),
]
TlsCert = Annotated[
    Path | None,
    typer.Option("--tls-cert", help="Hub client certificate.", exists=True, dir_okay=False),
]
TlsKey = Annotated[
    Path | None, typer.Option("--tls-key", help="Hub client key.", exists=True, dir_okay=False)
]
Channel = Annotated[str, typer.Option("--channel", help="canary or stable.")]

# --- signing keys --------------------------------------------------------------------
SigningKey = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="VIGIL_SIGNING_KEY",
        help="Signing key: a PEM path, file:PATH or azurekv://VAULT/SECRET "
        "(default <work_dir>/keys/signing.key).",
    ),
]
"""A signing-key reference for the release commands (`retrain`, `rollout`, `rollback`)."""
SigningKeyFile = Annotated[
    Path | None,
    typer.Option("--key", help="Signing key file (default <work_dir>/keys/signing.key)."),
]
"""A signing-key file for the bundle builders (`train --bundle`, `convert tflite`)."""

# --- MLflow and training -------------------------------------------------------------
TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else SQLite in "
        "<work_dir>/mlflow).",
    ),
]
ModelName = Annotated[str, typer.Option("--model-name", help="Registered model name.")]
Window = Annotated[int, typer.Option("--window", help="Window length in hours (steps).")]
Units = Annotated[int, typer.Option("--units", help="Recurrent units.")]
Epochs = Annotated[int, typer.Option("--epochs", help="Maximum epochs (best by val AUROC kept).")]
Patience = Annotated[
    int,
    typer.Option("--patience", help="Stop after N epochs without a better validation AUROC."),
]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Training batch size.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for the split and the weights.")]
LimitStays = Annotated[
    int | None, typer.Option("--limit-stays", help="Use a seeded random subset of N stays.")
]
