"""Command-line group of this part (registered by vigil_cli.main)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)
