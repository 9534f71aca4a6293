"""What every full screen shares: it receives the ward view from the app (reactive down)."""

from __future__ import annotations

import logging

from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen

from edge_agent.ui.view import WardView
from edge_agent.ui.widgets import AlarmBanner, StatusLine

log = logging.getLogger(__name__)


class WardViewScreen(Screen):
    """A screen fed by the app's latest `WardView`; subclasses draw it in `show`."""

    ward: reactive[WardView | None] = reactive(None, always_update=True, layout=False)
    operator: reactive[str | None] = reactive(None)

    _ready = False  # set once composed: reactives may arrive before the widgets exist

    def watch_ward(self, ward: WardView | None) -> None:
        if not self._ready or ward is None:
            return
        try:
            for banner in self.query(AlarmBanner):
                banner.ward = ward
            for line in self.query(StatusLine):
                line.gateway = ward.gateway
            self.show(ward)
        except NoMatches:
            # Still composing or already being removed: the next refresh draws it.
            log.debug("screen %s not drawable yet", self.name)

    def watch_operator(self, operator: str | None) -> None:
        for line in self.query(StatusLine):
            line.operator = operator

    def on_mount(self) -> None:
        # A screen pushed between two refreshes draws the last view at once.
        self._ready = True
        self.watch_operator(self.operator)
        self.watch_ward(self.ward)

    def show(self, ward: WardView) -> None:
        raise NotImplementedError
