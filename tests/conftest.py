"""Fixtures: every test gets its own processes, database and folders under tmp_path."""
from __future__ import annotations

import os

import pytest

from taskserver.store.postgres import PostgresStore
from taskserver.store.sqlite import SQLiteStore
from taskserver.vault import Vault

from .harness import POLICY, TEST_KEY, FakeClock, Processes, postgres_missing, postgres_schema


@pytest.fixture
def procs(tmp_path):
    """Start real processes for this test; all of them are killed at teardown."""
    manager = Processes(tmp_path)
    yield manager
    manager.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    """The coordinator's database: the test runs once on a SQLite file, once on PostgreSQL.

    Without a PostgreSQL server the PostgreSQL runs are skipped with the reason,
    unless TASKSERVER_REQUIRE_POSTGRES=1 (as in CI), which makes them fail instead.
    """
    if request.param == "sqlite":
        return str(tmp_path / "ts.db")
    return request.getfixturevalue("postgres")


@pytest.fixture
def postgres():
    """A database URL on the machine's PostgreSQL, in a schema of its own that is dropped afterwards."""
    missing = postgres_missing()
    if missing:
        if os.environ.get("TASKSERVER_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unusable: {missing}")
        pytest.skip(f"PostgreSQL store not tested: {missing}")
    with postgres_schema() as url:
        yield url


@pytest.fixture
def clock():
    """The stores' clock in the in-process suites: moved by hand, never slept on."""
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path, clock):
    """Open stores of one kind on one database (several open at once act like several coordinators)."""
    opened = []
    if request.param == "postgres":
        missing = postgres_missing()
        if missing:
            pytest.skip(f"PostgreSQL store not tested: {missing}")
        context = postgres_schema()
        url = context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))

        def make(policy=POLICY, vault=None):
            store = PostgresStore(url, policy, vault or Vault([TEST_KEY], "test"), clock, pool=4)
            opened.append(store)
            return store
    else:
        def make(policy=POLICY, vault=None):
            store = SQLiteStore(tmp_path / "ts.db", policy, vault or Vault([TEST_KEY], "test"), clock)
            opened.append(store)
            return store
    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store):
    """A store on a fresh database, SQLite then PostgreSQL."""
    return make_store()
