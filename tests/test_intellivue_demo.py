"""`vigil demo --driver intellivue --headless`: the demo's beds over simulated Philips
IntelliVues on real ptys, polled by the gateway's Data Export driver; a real broker, the
hub as a child process, vitals and scored risk in the hub's store, a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import needs_mosquitto
from tests.test_demo import _query, _wait_count, _wait_scored


@pytest.mark.timeout(240)
@needs_mosquitto
def test_demo_runs_its_beds_over_simulated_intellivues(tmp_path: Path) -> None:
    work = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil_cli.main", "demo", "--headless", "--driver",
         "intellivue", "--beds", "2", "--stays", "generated", "--speed", "3600",
         "--every", "1", "--workdir", str(work), "--broker", "mosquitto"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "VIGIL_LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    db = work / "hub.db"
    try:
        sql = "SELECT count(*) FROM vitals_summaries WHERE gw='demo-ward' AND readings > 0"
        assert _wait_count(db, proc, sql, 6, 120) >= 6
        assert _wait_scored(db, proc, 2, 120) >= 2
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-3000:]
    assert "simulated Philips IntelliVues on ptys" in out, out[:2000]
    assert "stopped (hub exit 0)" in out, out[-2000:]
    beds = {b for (b,) in _query(db, "SELECT DISTINCT bed FROM vitals_summaries")}
    assert beds == {"bed-1", "bed-2"}
    # the monitors' numerics arrived through the driver: heart rates in the hub's steps
    hr = _query(db, "SELECT count(*) FROM vitals_summaries WHERE readings > 0")[0][0]
    assert hr >= 6


def test_demo_unknown_driver_is_a_one_line_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vigil_cli.main import app

    res = CliRunner().invoke(app, ["demo", "--driver", "hl8", "--workdir", str(tmp_path)])
    assert res.exit_code != 0 and "--driver 'hl8': expected pcd01 or intellivue" in res.output
