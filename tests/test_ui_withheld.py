"""A vital the monitor withheld (IntelliVue validity: invalid, demo data, ...) at the
bedside: the tile shows why, never a number, and never the last valid value.

On the real gateway core (`Gateway.process_reading`, the path every driver's readings
take) and the real app over `GatewayPort`, driven by the Pilot.
"""

from __future__ import annotations

from datetime import timedelta

from textual.widgets import Digits, Static

from edge_agent.decoder import Reading
from edge_agent.gateway import Gateway
from edge_agent.ui.app import VigilApp
from edge_agent.ui.gateway_port import GatewayPort
from edge_agent.ui.screens import BedsideScreen
from edge_agent.ui.widgets.vital_tile import VitalTile
from tests.support.edge import T0, edge_settings
from tests.support.ui import settle, textual_test, until


def spo2(app: VigilApp) -> tuple[str, str]:
    """The SpO2 tile's big digits and its corner text (age, or why withheld)."""
    tile = next(t for t in app.screen.query(VitalTile) if t.kind == "spo2")
    return tile.query_one(Digits).value, str(tile.query_one(".tile--age", Static).render())


@textual_test
async def test_a_withheld_spo2_shows_why_and_no_number(tmp_path) -> None:
    gw = Gateway(edge_settings(tmp_path, port=1, gateway_id="gw-withheld", beds=["bed-1"]))
    gw.start(sources=False)
    try:

        def reading(seq: int, values: dict, quality: dict) -> Reading:
            return Reading(
                "bed-1", "pn-1", "mp70", seq, T0 + timedelta(minutes=seq), values, {},
                icu_admit=T0, quality=quality,
            )  # fmt: skip

        gw.process_reading("bed-1", reading(1, {"HR": 80.0, "O2Sat": 97.0}, {}))
        app = VigilApp(GatewayPort(gw), operator="Ann", blink=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, BedsideScreen), poll=True)
            await until(pilot, lambda: spo2(app)[0] == "97", poll=True)
            gw.process_reading("bed-1", reading(2, {"HR": 81.0}, {"O2Sat": "demo_data"}))
            await until(pilot, lambda: spo2(app)[1] == "DEMO DATA", poll=True)
            assert spo2(app)[0] == "---"  # no number: not the last valid 97
            gw.process_reading("bed-1", reading(3, {"HR": 82.0, "O2Sat": 95.0}, {}))
            await until(pilot, lambda: spo2(app)[0] == "95", poll=True)
            assert "DEMO DATA" not in app.screen_text()
    finally:
        gw.stop(flush_timeout=0.5)
