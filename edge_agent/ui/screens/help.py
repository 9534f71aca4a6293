"""The help screen: every key of every screen, built from the bindings so it never drifts."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEY_NAMES = {
    "question_mark": "?",
    "escape": "Esc",
    "enter": "Enter",
    "up": "↑",
    "down": "↓",
    "tab": "Tab",
}


def key_label(key: str) -> str:
    return ", ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in key.split(","))


def bindings_of(cls: type) -> list[Binding]:
    """The keys a class adds itself (not Textual's inherited defaults)."""
    out = []
    for b in cls.__dict__.get("BINDINGS", []):
        out.append(b if isinstance(b, Binding) else Binding(*b))
    return out


def help_text(app_cls: type[App], screens: dict[str, type]) -> str:
    lines = ["EVERYWHERE"]
    lines += [
        f"  {key_label(b.key):<10} {b.tooltip or b.description or b.action}"
        for b in bindings_of(app_cls)
    ]
    lines += [
        f"  {'↑ ↓':<10} move in a list (PgUp, PgDn, Home, End)",
        f"  {'Tab':<10} next field",
        "",
    ]
    for title, cls in screens.items():
        lines.append(title)
        lines += [
            f"  {key_label(b.key):<10} {b.tooltip or b.description or b.action}"
            for b in bindings_of(cls)
        ]
        if title == "WARD":
            lines.append(f"  {'Enter':<10} open the highlighted bed")
        lines.append("")
    lines.append("Esc or ? closes this help.")
    return "\n".join(lines)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close"),
    ]

    def __init__(self, text: str) -> None:
        super().__init__(name="help")
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static("KEYS", id="help-title", markup=False)
            yield Static(self.text, id="help-text", markup=False)

    def action_dismiss(self) -> None:
        self.dismiss(None)
