"""Fixtures: every test gets its own processes, database and folders under tmp_path."""
from __future__ import annotations

import pytest

from .harness import Processes


@pytest.fixture
def procs(tmp_path):
    """Start real processes for this test; all of them are killed at teardown."""
    manager = Processes(tmp_path)
    yield manager
    manager.cleanup()
