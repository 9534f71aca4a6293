"""A real run of the bedside entries at 80x24, for the README (docs/ui-bedside-entries-*).

Starts a real gateway on two simulated monitors (one septic), with `[news2]
reassess_minutes` short enough to see the flag, drives the real app headless: opens
the septic bed, records oxygen (nasal cannula 4 L/min) and ACVPU 'C' with the keys a
nurse uses, waits until NEWS2 is scored with them and the oxygen entry is due for
re-assessment, and saves the bedside and the ward as text and SVG.

    python scripts/ui_bedside_capture.py --out docs
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.config import load_config  # noqa: E402
from edge_agent.gateway import Gateway  # noqa: E402
from edge_agent.ui.app import VigilApp  # noqa: E402
from edge_agent.ui.gateway_port import GatewayPort  # noqa: E402
from edge_agent.ui.screens import BedsideScreen, WardScreen  # noqa: E402
from vigil_cli import sim_line  # noqa: E402

CONFIG = """gateway_id = "ward-3"
store_path = "{store}"
[[beds]]
id = "bed-1"
source = {{ type = "sim", scenario = "sepsis", seed = 1, speed = 1800, max_rate = 10 }}
[[beds]]
id = "bed-2"
source = {{ type = "sim", scenario = "stable", seed = 2, speed = 1800, max_rate = 10 }}
[mqtt]
port = 1
[news2]
reassess_minutes = {reassess}
"""


async def refresh(app: VigilApp, pilot) -> None:  # noqa: ANN001
    app.poll()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def wait(app: VigilApp, pilot, ok, what: str, timeout: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}:\n{app.screen_text()}")
        await refresh(app, pilot)
        await pilot.pause(0.2)


async def capture(app: VigilApp, gw: Gateway, out: Path, reassess_s: float) -> None:
    async with app.run_test(size=(80, 24)) as pilot:
        await wait(app, pilot, lambda: app.ward and app.ward.bed("bed-1").news2, "NEWS2")
        while app.screen.query_one("ListView").highlighted_child.bed.bed != "bed-1":
            await pilot.press("down")
        await pilot.press("enter")
        await wait(app, pilot, lambda: isinstance(app.screen, BedsideScreen), "the bedside")
        await pilot.press("o", "down", "enter")
        await pilot.pause(0.2)
        await pilot.press("4", "enter")
        await wait(app, pilot, lambda: app.actions_done == 1, "the oxygen entry")
        await pilot.pause(reassess_s + 1)  # the oxygen entry is now due for re-assessment
        await pilot.press("c", "c")
        await wait(app, pilot, lambda: app.actions_done == 2, "the ACVPU entry")

        def scored() -> bool:
            n2 = gw.state.snapshot().bed("bed-1").news2
            return n2 is not None and not n2.assumed and bool(n2.reassess)

        await wait(app, pilot, scored, "NEWS2 scored with both entries")
        await refresh(app, pilot)
        (out / "ui-bedside-entries-80x24.txt").write_text(app.screen_text())
        app.save_screenshot("ui-bedside-entries-80x24.svg", path=str(out))
        await pilot.press("w")
        await wait(app, pilot, lambda: isinstance(app.screen, WardScreen), "the ward")
        await refresh(app, pilot)
        (out / "ui-ward-news2-80x24.txt").write_text(app.screen_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--reassess-seconds", type=float, default=6.0)
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vigil-capture-"))
    cfg = folder / "gw.toml"
    cfg.write_text(CONFIG.format(store=folder / "gw.sqlite", reassess=a.reassess_seconds / 60))
    sim_line.install()
    gw = Gateway(load_config(cfg))
    gw.start()
    try:
        a.out.mkdir(parents=True, exist_ok=True)
        app = VigilApp(GatewayPort(gw), operator="Sam Rivera", blink=False)
        asyncio.run(capture(app, gw, a.out, a.reassess_seconds))
    finally:
        gw.stop(flush_timeout=0.5)
    print(f"saved {a.out}/ui-bedside-entries-80x24.txt/.svg and ui-ward-news2-80x24.txt")


if __name__ == "__main__":
    main()
