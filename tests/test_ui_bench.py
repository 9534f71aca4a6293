"""The terminal keeps up with 64 beds at 1 Hz: what it must do, counted, not timed.

A real gateway (verified LiteRT bundle, SQLite store and outbox, MQTT to a real broker)
is fed one reading per bed per second by benches/bench_ui.py's feeder while the real
Textual app runs headless at 160x48 over it, switching screens. Asserted by counts and
sequence, not by wall-clock ratios (speed is measured and printed by
`python -m benches.bench_ui`, BENCHMARKS.md "Terminal UI"):

- no dropped update: every reading the feeder gave reached the state (per bed), every
  closed step is in the bed's risk history;
- every bed's latest value is shown: the view the screens hold after the run carries,
  for each of the 64 beds, the last value fed;
- no lag in the data path: each view the UI fetched contains every reading processed
  before the fetch (the view's reading count per bed >= the feeder's count taken just
  before), and the feeder ran every tick it was due.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path

import pytest

from edge_agent.ui.app import VigilApp
from edge_agent.ui.gateway_port import GatewayPort, ward_view
from edge_agent.ui.screens.base import WardViewScreen


class CountingPort(GatewayPort):
    """The real port; each fetch notes what the feeder had processed before it."""

    def __init__(self, gateway: object, fed: list[int]) -> None:
        super().__init__(gateway)
        self.fed = fed
        self.fetches: list[tuple[list[int], dict[str, int]]] = []

    def ward_view(self):  # noqa: ANN201 - the port's signature
        before = list(self.fed)
        snap = self.state.snapshot()
        self.fetches.append((before, {b.bed: b.readings for b in snap.beds}))
        return ward_view(snap)


@pytest.mark.slow
def test_ui_shows_every_bed_latest_value_at_64_beds_1hz_with_nothing_dropped(broker):
    from benches import bench_ui as bench

    n, seconds = 64, 14.0
    with tempfile.TemporaryDirectory() as tmp:
        gw = bench.make_gateway(n, broker.port, Path(tmp))
        ward = bench.Ward(n)
        fed = [0] * n
        last_hr: dict[str, float | None] = {}
        closed_per_bed = dict.fromkeys(ward.beds, 0)
        real = gw.process_reading

        def counting(bed: str, r):  # noqa: ANN001, ANN202
            out = real(bed, r)
            i = ward.beds.index(bed)
            fed[i] += 1
            last_hr[bed] = r.values.get("HR")
            closed_per_bed[bed] += len(out)
            return out

        gw.process_reading = counting
        port = CountingPort(gw, fed)
        phase = bench.Phase("with UI")
        stop = threading.Event()
        feeder = threading.Thread(target=bench.feed, args=(gw, ward, phase, seconds, stop))
        app = VigilApp(port, operator="test nurse", blink=True)
        shown = {}

        async def drive() -> None:
            async with app.run_test(size=(160, 48)) as pilot:
                await pilot.pause()
                feeder.start()
                keys = ["enter", "escape", "e", "w", "down", "enter", "w"]
                k = 0
                while feeder.is_alive():
                    await asyncio.sleep(1.0)
                    await pilot.press(keys[k % len(keys)])
                    k += 1
                # One fetch after the last reading: the screens must show it.
                await pilot.press("w")
                before = app.refreshes
                app.poll()
                await app.workers.wait_for_complete()
                await pilot.pause()
                # At least this fetch (the app's 1 s timer may add one on a busy machine).
                assert app.refreshes >= before + 1
                screens = [s for s in app.screen_stack if isinstance(s, WardViewScreen)]
                assert screens
                for s in screens:
                    assert s.ward is app.ward
                shown.update({b.bed: b for b in app.ward.beds})

        try:
            asyncio.run(drive())
        finally:
            stop.set()
            feeder.join(10)
            snap = gw.state.snapshot()
            gw.stop(flush_timeout=5)

    ticks = phase.ticks
    assert ticks >= int(seconds) - 1, phase.summary()  # every due tick ran
    # No dropped update: all 64 readings of every tick, in the state, per bed.
    assert fed == [ticks] * n, (ticks, fed)
    assert {b.bed: b.readings for b in snap.beds} == dict.fromkeys(ward.beds, ticks)
    assert phase.steps_closed == sum(closed_per_bed.values()) > 0
    for b in snap.beds:
        assert len(b.risk_history) == min(closed_per_bed[b.bed], 48), b.bed
    # Every bed's latest value is shown.
    assert sorted(shown) == sorted(ward.beds)
    for bed in ward.beds:
        assert shown[bed].vitals["HR"].value == last_hr[bed], bed
    # No lag: each fetched view holds every reading processed before the fetch, and the
    # terminal fetched throughout the run (about once a second, never queued up).
    assert len(port.fetches) >= ticks // 2, len(port.fetches)
    for before, seen in port.fetches:
        for i, bed in enumerate(ward.beds):
            assert seen[bed] >= before[i], (bed, before[i], seen[bed])
