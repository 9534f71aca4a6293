"""What the UI needs from the gateway core, as one small interface.

`CorePort` is all the screens know of the gateway: a way to read the current
`WardView` and the three nurse actions, which raise `edge_agent.alarms.ActionRefused`
when the core refuses one. `GatewayPort` (in `gateway_port.py`)
implements it on the real gateway core: views are built from the core's observable
state, and actions go through the core's alarm path, so they are stored in SQLite,
queued in the outbox and published to the hub as `vigil.alarm/1` events with who/when.
"""

from __future__ import annotations

from typing import Protocol

from edge_agent.ui.view import WardView


class CorePort(Protocol):
    def ward_view(self) -> WardView:
        """A consistent copy of the gateway's state now (cheap; called every second)."""
        ...

    def acknowledge(self, bed: str, by: str) -> None: ...

    def silence(self, bed: str, by: str, seconds: int) -> None: ...

    def feedback(self, bed: str, by: str, kind: str, note: str | None) -> None: ...
