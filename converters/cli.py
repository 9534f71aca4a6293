"""`vigil convert`: each concern registers its commands from its own module.

Modules import heavy libraries (pandas, TensorFlow) inside commands,
so `vigil --help` stays fast.
"""

from __future__ import annotations

import typer

from converters import cli_bundle, cli_import

app = typer.Typer(no_args_is_help=True)

cli_import.register(app)  # physionet, mimic (datasets → canonical table)
cli_bundle.register(app)  # tflite, verify
