"""Messages the screens send up to the app: what the nurse asked for."""

from __future__ import annotations

from dataclasses import dataclass

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
