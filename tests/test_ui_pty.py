"""`vigil edge run` with its terminal, in a real pseudo-terminal (80x24).

Sign-in prompt when no operator is configured, the ward drawn, log lines kept off the
screen (they go to gateway.log beside the store), `q` then `y` quits, SIGTERM to the
gateway closes the terminal too, and bedside entries typed at the keys are stored.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from tests.support.net import free_port

ANSI = re.compile(
    rb"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78DEHMc])"
)


def config(tmp_path) -> str:
    beds = "".join(
        f'[[beds]]\nid = "bed-{i}"\nsource = {{ type = "sim", scenario = "{sc}", seed = {i}, '
        "speed = 1800, max_rate = 10 }\n"
        for i, sc in ((1, "sepsis"), (2, "stable"))
    )
    p = tmp_path / "gw.toml"
    p.write_text(
        f'gateway_id = "pty-ward"\nstore_path = "{tmp_path / "gw.sqlite"}"\nlog_level = "INFO"\n'
        f"{beds}[mqtt]\nport = {free_port()}\n"  # no broker: the status line says buffering
    )
    return str(p)


class Terminal:
    """A child process on a real pty of a given size; everything it draws is kept."""

    def __init__(self, argv: list[str], cols: int = 80, rows: int = 24) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        env.pop("VIGIL_EDGE__OPERATOR", None)
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.raw += chunk

    def text(self) -> str:
        with self.lock:
            return ANSI.sub(b"", bytes(self.raw)).decode("utf-8", "replace")

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode}: {self.text()[-2000:]}")
            assert time.monotonic() < deadline, f"{needle!r} never drawn: {self.text()[-2000:]}"
            time.sleep(0.1)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


@pytest.fixture
def terminal(tmp_path):
    term = Terminal([sys.executable, "-m", "vigil_cli.main", "edge", "run", "-c", config(tmp_path)])
    yield term
    term.close()


def test_sign_in_then_ward_and_quit_with_confirmation(terminal, tmp_path):
    terminal.wait_for("Sign in")
    terminal.type("Kim Lee\r")
    terminal.wait_for("Kim Lee")
    terminal.wait_for("WARD")
    terminal.wait_for("buffering")  # no broker: the status line says so
    terminal.wait_for("bed-1")
    time.sleep(1)
    # Start-up logs come before the terminal takes the screen; once it is up, log lines
    # (the beds' steps, the broker's retries) never tear it: they go to gateway.log.
    shown = terminal.text()
    assert " INFO " not in shown[shown.index("Sign in") :]
    assert " edge_agent." in (tmp_path / "gateway.log").read_text()
    terminal.type("q")
    terminal.wait_for("stop this gateway")
    terminal.type("y")
    assert terminal.proc.wait(20) == 0


def test_sigterm_to_the_gateway_closes_the_terminal(terminal):
    terminal.wait_for("Sign in")
    terminal.type("Kim Lee\r")
    terminal.wait_for("WARD")
    terminal.proc.send_signal(signal.SIGTERM)
    assert terminal.proc.wait(20) == 0


def test_bedside_entries_typed_in_a_real_terminal_are_stored(terminal, tmp_path):
    """ACVPU and oxygen by their keys in a real pty: drawn, then in the gateway's store."""
    terminal.wait_for("Sign in")
    terminal.type("Kim Lee\r")
    terminal.wait_for("RISK   NEWS2")  # the ward's header: the terminal is up
    terminal.wait_for("Kim Lee │")  # signed in (the status line)
    terminal.type("\r")  # the first bed of the ward
    terminal.wait_for("assumed (never recorded)")
    terminal.type("c")
    terminal.wait_for("responds to Voice")  # the ACVPU form
    terminal.type("v")
    terminal.wait_for("ACVPU V voice")
    terminal.type("o")
    terminal.wait_for("supplemental oxygen")
    terminal.type("\x1b[B\r")  # down to nasal cannula, Enter: the flow
    terminal.wait_for("Nasal cannula: the flow")
    terminal.type("2\r")
    terminal.wait_for("O2 2 L/min nasal cannula")
    terminal.type("q")
    terminal.wait_for("stop this gateway")
    terminal.type("y")
    assert terminal.proc.wait(20) == 0
    with sqlite3.connect(tmp_path / "gw.sqlite") as db:
        rows = db.execute(
            'SELECT kind, value, device, flow_l_min, "by" FROM observations'
        ).fetchall()
    assert sorted(rows) == [
        ("acvpu", "V", None, None, "Kim Lee"),
        ("oxygen", "oxygen", "nasal cannula", 2.0, "Kim Lee"),
    ]
