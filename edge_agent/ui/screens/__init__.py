"""One screen per view: ward, bedside, events, help, and the small dialogs."""

from edge_agent.ui.screens.bedside import BedsideScreen
from edge_agent.ui.screens.dialogs import LoginScreen, NoteScreen, QuitScreen, SilenceScreen
from edge_agent.ui.screens.events import EventsScreen
from edge_agent.ui.screens.help import HelpScreen
from edge_agent.ui.screens.ward import WardScreen

__all__ = [
    "BedsideScreen",
    "EventsScreen",
    "HelpScreen",
    "LoginScreen",
    "NoteScreen",
    "QuitScreen",
    "SilenceScreen",
    "WardScreen",
]
