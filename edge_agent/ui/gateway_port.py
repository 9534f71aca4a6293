"""`CorePort` on the real gateway core: views from `GatewayState`, actions via `Gateway`.

Reading: `gateway.state.snapshot()` is the core's consistent, immutable copy (taken
under its lock, `edge_agent/state.py`); it is turned into the UI's `WardView`
here, in the UI's worker thread, so the data path pays only for the copy.

Acting: acknowledge, silence and feedback call `gateway.acknowledge/silence/feedback`,
the core's alarm path, which stores the action in SQLite, queues a `vigil.alarm/1`
event (with the operator's name and the time) in the outbox for the hub, and updates
the state the screens read back. The bedside entries (oxygen, ACVPU, SpO2 scale) and
admission (admit, transfer, discharge) call the gateway's methods of the same names,
which store and send them the same way, with who and when. The core refuses with
`LookupError` (unknown bed) or `ValueError` (a bad value, in words for the nurse):
both become `ActionRefused`, which the terminal shows; nothing else is caught here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from edge_agent.alarms import ActionRefused
from edge_agent.state import (
    AdmissionSnapshot,
    BedSnapshot,
    GatewaySnapshot,
    ObservationSnapshot,
)
from edge_agent.ui.view import (
    AdmissionView,
    BedView,
    EventView,
    GatewayView,
    ObservationView,
    VitalView,
    WardView,
)


def observation_view(o: ObservationSnapshot) -> ObservationView:
    """One nurse entry of the snapshot."""
    return ObservationView(
        kind=o.kind,
        value=str(o.value),
        by=o.by,
        at=o.at,
        age_seconds=o.age_seconds,
        reassess=o.reassess,
        device=o.device,
        flow_l_min=o.flow_l_min,
        reason=o.reason,
    )


def admission_view(a: AdmissionSnapshot | None) -> AdmissionView | None:
    if a is None:
        return None
    return AdmissionView(stay=a.stay, source=a.source, since=a.since, age=a.age, sex=a.sex)


def bed_view(b: BedSnapshot) -> BedView:
    vitals = {
        name: VitalView(
            name, v.value, v.age_seconds, tuple(v.history), withheld=b.quality.get(name)
        )
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
        observations=tuple(observation_view(o) for o in b.observations),
        admission=admission_view(b.admission),
        unscored_reason=b.unscored_reason,
        news2_scale=b.news2.scale if b.news2 else 1,
        news2_assumed=tuple(b.news2.assumed) if b.news2 else (),
        news2_reassess=tuple(b.news2.reassess) if b.news2 else (),
        news2_alarm_level=b.news2_alarm_level,
        news2_alarm_state=b.news2_alarm_state,
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

    def set_oxygen(
        self, bed: str, by: str, on_oxygen: bool, device: str | None, flow_l_min: float | None
    ) -> None:
        self._call(
            "set_oxygen", bed, by=by, on_oxygen=on_oxygen, device=device, flow_l_min=flow_l_min
        )

    def set_acvpu(self, bed: str, by: str, level: str) -> None:
        self._call("set_acvpu", bed, by=by, level=level)

    def set_spo2_scale(self, bed: str, by: str, scale: int, reason: str | None) -> None:
        self._call("set_spo2_scale", bed, by=by, scale=scale, reason=reason)

    def admit(
        self,
        bed: str,
        by: str,
        patient_id: str,
        age: float | None,
        sex: str | None,
        admitted_at: datetime | None,
    ) -> None:
        self._call(
            "admit", bed, by=by, patient_id=patient_id, age=age, sex=sex, admitted_at=admitted_at
        )

    def transfer(self, bed: str, by: str, to_bed: str) -> None:
        self._call("transfer", bed, by=by, to_bed=to_bed)

    def discharge(self, bed: str, by: str) -> None:
        self._call("discharge", bed, by=by)

    def _call(self, action: str, bed: str, **kw: Any) -> None:
        try:
            getattr(self.gateway, action)(bed, **kw)
        except (ValueError, LookupError) as e:  # the core's refusal (unknown bed, no alarm)
            raise ActionRefused(str(e)) from e
