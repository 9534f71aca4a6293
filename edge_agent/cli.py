"""`vigil edge`: run the bedside gateway, check its configuration."""

from __future__ import annotations

import signal
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Bedside gateway: monitor line -> risk -> MQTT.")


def _load(config: Path):  # noqa: ANN202 - EdgeSettings
    from edge_agent.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None


@app.command("check-config")
def check_config(config: Path = typer.Argument(..., help="gateway TOML file")) -> None:
    """Validate a gateway config (file + VIGIL_EDGE__* env); print what it resolves to."""
    s = _load(config)
    typer.echo(
        f"ok: gateway {s.gateway_id}, {len(s.beds)} bed(s), broker {s.mqtt.host}:{s.mqtt.port}"
    )
    for b in s.beds:
        typer.echo(f"  bed {b.id}: {b.source.type} {b.source.model_dump(exclude={'type'})}")
    typer.echo(f"  store {s.store_path}; bundles {[str(p) for p in s.bundle_dirs]}")


@app.command("run")
def run(
    config: Path = typer.Option(..., "--config", "-c", help="gateway TOML file"),
    headless: bool = typer.Option(False, "--headless", help="no terminal UI, logs only"),
    json_logs: bool | None = typer.Option(
        None, "--json-logs/--text-logs", help="override log_json"
    ),
) -> None:
    """Run every configured bed until interrupted (SIGINT/SIGTERM)."""
    from edge_agent.gateway import Gateway
    from edge_agent.logs import setup_logging

    s = _load(config)
    setup_logging(s.log_level, s.log_json if json_logs is None else json_logs)
    gw = Gateway(s)
    from edge_agent.model_hook import attach_updater

    attach_updater(gw)  # model updates from the hub (bundles in <store folder>/bundles)
    gw.start()

    def _stop(signum, frame) -> None:  # noqa: ANN001
        gw._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    try:
        if headless:
            gw.wait()
        else:
            try:
                from edge_agent.ui.app import run_ui
            except ImportError as e:
                typer.echo(f"terminal UI unavailable ({e}); running headless", err=True)
                gw.wait()
            else:
                run_ui(gw)
    except KeyboardInterrupt:
        pass
    finally:
        gw.stop()
