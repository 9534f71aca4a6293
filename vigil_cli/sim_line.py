"""A simulated monitor as a gateway line: firmware_sim on a pty, read like a serial port.

The gateway (`edge_agent`) carries no simulator; a bed with `source = { type = "sim" }`
is served by the factory this module registers with `edge_agent.sources.register_source`.
`vigil_cli.main` installs it, so `vigil edge run` and `vigil demo` run simulated beds;
tests call `install()` themselves.
"""

from __future__ import annotations

import threading

from edge_agent.config import LinkConfig, SerialSource, SimSource
from edge_agent.sources import SerialLine, register_source


class SimLine(SerialLine):
    """An in-process firmware_sim monitor on a pseudo-terminal, read like a serial line."""

    kind = "sim"

    def __init__(self, bed: str, cfg: SimSource, link: LinkConfig, stop: threading.Event) -> None:
        from firmware_sim.faults import parse_fault
        from firmware_sim.monitor import Monitor, MonitorRunner
        from firmware_sim.physiology import GeneratedSource, load_replay
        from firmware_sim.transports import PtyTransport

        transport = PtyTransport(flow_control=1.0)
        if cfg.replay is not None and cfg.stay is not None:
            (source,) = load_replay(cfg.replay, [cfg.stay], seed=cfg.seed)
        else:
            source = GeneratedSource(cfg.scenario, cfg.seed)
        self.monitor = Monitor(
            bed,
            source,
            transport,
            speed=cfg.speed,
            interval=cfg.interval,
            max_rate=cfg.max_rate,
            faults=[parse_fault(f) for f in cfg.faults],
            seed=cfg.seed,
        )
        self.runner = MonitorRunner([self.monitor])
        serial_cfg = SerialSource(type="serial", port=transport.address)
        super().__init__(bed, serial_cfg, link, stop)
        self.runner.start()

    def describe(self) -> str:
        return f"sim {self.monitor.address}"

    def shutdown(self) -> None:
        """Stop the simulated monitor (the gateway calls this when it stops)."""
        self.runner.close()


def install() -> None:
    """Register `SimLine` for `sim` sources (idempotent)."""
    register_source(SimSource, SimLine)
