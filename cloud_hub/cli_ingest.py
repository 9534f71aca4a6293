"""`vigil hub serve | fleet | labels import | export`: the hub's ingest side.

Heavy imports (SQLAlchemy, paho, pandas) happen inside the commands.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

DB_OPTION = typer.Option(
    None,
    "--db",
    envvar="VIGIL_HUB_DB_URL",
    help="Store URL (default sqlite:///<work_dir>/hub.db; "
    "PostgreSQL: postgresql+psycopg://postgres@127.0.0.1:5432/<db>).",
)


def _fail(e: Exception) -> typer.Exit:
    typer.echo(f"error: {e}", err=True)
    return typer.Exit(2)


def _engine(db: str | None):
    from cloud_hub.store import StoreError, migrate, open_engine

    engine = open_engine(db)
    try:
        migrate(engine)
    except StoreError as e:
        raise _fail(e) from None
    return engine


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str = typer.Option(None, help="MQTT broker host (default 127.0.0.1)."),
        port: int = typer.Option(None, help="MQTT broker port (default 1883)."),
        mqtt_protocol: str = typer.Option(
            None, help="5 (default) or 3.1.1 (a broker without MQTT 5: one worker only)."
        ),
        db: str | None = DB_OPTION,
        worker_id: str = typer.Option(
            None, help="Stable id of this worker: its broker session survives restarts."
        ),
        batch_size: int = typer.Option(None, help="Messages per commit (default 200)."),
        batch_ms: int = typer.Option(None, help="Longest wait to fill a batch (default 50 ms)."),
        metrics_port: int = typer.Option(None, help="Prometheus /metrics port (0: off)."),
        tls_ca: Path | None = typer.Option(None, help="CA certificate of the broker (TLS)."),
        tls_cert: Path | None = typer.Option(None, help="Hub client certificate."),
        tls_key: Path | None = typer.Option(None, help="Hub client key."),
        log_format: str = typer.Option("text", help="text or json (one object per line)."),
    ) -> None:
        """Ingest gateway telemetry from MQTT into the store (one worker; run several)."""
        from pydantic import ValidationError

        from cloud_hub.hub_logging import use_json_logs
        from cloud_hub.ingest import HubSettings
        from cloud_hub.ingest import serve as run
        from cloud_hub.store import StoreError

        if log_format not in ("text", "json"):
            raise _fail(ValueError(f"--log-format {log_format!r}: expected text or json"))
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
            raise _fail(ValueError(f"invalid hub setting: {e}")) from None
        try:
            run(settings)
        except StoreError as e:
            raise _fail(e) from None

    @app.command("retire")
    def retire(
        worker_id: str = typer.Option(..., help="The worker that will not come back."),
        host: str = typer.Option("127.0.0.1", help="MQTT broker host."),
        port: int = typer.Option(1883, help="MQTT broker port."),
        db: str | None = DB_OPTION,
    ) -> None:
        """Store what the broker still queues for a worker, then end its session.

        A stopped worker keeps its broker session, and the broker keeps queueing its
        share of the gateway messages for it; retire a worker you remove for good.
        """
        from cloud_hub.ingest import HubSettings, HubWorker

        worker = HubWorker(
            HubSettings(mqtt_host=host, mqtt_port=port, db_url=db, worker_id=worker_id)
        ).start()
        if not worker.wait_ready(30):
            worker.stop(drain_seconds=1)
            raise _fail(RuntimeError(f"could not connect to {host}:{port} as {worker_id}"))
        worker.wait_idle(quiet=1.0, timeout=600)
        worker.stop(retire=True)
        typer.echo(f"retired {worker_id}: stored {worker.totals['stored']} queued message(s)")

    @app.command("fleet")
    def fleet_cmd(
        db: str | None = DB_OPTION,
        as_json: bool = typer.Option(False, "--json", help="JSON instead of a table."),
    ) -> None:
        """The gateways: online/offline, agent and model version, outbox, last seen."""
        from cloud_hub.fleet import fleet, render_table

        gateways = fleet(_engine(db))
        if as_json:
            typer.echo(json.dumps([g.as_json() for g in gateways], indent=2))
        else:
            typer.echo(render_table(gateways))

    labels_app = typer.Typer(no_args_is_help=True, help="Outcome labels for retraining.")
    app.add_typer(labels_app, name="labels")

    @labels_app.command("import")
    def labels_import(
        csv_path: Path = typer.Argument(..., help="CSV with columns stay_id,onset_time."),
        db: str | None = DB_OPTION,
    ) -> None:
        """Import outcomes from the hospital's records (empty onset_time: no sepsis).

        Valid rows are stored even when others are bad; bad rows are listed by row
        number (header = row 1) and the exit code is 1.
        """
        from cloud_hub.labels import LabelFileError, import_outcomes

        try:
            report = import_outcomes(_engine(db), csv_path)
        except LabelFileError as e:
            raise _fail(e) from None
        for line in report.error_lines():
            typer.echo(f"{csv_path}: {line}", err=True)
        typer.echo(f"imported {report.imported} outcome(s); {len(report.errors)} bad row(s)")
        if report.errors:
            raise typer.Exit(1)

    @app.command("export")
    def export_cmd(
        out: Path = typer.Option(..., "--out", help="Parquet file to write."),
        db: str | None = DB_OPTION,
        only_labelled: bool = typer.Option(False, help="Leave out rows whose label is unknown."),
    ) -> None:
        """Write fleet data as the canonical hourly table (labels from outcomes)."""
        from cloud_hub.export import export_parquet

        if out.suffix != ".parquet":
            raise _fail(ValueError(f"--out {out}: expected a .parquet file"))
        report = export_parquet(_engine(db), out, only_labelled=only_labelled)
        typer.echo(f"{out}: {report}")
