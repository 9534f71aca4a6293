"""`vigil hub`: the hub's command group, composed from one module per concern.

Each `cli_*` module holds its commands as module-level functions on its own Typer
app; this group merges them. Shared options are in `cloud_hub/cli_options.py`.
Modules import heavy libraries (TensorFlow, MLflow, SQLAlchemy) inside commands,
so `vigil --help` stays fast.
"""

from __future__ import annotations

import typer

from cloud_hub import cli_calibrate, cli_ingest, cli_rollout, cli_security, cli_train

app = typer.Typer(no_args_is_help=True)

app.add_typer(cli_train.app)  # train, keys init
app.add_typer(cli_ingest.app)  # serve, retire, fleet, labels import, export
app.add_typer(cli_rollout.app)  # retrain, rollout, rollback, assign, targets, releases
app.add_typer(cli_security.app)  # ca ..., enroll, revoke
app.add_typer(cli_calibrate.app)  # calibrate
