"""Messages the screens send up to the app: what the nurse asked for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


class NurseAction(Message):
    """Acknowledge, silence or feedback on one bed; the app sends it to the gateway core."""

    @dataclass(frozen=True)
    class Request:
        bed: str
        action: str  # acknowledge / silence / feedback
        silence_seconds: int | None = None
        feedback: str | None = None  # deteriorating / false_alarm
        note: str | None = None

    def __init__(self, request: NurseAction.Request) -> None:
        super().__init__()
        self.request = request


class OpenBed(Message):
    """Show the bedside view of a bed."""

    def __init__(self, bed: str) -> None:
        super().__init__()
        self.bed = bed


# The bedside entries a screen may ask for: the `CorePort` methods of the same names.
ENTRY_ACTIONS = ("set_oxygen", "set_acvpu", "set_spo2_scale", "admit", "transfer", "discharge")


class BedsideEntry(Message):
    """A nurse entry on one bed (oxygen, ACVPU, SpO2 scale, admit, transfer, discharge).

    `action` names the `CorePort` method and `fields` its arguments after bed and
    operator; `summary` is what the terminal says once the core has accepted it. The
    app adds the signed-in operator, so no screen can record an entry without a name.
    """

    @dataclass(frozen=True)
    class Request:
        bed: str
        action: str  # one of ENTRY_ACTIONS
        fields: dict[str, Any]
        summary: str

    def __init__(self, request: BedsideEntry.Request) -> None:
        super().__init__()
        self.request = request
