"""The terminal keeps up with 64 beds at 1 Hz and does not slow the data path.

Runs benches/bench_ui.py's measurement (real gateway, bundle, store, broker; the real
app headless at 160x48 switching screens) for a few seconds per phase and bounds the
data path's timing with the UI against the same run without it.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

from contracts.paths import PROJECT_ROOT
from tests.edge_support import Mosquitto


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_ui", PROJECT_ROOT / "benches/bench_ui.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_ui"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_ui_keeps_up_with_64_beds_at_1hz_without_lag_in_the_data_path(tmp_path):
    bench = load_bench()
    broker = Mosquitto(tmp_path).start()
    try:
        without, with_ui = bench.measure(64, 8.0, broker.port)
    finally:
        broker.stop()
    a, b = without.summary(), with_ui.summary()
    print(a, b)
    # Every second's 64 readings were processed within that second, in both phases.
    assert a["ticks"] >= 8 and b["ticks"] >= 8
    assert a["late_ticks"] == 0 and b["late_ticks"] == 0
    assert b["tick_max_ms"] < 500, b  # half the 1 s budget, even with the UI drawing
    # Scored steps are no slower with the UI than 3x without it plus 10 ms of slack
    # (the machine is shared; the measured ratio is in BENCHMARKS.md).
    assert b["steps_closed"] >= 40
    assert b["step_median_ms"] <= 3 * a["step_median_ms"] + 10, (a, b)
    # The UI itself kept up: a fresh view about every second, never 3 s without one.
    assert b["ui_refreshes"] >= 6
    assert b["ui_max_gap_s"] < 3.0, b
