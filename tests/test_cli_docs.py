"""Every `vigil` command documents itself: help text, and an example that parses.

Walks the whole command tree as `vigil` builds it (sqlite-utils' `tests/test_docs.py`
idea): each group and command has help; each command, and each group that runs on its
own (`vigil sim`), shows an ``Example: vigil ...`` line invoking that very command
with options it has; `vigil ... --help` exits 0 everywhere.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

import pytest
import typer
from typer.testing import CliRunner

from vigil_cli.main import app

if TYPE_CHECKING:
    from collections.abc import Iterator

    # The click that typer vendors: what `typer.main.get_command` returns.
    from typer._click import Command

ROOT = typer.main.get_command(app)


def _walk(cmd: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Command]]:
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, (*path, name))


TREE = dict(_walk(ROOT))
COMMANDS = [p for p, c in TREE.items() if not hasattr(c, "commands")]
RUNNABLE_GROUPS = [p for p, c in TREE.items() if p and getattr(c, "invoke_without_command", False)]


def _id(path: tuple[str, ...]) -> str:
    return " ".join(("vigil", *path))


def _examples(path: tuple[str, ...]) -> list[str]:
    help_text = TREE[path].help or ""
    return [
        line.strip().removeprefix("Example:").strip()
        for line in help_text.splitlines()
        if line.strip().startswith("Example:")
    ]


def test_the_tree_holds_every_part() -> None:
    assert {p[0] for p in TREE if p} >= {"sim", "edge", "hub", "convert", "demo"}
    assert len(COMMANDS) >= 30  # not an empty tree because a part failed to import


@pytest.mark.parametrize("path", list(TREE), ids=_id)
def test_every_group_and_command_has_help_text(path: tuple[str, ...]) -> None:
    cmd = TREE[path]
    assert (cmd.help or "").strip(), f"`{_id(path)}` has no help text (a docstring)"
    if path:  # what the parent's listing shows
        assert cmd.get_short_help_str(limit=200).strip(), f"`{_id(path)}` has no short help"


@pytest.mark.parametrize("path", COMMANDS + RUNNABLE_GROUPS, ids=_id)
def test_every_command_shows_an_example_of_itself_that_parses(path: tuple[str, ...]) -> None:
    examples = _examples(path)
    assert examples, f"`{_id(path)}`: no 'Example: {_id(path)} ...' line in its docstring"
    for example in examples:
        argv = shlex.split(example)
        assert argv[: len(path) + 1] == ["vigil", *path], f"{example!r} is not `{_id(path)}`"
        args = argv[len(path) + 1 :]
        # Parsing checks the options exist and take these values; nothing runs.
        TREE[path].make_context(_id(path), args, resilient_parsing=False)


@pytest.mark.parametrize("path", list(TREE), ids=_id)
def test_help_exits_zero(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage: " in res.output
