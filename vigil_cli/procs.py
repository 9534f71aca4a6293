"""Child processes that die with their parent and stop in order (for `vigil demo`,
the chaos tests and the load benches).

Children start in their own session so a Ctrl-C in the terminal reaches only the
supervisor, which then stops them in a safe order (gateway, hub, broker); and each
asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so even a
SIGKILLed supervisor leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """True once something accepts TCP connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return True
        time.sleep(0.05)
    return False


def spawn(
    argv: Sequence[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen:
    """Start `argv` with stdout+stderr appended to `log`, in its own session."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")  # noqa: SIM115 - the child holds it; closed with the Popen
    try:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only a prctl, no locks taken
        )
    finally:
        out.close()


def vigil_argv(*args: str) -> list[str]:
    """The `vigil` CLI of this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "vigil_cli.main", *args]


def stop(proc: subprocess.Popen | None, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int:
    """Ask `proc` to stop (SIGTERM), SIGKILL it after `timeout`; its exit code."""
    if proc is None:
        return 0
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)
    return proc.returncode


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL (a crash, for the chaos tests) and reap."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)
