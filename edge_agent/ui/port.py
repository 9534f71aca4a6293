"""What the UI needs from the gateway core, as one small interface.

`CorePort` is all the screens know of the gateway: a way to read the current
`WardView`, the three alarm actions (acknowledge, silence, feedback) and the six
bedside entries (oxygen, ACVPU, SpO2 scale, admit, transfer, discharge). Each raises
`edge_agent.alarms.ActionRefused` when the core refuses it (unknown bed, bad value),
with the core's message for the nurse. `GatewayPort` (in `gateway_port.py`)
implements it on the real gateway core: views are built from the core's observable
state, and actions go through the core, so they are stored in SQLite, queued in the
outbox and published to the hub as events with who and when.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from edge_agent.ui.view import WardView


class CorePort(Protocol):
    def ward_view(self) -> WardView:
        """A consistent copy of the gateway's state now (cheap; called every second)."""
        ...

    def acknowledge(self, bed: str, by: str) -> None: ...

    def silence(self, bed: str, by: str, seconds: int) -> None: ...

    def feedback(self, bed: str, by: str, kind: str, note: str | None) -> None: ...

    def set_oxygen(
        self, bed: str, by: str, on_oxygen: bool, device: str | None, flow_l_min: float | None
    ) -> None:
        """Air (`on_oxygen` False), or supplemental oxygen by `device` at `flow_l_min`."""
        ...

    def set_acvpu(self, bed: str, by: str, level: str) -> None:
        """Consciousness: one of A, C, V, P, U."""
        ...

    def set_spo2_scale(self, bed: str, by: str, scale: int, reason: str | None) -> None:
        """SpO2 scale 1 or 2 (2 only with a reason: hypercapnic respiratory failure)."""
        ...

    def admit(
        self,
        bed: str,
        by: str,
        patient_id: str,
        age: float | None,
        sex: str | None,
        admitted_at: datetime | None,
    ) -> None:
        """Admit a patient to an empty bed (the id is pseudonymised by the gateway)."""
        ...

    def transfer(self, bed: str, by: str, to_bed: str) -> None: ...

    def discharge(self, bed: str, by: str) -> None: ...
