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

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ERROR = "error: "
DEBUG_ENV = "VIGIL_DEBUG"
"""Set to 1 and an unexpected error shows its traceback instead of one line."""


def fail(message: object, code: int = 2, *, prefix: str = ERROR) -> typer.Exit:
    """Print ``prefix + message`` on stderr; return the `typer.Exit` for the caller to raise.

    The exit code is 2 (bad input or setup) unless given. A command raises it so the
    control flow stays visible at the call site::

        raise fail(e) from None             # "error: <e>", exit 2
        raise fail("source missing", 1)     # exit 1
        raise fail(e, prefix="vigil sim: ")
    """
    typer.echo(f"{prefix}{one_line(message)}", err=True)
    return typer.Exit(code)


def debugging() -> bool:
    """True when $VIGIL_DEBUG asks for tracebacks (1, true, yes)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


_NOISE = ("(Background on this error at", "[SQL:", "[parameters:")
_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")


def one_line(message: object) -> str:
    """`message` as one line: its lines joined by "; ", SQLAlchemy's SQL, parameters and
    links left out (they may carry row values), a URL's password masked."""
    lines = [ln.strip() for ln in str(message).splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith(_NOISE)]
    return _PASSWORD.sub(r"\1***@", "; ".join(kept).replace(":; ", ": "))


_OS_WHAT = {
    "FileNotFoundError": ("does not exist", "check the path"),
    "IsADirectoryError": ("is a folder", "give a file"),
    "NotADirectoryError": ("is not a folder (a file is in the way)", "give a folder"),
    "PermissionError": ("permission denied", "check its owner and mode"),
    "FileExistsError": ("already exists", "give another path or remove it"),
}
_DB_URLS = "e.g. sqlite:///PATH or postgresql+psycopg://USER@HOST:5432/DB"


def _mentions(text: str, value: str) -> bool:
    return bool(value) and (text == value or text.startswith(value.rstrip("/") + "/"))


def explain(e: BaseException, given: Mapping[str, tuple[str, object]] | None = None) -> str | None:
    """One line for an exception bad input raises, or None for one that is a bug.

    `given` maps each parameter of the command to (its label as the user wrote it, e.g.
    "--tls-ca" or "BUNDLE", its value): the line names the parameter whose value the
    error is about (a file's path, the store URL) and says what to do. Checked by class
    name and module so this module needs none of the libraries (SQLAlchemy, pydantic,
    MLflow) whose errors it words.
    """
    given = dict(given or {})
    kind = type(e).__name__
    module = type(e).__module__ or ""

    def label_of(*names: str, text: str = "") -> str:
        for name in names:  # the parameter the error is known to be about
            if name in given and given[name][1] not in (None, "", [], ()):
                label, value = given[name]
                return f"{label} {value}: "
        if text:  # the parameter whose value the error names (longest first)
            hits = [
                (len(str(v)), f"{label} {v}: ")
                for label, value in given.values()
                for v in (value if isinstance(value, list | tuple) else [value])
                if v is not None and _mentions(text, str(v))
            ]
            if hits:
                return max(hits)[1]
        return ""

    if isinstance(e, OSError) and not module.startswith(("sqlalchemy", "mlflow")):
        path = str(e.filename) if e.filename is not None else ""
        what, todo = _OS_WHAT.get(kind, (e.strerror or str(e), ""))
        if e.errno == 28:  # ENOSPC
            what, todo = "no space left on the device", "free some space"
        where = label_of(text=path)
        shown = f"{path} " if path and not where.endswith(f" {path}: ") else ""
        return f"{where}{shown}{what}" + (f": {todo}" if todo else "")
    if isinstance(e, UnicodeDecodeError):
        return f"{label_of()}not UTF-8 text ({e.reason} at byte {e.start}): is it a binary file?"
    if kind == "JSONDecodeError":
        return f"{label_of()}not valid JSON: {e}"
    if kind == "RecursionError":
        return f"{label_of()}input nested too deeply to read"
    if module.startswith("sqlalchemy"):
        where = label_of("db")
        if kind in ("ArgumentError", "NoSuchModuleError"):
            return f"{where}not a database URL the hub can open ({one_line(e)}); {_DB_URLS}"
        orig = getattr(e, "orig", None)
        return f"{where}the store refused: {one_line(orig if orig is not None else e)}"
    if kind == "StoreError":  # its message names the store
        return one_line(e)
    if kind == "ValidationError" and module.startswith("pydantic"):
        errors = e.errors()  # type: ignore[attr-defined]
        rows = [".".join(str(p) for p in err["loc"]) + f": {err['msg']}" for err in errors[:5]]
        return f"{label_of()}invalid: " + "; ".join(rows)
    if kind == "BundleError":
        reason = getattr(e, "reason", "")
        return f"{label_of()}bad bundle: {reason}: {getattr(e, 'detail', e)}"
    if module.startswith("mlflow"):
        return f"{label_of('tracking_uri', 'model_uri')}MLflow: {one_line(e).split('; ')[0]}"
    return None


def unexpected(e: BaseException, command: str = "vigil") -> str:
    """The one line for an exception no command expects (a bug)."""
    return (
        f"unexpected {type(e).__name__} in `{command}`: {one_line(e)[:300]} "
        f"(a bug: run again with {DEBUG_ENV}=1 for the traceback and report it)"
    )


def guarded(callback: Callable[..., object], given: Callable[[], Mapping]) -> Callable:
    """`callback` turning an expected exception (`explain`) into a `fail` line, exit 2."""
    import functools

    @functools.wraps(callback)
    def run(*args: object, **kwargs: object) -> object:
        try:
            return callback(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if debugging():
                raise
            line = explain(e, given())
            if line is None:
                raise
            raise fail(line) from None

    run.__vigil_guarded__ = True  # type: ignore[attr-defined]
    return run


CanonicalTable = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Canonical Parquet table (default <work_dir>/canonical/physionet2019.parquet).",
    ),
]
"""`--data`: the canonical hourly table (simulator replay, training, conversion)."""
