"""`vigil`: the one command-line tool. Each part owns its group in its own `cli.py`.

Groups are imported here; a part whose extra is not installed (e.g. the hub's on a
gateway) is replaced by a group that says which extra to install, so the edge
install works without TensorFlow. Part CLIs import heavy libraries inside commands.

No traceback reaches a user: every command runs `guarded` (`contracts.cli`), which
turns what bad input raises (a missing or unreadable file, a folder for a file, a bad
store URL, a malformed bundle or settings) into one `error:` line naming the argument,
exit 2; `main` words click's usage errors as one line too, and any other exception (a
bug) as one line saying to run again with VIGIL_DEBUG=1 for the traceback, exit 1.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from typing import TYPE_CHECKING

import typer

from contracts.cli import debugging, fail, guarded, one_line, unexpected

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

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


def _given() -> Mapping[str, tuple[str, object]]:
    """The running command's parameters: name -> (label as the user wrote it, value)."""
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None:
        return {}
    out: dict[str, tuple[str, object]] = {}
    for p in ctx.command.params:
        if p.name is None or p.name not in ctx.params:
            continue
        source = ctx.get_parameter_source(p.name)
        envvar = p.envvar if isinstance(p.envvar, str) else None
        if source is not None and source.name == "ENVIRONMENT" and envvar:
            label = f"${envvar}"
        elif p.param_type_name == "option":
            label = max(p.opts, key=len)
        else:  # an argument: its metavar as the help shows it
            label = p.metavar or p.name.upper()
        out[p.name] = (label, ctx.params[p.name])
    return out


def _guard(t: typer.Typer) -> None:
    """Wrap every command and group callback of `t` (recursively) in `guarded`."""
    infos = [*t.registered_commands, t.registered_callback, t.info, *t.registered_groups]
    for info in infos:
        cb = getattr(info, "callback", None)
        # a function, not typer's DefaultPlaceholder for "none given"
        if inspect.isfunction(cb) and not getattr(cb, "__vigil_guarded__", False):
            info.callback = guarded(cb, _given)
    for group in t.registered_groups:
        if group.typer_instance is not None:
            _guard(group.typer_instance)


_guard(app)


def run(args: Sequence[str] | None = None) -> int:
    """Run `vigil` with `args`; every error is one line on stderr. Returns the exit code."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="vigil", standalone_mode=False)
    except NoArgsIsHelpError as e:  # `vigil hub`: its help, as before
        typer.echo(e.format_message(), err=True)
        return e.exit_code
    except UsageError as e:  # unknown option, bad value, missing argument
        where = e.ctx.command_path if e.ctx is not None else "vigil"
        msg = one_line(e.format_message()).rstrip(".")
        typer.echo(f"error: {where}: {msg} (see {where} --help)", err=True)
        return e.exit_code
    except ClickException as e:
        typer.echo(f"error: {one_line(e.format_message())}", err=True)
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except Exception as e:
        if debugging():
            raise
        typer.echo(f"error: {unexpected(e, _command_path(command, args))}", err=True)
        return 1
    return rv if isinstance(rv, int) else 0


def _command_path(command: object, args: Sequence[str] | None) -> str:
    """`vigil hub serve` of `args`: the command names only, never a value."""
    words = ["vigil"]
    for a in sys.argv[1:] if args is None else args:
        sub = getattr(command, "commands", {}).get(a)
        if sub is None:
            break
        words.append(a)
        command = sub
    return " ".join(words)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("VIGIL_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    sys.exit(run())


if __name__ == "__main__":
    main()
