"""One line at the top of a screen: where you are (ward / bed) and which model is running."""

from __future__ import annotations

from typing import Any

from textual.widgets import Static


class TitleBar(Static):
    """Plain text set by its screen; colour in tcss."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("markup", False)  # bed ids and notes are text, not markup
        super().__init__(*args, **kw)
