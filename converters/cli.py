"""`vigil convert`: the data-set importers (raw ICU data -> the canonical vitals table).

`vigil_cli.main` adds the bundle commands (`tflite`, `verify`) from
`cloud_hub.conversion.cli` to this group, since building a bundle is the hub's work.
Modules import heavy libraries (pandas) inside commands, so `vigil --help` stays fast.
"""

from __future__ import annotations

import typer

from converters import cli_import

app = typer.Typer(no_args_is_help=True)

app.add_typer(cli_import.app)  # physionet, mimic (datasets -> canonical table)
