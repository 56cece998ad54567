"""Fixtures: every test gets its own processes, database and folders under tmp_path."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import Processes, postgres_missing, postgres_schema


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


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser():
    """Debian's Chromium, headless, driven by Playwright; the test is skipped without it."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); the browser test needs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update"])
        yield launched
        launched.close()


def pytest_collection_modifyitems(config, items):
    """The fast in-process layer runs first: a broken rule shows in seconds, before the long stories."""
    items.sort(key=lambda item: item.get_closest_marker("fast") is None)
