"""What every part's command line shares: `fail()` and the options two parts declare.

Each part keeps its commands in its own `cli.py` (module-level functions, each with a
docstring ending in an ``Example:`` invocation); `vigil_cli.main` composes the groups.
Options only the hub declares live in `cloud_hub/cli_options.py`. An option is an
`Annotated` alias: the flag, its help and its environment variable are written once,
the default stays in the command's signature::

    def stays(data: CanonicalTable = None) -> None: ...

This module imports typer (a core dependency) and nothing of the other parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ERROR = "error: "


def fail(message: object, code: int = 2, *, prefix: str = ERROR) -> typer.Exit:
    """Print ``prefix + message`` on stderr; return the `typer.Exit` for the caller to raise.

    The exit code is 2 (bad input or setup) unless given. A command raises it so the
    control flow stays visible at the call site::

        raise fail(e) from None             # "error: <e>", exit 2
        raise fail("source missing", 1)     # exit 1
        raise fail(e, prefix="vigil sim: ")
    """
    typer.echo(f"{prefix}{message}", err=True)
    return typer.Exit(code)


CanonicalTable = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Canonical Parquet table (default <work_dir>/canonical/physionet2019.parquet).",
    ),
]
"""`--data`: the canonical hourly table (simulator replay, training, conversion)."""
