"""Fixtures shared by the tests: simulated beds served as `vigil` serves them; a private
Mosquitto per test (`broker`); for the hub store tests one throwaway PostgreSQL database
per test module, and each store test run twice, on SQLite and on PostgreSQL; the
failing-disk rig (tmpfs_disk, septic_beds, healthy_run). Their helpers are in
tests/support/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.broker import Mosquitto
from tests.support.hub import fresh_engine, postgres_database
from tests.support.storage import healthy_run, septic_beds, tmpfs_disk

# The failing-disk rig's fixtures (tests/support/storage.py), for the storage tests.
__all__ = ["healthy_run", "septic_beds", "tmpfs_disk"]
from vigil_cli import sim_line

sim_line.install()  # `sim` beds, as the `vigil` command serves them


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mosquitto(**overrides): config lines for the test's `broker` fixture"
    )


@pytest.fixture
def broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own (tests.support.broker), stopped after it; its config
    is the default one, changed by `@pytest.mark.mosquitto(key=value, ...)` on the test."""
    marker = request.node.get_closest_marker("mosquitto")
    overrides = marker.kwargs if marker else {}
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), **overrides) as b:
        yield b


@pytest.fixture(scope="module")
def pg_url():
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """(url, engine) of a freshly migrated hub store."""
    url = (
        f"sqlite:///{tmp_path}/hub.db"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    e = fresh_engine(url)
    yield url, e
    e.dispose()


@pytest.fixture
def engine(db):
    return db[1]


@pytest.fixture(autouse=True)
def _threads_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """Report threads a test started and left running (they skew the memory and timing
    of the tests after it): VIGIL_THREAD_LEAKS=FILE appends `test: thread names`."""
    import os
    import threading

    out = os.environ.get("VIGIL_THREAD_LEAKS")
    before = set(threading.enumerate()) if out else set()
    yield
    if out:
        import time

        def left_behind() -> list[str]:
            return [t.name for t in threading.enumerate() if t not in before and t.is_alive()]

        left = left_behind()
        if left:  # threads told to stop at teardown get a moment to end
            time.sleep(0.7)
            left = left_behind()
        if left:
            with open(out, "a") as f:
                f.write(f"{request.node.nodeid}: {', '.join(sorted(left))}\n")


@pytest.fixture(autouse=True)
def _logging_as_before() -> Iterator[None]:
    """Undo what a test's in-process `vigil` command did to logging (root level and
    handlers, logger levels): a root left at INFO made a later test capture 10^5
    listener records in memory (its RSS bound failed only in random order)."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    levels = {
        name: lg.level
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    yield
    root.setLevel(level)
    for h in root.handlers[:]:
        if h not in handlers and type(h).__module__ != "_pytest.logging":
            root.removeHandler(h)
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))
