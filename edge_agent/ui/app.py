"""The nurse terminal: a Textual app over the gateway core; `run_ui(gateway)` starts it.

The app polls the core once a second in a worker thread (the gateway never waits on
the UI), pushes the resulting `WardView` down to the screens, and sends the nurse's
actions (acknowledge, silence, feedback) back through the core's alarm path, and the
bedside entries (oxygen, ACVPU, SpO2 scale, admit, transfer, discharge) through the
core's methods of those names, each with the signed-in operator and each in a worker
thread, so a slow disk never freezes the screen. A refusal is shown, never raised.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.reactive import reactive

from edge_agent.alarms import ActionRefused
from edge_agent.ui.messages import ENTRY_ACTIONS, BedsideEntry, NurseAction, OpenBed
from edge_agent.ui.port import CorePort
from edge_agent.ui.screens import (
    BedsideScreen,
    EventsScreen,
    HelpScreen,
    LoginScreen,
    QuitScreen,
    WardScreen,
)
from edge_agent.ui.screens.base import WardViewScreen
from edge_agent.ui.screens.help import help_text
from edge_agent.ui.view import WardView

log = logging.getLogger(__name__)

DEFAULT_SILENCE_CHOICES = (60, 120, 300, 600)


class VigilApp(App[None]):
    """Ward, bedside, events and help screens over one `CorePort`."""

    CSS_PATH = Path(__file__).parent / "styles" / "app.tcss"
    TITLE = "Vigil"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("question_mark", "help", "Help", tooltip="this list of keys"),
        Binding("w", "show_ward", "Ward", tooltip="all beds, sickest first"),
        Binding("e", "show_events", "Events", tooltip="alarms, feedback, model and connection"),
        Binding("q", "quit_ui", "Quit", tooltip="quit the terminal (asks first)"),
        # Textual's own ctrl+q quits at once; here quitting stops the gateway: ask too.
        Binding("ctrl+q", "quit_ui", "Quit", show=False, priority=True, tooltip="same as q"),
    ]

    ward: reactive[WardView | None] = reactive(None, always_update=True, init=False)
    operator: reactive[str | None] = reactive(None, init=False)

    def __init__(
        self,
        port: CorePort,
        *,
        operator: str | None = None,
        refresh_seconds: float = 1.0,
        silence_choices: tuple[int, ...] = DEFAULT_SILENCE_CHOICES,
        blink: bool = True,
    ) -> None:
        super().__init__()
        self.port = port
        self._initial_operator = operator.strip() if operator and operator.strip() else None
        self.refresh_seconds = refresh_seconds
        self.silence_choices = silence_choices
        self.blink = blink
        self._fetching = False
        self._alarming: set[str] = set()
        self.actions_done = 0  # for tests and the bench: actions the core accepted
        self.refreshes = 0  # views applied (the bench checks the terminal keeps up)
        self.stopping: Callable[[], bool] = lambda: False  # the gateway is shutting down

    def screen_text(self) -> str:
        """The current screen as plain text (for logs, the README and tests)."""
        width, height = self.size
        console = Console(
            width=width,
            height=height,
            file=io.StringIO(),
            force_terminal=True,
            record=True,
            legacy_windows=False,
            safe_box=False,
        )
        console.print(
            self.screen._compositor.render_update(
                full=True, screen_stack=self._background_screens, simplify=True
            )
        )
        return console.export_text()

    # -- life cycle ---------------------------------------------------------------

    def on_mount(self) -> None:
        self.push_screen(WardScreen(name="ward"))
        self.operator = self._initial_operator
        if self.operator is None:
            self.push_screen(LoginScreen(name="login"), self._signed_in)
        self.set_interval(self.refresh_seconds, self.poll)
        if self.blink:
            self.set_interval(0.5, self._blink)
        self.poll()

    def _signed_in(self, name: str | None) -> None:
        if name:
            self.operator = name
            log.info("operator %s signed in to the terminal", name)

    def _blink(self) -> None:
        for banner in self.screen.query("AlarmBanner"):
            banner.toggle_class("-blink")

    # -- state down ---------------------------------------------------------------

    def poll(self) -> None:
        """Fetch a fresh view unless the last fetch is still running (never queue up)."""
        if self.stopping():
            self.exit()
            return
        if not self._fetching:
            self._fetching = True
            self._fetch()

    @work(thread=True, group="poll")
    def _fetch(self) -> None:
        try:
            view = self.port.ward_view()
        except Exception:  # the screen keeps its last view; the log says why
            log.exception("reading the gateway state for the terminal failed")
            self.call_from_thread(self._fetch_done, None)
            return
        self.call_from_thread(self._fetch_done, view)

    def _fetch_done(self, view: WardView | None) -> None:
        self._fetching = False
        if view is None:
            return
        try:
            self.ward = view
        except Exception:  # a drawing bug must not close the terminal over a live ward
            log.exception("drawing the gateway state failed; the next refresh retries")
            return
        self.refreshes += 1

    def watch_ward(self, ward: WardView | None) -> None:
        if ward is None:
            return
        alarming = {b.bed for b in ward.beds if b.alarming}
        if alarming - self._alarming:
            self.bell()  # a new alarm: the terminal rings as well as showing the banner
        self._alarming = alarming
        for screen in self.screen_stack:
            if isinstance(screen, WardViewScreen):
                screen.ward = ward

    def watch_operator(self, operator: str | None) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, WardViewScreen):
                screen.operator = operator

    def _feed(self, screen: WardViewScreen) -> WardViewScreen:
        screen.ward = self.ward
        screen.operator = self.operator
        return screen

    # -- navigation ---------------------------------------------------------------

    def on_open_bed(self, message: OpenBed) -> None:
        self._leave_to_ward()
        self.push_screen(self._feed(BedsideScreen(message.bed, self.silence_choices)))

    def _leave_to_ward(self) -> None:
        while len(self.screen_stack) > 2 and not isinstance(self.screen, WardScreen):
            self.pop_screen()

    def action_show_ward(self) -> None:
        self._leave_to_ward()

    def action_show_events(self) -> None:
        if isinstance(self.screen, EventsScreen):
            return
        self._leave_to_ward()
        self.push_screen(self._feed(EventsScreen()))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        screens = {"WARD": WardScreen, "BEDSIDE": BedsideScreen, "EVENTS": EventsScreen}
        self.push_screen(HelpScreen(help_text(type(self), screens)))

    def action_quit_ui(self) -> None:
        if isinstance(self.screen, QuitScreen):
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.exit()

        self.push_screen(QuitScreen(name="quit"), answer)

    # -- actions up ---------------------------------------------------------------

    def on_nurse_action(self, message: NurseAction) -> None:
        if not self.operator:
            self.notify("Sign in first: actions are recorded with your name.", severity="error")
            self.push_screen(LoginScreen(name="login"), self._signed_in)
            return
        self._perform(message.request, self.operator)

    @work(thread=True, group="actions")
    def _perform(self, req: NurseAction.Request, by: str) -> None:
        try:
            if req.action == "acknowledge":
                self.port.acknowledge(req.bed, by)
                done = f"Bed {req.bed}: alarm acknowledged by {by}"
            elif req.action == "silence":
                seconds = int(req.silence_seconds or 0)
                self.port.silence(req.bed, by, seconds)
                done = f"Bed {req.bed}: silenced {seconds // 60} min by {by}"
            elif req.action == "feedback":
                self.port.feedback(req.bed, by, req.feedback or "", req.note)
                done = f"Bed {req.bed}: feedback '{req.feedback}' recorded for {by}"
            else:
                raise ActionRefused(f"unknown action {req.action!r}")
        except ActionRefused as e:
            self.call_from_thread(self.notify, f"Bed {req.bed}: {e}", severity="warning")
            return
        except Exception as e:  # stored nowhere: the nurse must know it did not happen
            log.exception("nurse action %s on bed %s failed", req.action, req.bed)
            self.call_from_thread(
                self.notify, f"Bed {req.bed}: {req.action} FAILED: {e}", severity="error"
            )
            return
        log.info(done)
        self.call_from_thread(self._action_done, done)

    def on_bedside_entry(self, message: BedsideEntry) -> None:
        if not self.operator:
            self.notify("Sign in first: entries are recorded with your name.", severity="error")
            self.push_screen(LoginScreen(name="login"), self._signed_in)
            return
        self._record(message.request, self.operator)

    @work(thread=True, group="actions")
    def _record(self, req: BedsideEntry.Request, by: str) -> None:
        """A bedside entry through the port, as `_perform` does for alarm actions."""
        try:
            if req.action not in ENTRY_ACTIONS:
                raise ActionRefused(f"unknown entry {req.action!r}")
            getattr(self.port, req.action)(req.bed, by, **req.fields)
        except ActionRefused as e:
            log.warning("bed %s: %s by %s refused: %s", req.bed, req.action, by, e)
            self.call_from_thread(
                self.notify, f"Bed {req.bed}: NOT recorded: {e}", severity="error", timeout=10
            )
            return
        except Exception as e:  # stored nowhere: the nurse must know it did not happen
            log.exception("bedside entry %s on bed %s failed", req.action, req.bed)
            self.call_from_thread(
                self.notify, f"Bed {req.bed}: {req.summary} FAILED: {e}", severity="error"
            )
            return
        done = f"Bed {req.bed}: {req.summary} recorded by {by}"
        log.info(done)
        self.call_from_thread(self._action_done, done)

    def _action_done(self, text: str) -> None:
        self.actions_done += 1
        self.notify(text)
        self.poll()


def run_ui(gateway: Any, *, operator: str | None = None, **kw: Any) -> None:
    """Run the terminal over a started gateway core until the nurse quits.

    The gateway keeps running in its own threads; the caller stops it afterwards.
    `operator` defaults to the gateway's configured operator, else a sign-in prompt.
    While the terminal is up, log lines that would go to the screen go to
    `gateway.log` beside the store instead (they would tear the display), and the
    terminal closes by itself when the gateway is stopped (SIGTERM).
    """
    from edge_agent.ui.gateway_port import GatewayPort

    port = GatewayPort(gateway)
    alarms = getattr(getattr(gateway, "settings", None), "alarms", None)
    if alarms is not None and "silence_choices" not in kw:
        # Offer only what the core accepts (alarms.max_silence_seconds).
        choices = tuple(c for c in DEFAULT_SILENCE_CHOICES if c <= alarms.max_silence_seconds)
        kw["silence_choices"] = choices or (alarms.max_silence_seconds,)
    app = VigilApp(port, operator=operator or port.configured_operator(), **kw)
    app.stopping = port.stopping
    store_path = getattr(getattr(gateway, "settings", None), "store_path", None)
    log_path = Path(store_path).parent / "gateway.log" if store_path else Path("gateway.log")
    with logs_to_file(log_path):
        app.run()


@contextmanager
def logs_to_file(path: Path) -> Iterator[None]:
    """Move the root logger's terminal handlers to a file for the duration."""
    root = logging.getLogger()
    on_terminal = [
        h
        for h in root.handlers
        if isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and getattr(h.stream, "isatty", lambda: False)()
    ]
    if not on_terminal:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(on_terminal[0].formatter)
    to_file.setLevel(on_terminal[0].level)
    for h in on_terminal:
        root.removeHandler(h)
    root.addHandler(to_file)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for h in on_terminal:
            root.addHandler(h)
