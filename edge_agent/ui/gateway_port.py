"""`CorePort` on the real gateway core: views from `GatewayState`, actions via `Gateway`.

Reading: `gateway.state.snapshot()` is the core's consistent, immutable copy (taken
under its lock, `edge_agent/state.py`); it is turned into the UI's `WardView`
here, in the UI's worker thread, so the data path pays only for the copy.

Acting: acknowledge, silence and feedback call `gateway.acknowledge/silence/feedback`,
the core's alarm path, which stores the action in SQLite, queues a `vigil.alarm/1`
event (with the operator's name and the time) in the outbox for the hub, and updates
the state the screens read back.
"""

from __future__ import annotations

from typing import Any

from edge_agent.alarms import ActionRefused
from edge_agent.state import BedSnapshot, GatewaySnapshot
from edge_agent.ui.view import BedView, EventView, GatewayView, VitalView, WardView


def bed_view(b: BedSnapshot) -> BedView:
    vitals = {
        name: VitalView(name, v.value, v.age_seconds, tuple(v.history))
        for name, v in b.vitals.items()
    }
    return BedView(
        bed=b.bed,
        stay=b.stay,
        vitals=vitals,
        risk=b.risk,
        risk_history=tuple(p.risk for p in b.risk_history if p.risk is not None),
        threshold=b.threshold,
        alarm_level=b.alarm_level,
        alarm_state=b.alarm_state,
        model_name=b.model_name or "no model",
        model_version=b.model_version or "-",
        news2=b.news2,
        silenced_seconds_left=b.silenced_seconds_left,
        acknowledged_by=b.acknowledged_by,
        link=b.link,
        insufficient_data=b.insufficient_data,
        age_unknown=b.age_unknown,
    )


def ward_view(s: GatewaySnapshot) -> WardView:
    gw = GatewayView(
        gw=s.gw,
        broker_connected=s.broker_connected,
        outbox=s.outbox,
        serial_link=s.serial_link,
        model_name=s.model_name or "no model",
        model_version=s.model_version or "-",
        now=s.now,
        counters=dict(s.counters),
        storage=s.storage,
    )
    events = tuple(EventView(e.ts, e.kind, e.bed, e.text, e.by) for e in s.events)
    return WardView(gateway=gw, beds=tuple(bed_view(b) for b in s.beds), events=events)


class GatewayPort:
    """The UI's handle on a running `edge_agent.gateway.Gateway`."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.state = gateway.state

    def configured_operator(self) -> str | None:
        return self.state.operator

    def stopping(self) -> bool:
        """The gateway was told to stop (SIGTERM): the terminal closes too."""
        return self.gateway.stopping

    def ward_view(self) -> WardView:
        return ward_view(self.state.snapshot())

    def acknowledge(self, bed: str, by: str) -> None:
        self._call("acknowledge", bed, by=by)

    def silence(self, bed: str, by: str, seconds: int) -> None:
        self._call("silence", bed, by=by, seconds=seconds)

    def feedback(self, bed: str, by: str, kind: str, note: str | None) -> None:
        self._call("feedback", bed, by=by, kind=kind, note=note)

    def _call(self, action: str, bed: str, **kw: Any) -> None:
        try:
            getattr(self.gateway, action)(bed, **kw)
        except (ValueError, LookupError) as e:  # the core's refusal (unknown bed, no alarm)
            raise ActionRefused(str(e)) from e
