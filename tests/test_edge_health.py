"""The gateway's health loop (edge_agent/gateway.py `_health_loop`) over several beds.

Once a second it marks each bed's monitor line ok / stale / down by the age of its last
reading (monotonic clock) and ticks each bed's alarm machines (wall clock). With two
listener beds fed once and then silent, both lines must go stale then down, while the
loop never dies: a wall-clock time leaking into the next bed's age computation made it
raise a TypeError every second with two or more beds (found in review; a60b3f0), which
the supervisor restarted until it gave up, and no line was ever marked down.
"""

from __future__ import annotations

from pathlib import Path

from contracts.mllp import frame
from edge_agent.config import LinkConfig
from edge_agent.gateway import Gateway
from firmware_sim.hl7 import build_oru
from tests.support.broker import Mosquitto
from tests.support.edge import edge_settings, observation
from tests.support.mllp import listen, msa, send
from tests.support.waiting import wait_until


def test_two_silent_beds_go_stale_then_down_and_the_health_loop_never_dies(
    broker: Mosquitto, tmp_path: Path
) -> None:
    beds = [listen(b, 0, bed_label=b) for b in ("bed-1", "bed-2")]
    s = edge_settings(
        tmp_path, port=broker.port, gateway_id="gw-health", beds=beds,
        link=LinkConfig(stale_after_seconds=0.5, down_after_seconds=2.5),
    )  # fmt: skip
    gw = Gateway(s)
    gw.start()
    try:
        assert wait_until(lambda: all(lst.running for lst in gw.listeners), 10)
        port = gw.listeners[0].port
        for i, bed in enumerate(("bed-1", "bed-2"), start=1):
            (ack,) = send(port, frame(build_oru(observation(i, bed=bed))))
            assert msa(ack) == "AA"
        snap = gw.state.snapshot
        assert wait_until(
            lambda: {b.bed: b.link for b in snap().beds} == {"bed-1": "stale", "bed-2": "stale"},
            10,
        ), {b.bed: b.link for b in snap().beds}
        assert wait_until(
            lambda: {b.bed: b.link for b in snap().beds} == {"bed-1": "down", "bed-2": "down"},
            10,
        ), {b.bed: b.link for b in snap().beds}
        assert gw.supervisor.restarts == 0, "the health loop died and was restarted"
        assert gw.supervisor.failed() == []
        assert snap().counters.get("thread_restarts", 0) == 0
    finally:
        gw.stop(flush_timeout=1.0)
