"""Where runs are tracked: MLflow tracking URI, experiment and artifact location.

Default: a SQLite store at `<work_dir>/mlflow/mlflow.db` with file artifacts in
`<work_dir>/mlflow/artifacts`. Any other URI comes from the caller or from
`MLFLOW_TRACKING_URI` (an MLflow server, PostgreSQL, Azure ML). For a SQLite store the
artifact location is set explicitly, next to the database: MLflow 3.17 would
otherwise write to `./mlruns` wherever the command happens to run.
"""

from __future__ import annotations

import os
from pathlib import Path

from contracts.paths import work_dir

DEFAULT_EXPERIMENT = "vigil-sepsis"
DEFAULT_REGISTERED_MODEL = "vigil-sepsis"
CHAMPION_ALIAS = "champion"


def default_tracking_uri() -> str:
    return f"sqlite:///{work_dir() / 'mlflow' / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The URI given, else $MLFLOW_TRACKING_URI, else the local SQLite default."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI, else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def artifact_location(uri: str) -> str | None:
    """Explicit artifact root for local stores; None lets a server decide."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / "artifacts").resolve().as_uri()


def setup(uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT) -> tuple[str, str]:
    """Point MLflow at the store and make sure the experiment exists; (uri, experiment id)."""
    import mlflow

    uri = resolve_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        exp_id = mlflow.create_experiment(experiment, artifact_location=artifact_location(uri))
    mlflow.set_experiment(experiment_id=exp_id)
    return uri, exp_id
