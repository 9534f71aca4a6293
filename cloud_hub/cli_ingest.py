"""`vigil hub serve | retire | fleet | labels import | export`: the hub's ingest side.

Heavy imports (SQLAlchemy, paho, pandas) happen inside the commands.
`cloud_hub.cli` adds these commands to `vigil hub`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloud_hub.cli_options import (
    AsJson,
    BrokerHost,
    BrokerPort,
    HubDb,
    TlsCa,
    TlsCert,
    TlsKey,
    existing_store,
)
from contracts.cli import fail

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

app = typer.Typer()
labels_app = typer.Typer(no_args_is_help=True, help="Outcome labels for retraining.")
app.add_typer(labels_app, name="labels")


def _engine(db: str | None) -> Engine:
    from cloud_hub.store import StoreError, migrate, open_engine

    engine = open_engine(db)
    try:
        migrate(engine)
    except StoreError as e:
        raise fail(e) from None
    return engine


@app.command("serve")
def serve(
    host: BrokerHost = None,
    port: BrokerPort = None,
    mqtt_protocol: Annotated[
        str | None,
        typer.Option(help="5 (default) or 3.1.1 (a broker without MQTT 5: one worker only)."),
    ] = None,
    db: HubDb = None,
    worker_id: Annotated[
        str | None,
        typer.Option(help="Stable id of this worker: its broker session survives restarts."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Messages per commit (default 200).")
    ] = None,
    batch_ms: Annotated[
        int | None, typer.Option(help="Longest wait to fill a batch (default 50 ms).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus /metrics port (0: off).")
    ] = None,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    log_format: Annotated[str, typer.Option(help="text or json (one object per line).")] = "text",
) -> None:
    """Ingest gateway telemetry from MQTT into the store (one worker; run several).

    An option not given comes from VIGIL_HUB_<SETTING> (e.g. VIGIL_HUB_MQTT_HOST).

    Example: vigil hub serve --host broker.ward.example --worker-id hub-1 --log-format json
    """
    from pydantic import ValidationError

    from cloud_hub.hub_logging import use_json_logs
    from cloud_hub.ingest import serve as run
    from cloud_hub.settings import HubSettings
    from cloud_hub.store import StoreError
    from contracts.errors import describe

    if log_format not in ("text", "json"):
        raise fail(f"--log-format {log_format!r}: expected text or json")
    if log_format == "json":
        use_json_logs(logging.getLevelName(logging.getLogger().level))
    given = {
        "mqtt_host": host,
        "mqtt_port": port,
        "mqtt_protocol": mqtt_protocol,
        "db_url": db,
        "worker_id": worker_id,
        "batch_size": batch_size,
        "batch_ms": batch_ms,
        "metrics_port": metrics_port,
        "tls_ca": tls_ca,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
    }
    try:
        settings = HubSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as e:
        raise fail(f"invalid hub setting:\n{describe(e)}") from None
    try:
        run(settings)
    except StoreError as e:
        raise fail(e) from None


@app.command("retire")
def retire(
    worker_id: Annotated[str, typer.Option(help="The worker that will not come back.")],
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    db: HubDb = None,
) -> None:
    """Store what the broker still queues for a worker, then end its session.

    A stopped worker keeps its broker session, and the broker keeps queueing its
    share of the gateway messages for it; retire a worker you remove for good.

    Example: vigil hub retire --worker-id hub-3
    """
    import socket

    from cloud_hub.ingest import HubWorker
    from cloud_hub.settings import HubSettings

    try:  # a closed port or unknown host: say so now, not after the 30 s wait below
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise fail(
            f"--host {host} --port {port}: cannot reach the broker ({e.strerror or e}): "
            "is it running, and are host and port right?"
        ) from None
    worker = HubWorker(
        HubSettings(mqtt_host=host, mqtt_port=port, db_url=db, worker_id=worker_id)
    ).start()
    if not worker.wait_ready(30):
        worker.stop(drain_seconds=1)
        raise fail(f"could not connect to {host}:{port} as {worker_id}")
    worker.wait_idle(quiet=1.0, timeout=600)
    worker.stop(retire=True)
    typer.echo(f"retired {worker_id}: stored {worker.totals['stored']} queued message(s)")


@app.command("fleet")
def fleet_cmd(db: HubDb = None, as_json: AsJson = False) -> None:
    """The gateways: online/offline, agent and model version, outbox, last seen.

    Example: vigil hub fleet --json
    """
    from cloud_hub.fleet import fleet, render_table

    gateways = fleet(_engine(existing_store(db)))
    if as_json:
        typer.echo(json.dumps([g.as_json() for g in gateways], indent=2))
    else:
        typer.echo(render_table(gateways))


@labels_app.command("import")
def labels_import(
    csv_path: Annotated[Path, typer.Argument(help="CSV with columns stay_id,onset_time.")],
    db: HubDb = None,
) -> None:
    """Import outcomes from the hospital's records (empty onset_time: no sepsis).

    Valid rows are stored even when others are bad; bad rows are listed by row
    number (header = row 1) and the exit code is 1.

    Example: vigil hub labels import outcomes-pseudonymous.csv
    """
    from cloud_hub.labels import LabelFileError, import_outcomes

    try:
        report = import_outcomes(_engine(db), csv_path)
    except LabelFileError as e:
        raise fail(e) from None
    for line in report.error_lines():
        typer.echo(f"{csv_path}: {line}", err=True)
    typer.echo(f"imported {report.imported} outcome(s); {len(report.errors)} bad row(s)")
    if report.errors:
        raise typer.Exit(1)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    db: HubDb = None,
    only_labelled: Annotated[
        bool, typer.Option(help="Leave out rows whose label is unknown.")
    ] = False,
) -> None:
    """Write fleet data as the canonical hourly table (labels from outcomes).

    Example: vigil hub export --out fleet.parquet --only-labelled
    """
    from cloud_hub.export import export_parquet

    if out.suffix != ".parquet":
        raise fail(f"--out {out}: expected a .parquet file")
    report = export_parquet(_engine(existing_store(db)), out, only_labelled=only_labelled)
    typer.echo(f"{out}: {report}")
