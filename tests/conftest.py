"""Fixtures shared by the tests: simulated beds served as `vigil` serves them; for the hub
store tests one throwaway PostgreSQL database per test module, and each store test run
twice, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from hub_support import fresh_engine, postgres_database

from vigil_cli import sim_line

sim_line.install()  # `sim` beds, as the `vigil` command serves them


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
