"""Screenshots of the nurse terminal from a real run, for the README (docs/ui-run-*.svg).

Starts a real gateway (simulated monitors in-process, as `vigil edge run` does with
`type = "sim"` beds), waits until a bed alarms, then drives the real app headless and
saves SVG and text screenshots of the ward and of the alarming bed.

    python scripts/ui_screenshots.py -c gw.toml --size 100x30 --out docs
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.config import load_config  # noqa: E402
from edge_agent.gateway import Gateway  # noqa: E402
from edge_agent.ui.app import VigilApp  # noqa: E402
from edge_agent.ui.gateway_port import GatewayPort  # noqa: E402
from edge_agent.ui.screens import BedsideScreen  # noqa: E402
from vigil_cli import sim_line  # noqa: E402


async def shoot(app: VigilApp, size: tuple[int, int], out: Path, tag: str) -> None:
    async with app.run_test(size=size) as pilot:
        app.poll()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.save_screenshot(f"ui-run-ward-{tag}.svg", path=str(out))
        await pilot.press("enter")  # the cursor is on the newest alarm
        while not isinstance(app.screen, BedsideScreen):
            await pilot.pause(0.05)
        app.poll()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.save_screenshot(f"ui-run-bedside-{tag}.svg", path=str(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("--size", default="100x30")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    cols, rows = (int(x) for x in a.size.split("x"))
    sim_line.install()
    gw = Gateway(load_config(a.config))
    gw.start()
    try:
        deadline = time.monotonic() + a.timeout
        while not any(b.alarm_level != "none" for b in gw.state.snapshot().beds):
            if time.monotonic() > deadline:
                raise SystemExit("no bed alarmed in time")
            time.sleep(0.5)
        time.sleep(3)
        a.out.mkdir(parents=True, exist_ok=True)
        app = VigilApp(GatewayPort(gw), operator="Sam Rivera", blink=False)
        asyncio.run(shoot(app, (cols, rows), a.out, a.size))
    finally:
        gw.stop(flush_timeout=2)
    print(f"saved {a.out}/ui-run-ward-{a.size}.svg and ui-run-bedside-{a.size}.svg")


if __name__ == "__main__":
    main()
