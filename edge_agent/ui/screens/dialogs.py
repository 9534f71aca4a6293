"""Small dialogs: sign in, silence duration, feedback note, quit confirmation."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class LoginScreen(ModalScreen[str]):
    """Asks the operator's name; every alarm action and bedside entry is recorded with it."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                "Sign in: your name is recorded with every alarm action and entry.", markup=False
            )
            yield Input(placeholder="name", id="operator", max_length=64)
            yield Static("", classes="dialog--error", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        name = event.value.strip()
        if not name:
            self.query_one(".dialog--error", Static).update("A name is needed.")
            return
        self.dismiss(name)


class SilenceScreen(ModalScreen[int | None]):
    """Silence a bed's alarm for one of the configured durations (keys 1..n)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, bed: str, choices: tuple[int, ...]) -> None:
        super().__init__(name="silence")
        self.bed = bed
        self.choices = choices[:9]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Silence the alarm of bed {self.bed} for:", markup=False)
            for i, s in enumerate(self.choices, 1):
                yield Static(
                    f"  [{i}] {s // 60} min" if s % 60 == 0 else f"  [{i}] {s} s", markup=False
                )
            yield Static("  [Esc] cancel", markup=False)

    def on_key(self, event: events.Key) -> None:
        if event.character and event.character.isdigit():
            i = int(event.character)
            if 1 <= i <= len(self.choices):
                event.stop()
                self.dismiss(self.choices[i - 1])

    def action_cancel(self) -> None:
        self.dismiss(None)


class NoteScreen(ModalScreen[str | None]):
    """Feedback on a bed with an optional note; Enter sends, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    WORDS = {"deteriorating": "DETERIORATING", "false_alarm": "FALSE ALARM"}

    def __init__(self, bed: str, kind: str) -> None:
        super().__init__(name="note")
        self.bed = bed
        self.kind = kind

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(
                f"Feedback on bed {self.bed}: {self.WORDS.get(self.kind, self.kind)}", markup=False
            )
            yield Input(placeholder="optional note, Enter to send", id="note", max_length=2000)
            yield Static("[Enter] send  [Esc] cancel", markup=False)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


class QuitScreen(ModalScreen[bool]):
    """Quitting the UI stops the gateway started with it: ask first."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Quit the terminal and stop this gateway? [y] yes  [n] no", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
