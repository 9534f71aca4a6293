"""`vigil convert`: each concern registers its commands from its own module.

Modules import heavy libraries (pandas, TensorFlow) inside commands,
so `vigil --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(no_args_is_help=True)

# (module, function) pairs; each `register(app)` adds its commands or sub-groups.
_PARTS = (
    "converters.cli_import",  # physionet, mimic (datasets → canonical table)
    "converters.cli_bundle",  # tflite, verify
)

for _m in _PARTS:
    try:
        _mod = importlib.import_module(_m)
    except ModuleNotFoundError as _e:
        if _e.name == _m:  # that part is not written yet
            continue
        raise
    _mod.register(app)
