"""The risk alarm of one bed: the gateway's name for `contracts/alarms.py`.

The state machine moved to contracts so that the hub replays per-hour risks through
the very machine the gateway runs (alarm-burden curves and per-site calibration,
`cloud_hub/burden.py`); the gateway, its nurse terminal and its tests keep importing
it from here. See `contracts/alarms.py` for the levels, hysteresis, minimum duration,
escalation and the nurse actions; this alarm never mutes the monitor's own alarms.
"""

from __future__ import annotations

from contracts.alarms import (
    SYSTEM,
    ActionRefused,
    AlarmEvent,
    AlarmMachine,
    AlarmParams,
    AlarmState,
)

__all__ = ["SYSTEM", "ActionRefused", "AlarmEvent", "AlarmMachine", "AlarmParams", "AlarmState"]
