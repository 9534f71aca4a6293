"""`vigil`: the one command-line tool. Each part owns its group in its own `cli.py`.

Groups are imported here; a part whose extra is not installed (e.g. the hub's on a
gateway) is replaced by a group that says which extra to install, so the edge
install works without TensorFlow. Part CLIs import heavy libraries inside commands.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

from contracts.cli import fail

app = typer.Typer(
    name="vigil",
    help="Vigil: early warning of ICU deterioration at the bedside.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

GROUPS = (
    ("sim", "firmware_sim.cli", "Bedside monitor simulator (HL7 v2 over MLLP on a pty/TCP).", ""),
    ("edge", "edge_agent.cli", "Bedside gateway: read, score, alarm, publish.", "edge"),
    ("hub", "cloud_hub.cli", "Hub: ingest, store, train, roll out.", "hub"),
    ("convert", "converters.cli", "Dataset importers and model conversion/bundles.", "hub"),
)


def _missing_group(name: str, extra: str, err: Exception) -> typer.Typer:
    sub = typer.Typer(help=f"(unavailable: {err})")

    @sub.callback(invoke_without_command=True)
    def _unavailable() -> None:
        raise fail(
            f"vigil {name} needs the '{extra}' extra: pip install 'vigil[{extra}]' ({err})",
            prefix="",
        )

    return sub


for _name, _module, _help, _extra in GROUPS:
    try:
        _sub = importlib.import_module(_module).app
    except ImportError as _e:  # a part whose extra is not installed
        _sub = _missing_group(_name, _extra or "edge", _e)
    else:
        if _name == "convert":  # bundle building (`tflite`, `verify`) lives on the hub side
            _sub.add_typer(importlib.import_module("cloud_hub.conversion.cli").app)
    if _name == "sim":  # `vigil sim` itself runs monitors: its help is its callback's docstring
        app.add_typer(_sub, name=_name, short_help=_help)
    else:
        app.add_typer(_sub, name=_name, help=_help)

try:  # simulated beds (`source = { type = "sim" }`) for `vigil edge run` and the demo
    from vigil_cli import sim_line as _sim_line

    _sim_line.install()
except ImportError:  # an install without the gateway extra
    pass

try:
    from vigil_cli.demo import demo as _demo

    app.command("demo")(_demo)
except ImportError:  # pragma: no cover - the demo needs every part installed
    pass


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("VIGIL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    app()


if __name__ == "__main__":
    main()
