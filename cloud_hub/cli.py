"""`vigil hub`: each concern registers its commands from its own module.

Modules import heavy libraries (TensorFlow, MLflow, SQLAlchemy) inside commands,
so `vigil --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True)

# (module, function) pairs; each `register(app)` adds its commands or sub-groups.
_PARTS = (
    "cloud_hub.cli_train",  # train, keys
    "cloud_hub.cli_ingest",  # serve, fleet, labels, export
    "cloud_hub.cli_rollout",  # retrain, rollout, rollback, assign
    "cloud_hub.cli_security",  # enroll, revoke
)

for _m in _PARTS:
    try:
        _mod = importlib.import_module(_m)
    except ModuleNotFoundError as _e:
        if _e.name == _m:  # that part is not written yet
            continue
        raise
    _mod.register(app)
