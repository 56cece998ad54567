"""Big sheets: checked rows wait in a temporary file, not in memory, and the import stays all or nothing.

A sheet of a million rows is read once; its tasks are spooled to disk in batches as
they pass their checks, and added to the store in one transaction only when every
row has passed. These tests use small batches so that a few rows span several.
"""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from taskserver.errors import SheetError
from taskserver.sheet import Spooled, load_sheet, spool_sheet

from . import test_store as contract
from .harness import HEADER

pytestmark = pytest.mark.fast

clock, make_store, store = contract.clock, contract.make_store, contract.store
T = datetime(2026, 1, 1)


def csv_sheet(path, rows: int, bad_row: int | None = None):
    lines = [",".join(HEADER)]
    for i in range(rows):
        start = T + timedelta(minutes=i)
        end = "not a time" if i + 2 == bad_row else f"{start + timedelta(hours=1):%Y-%m-%d %H:%M}"
        lines.append(f"10.0.0.{i % 7 + 1},admin,pw,101,{start:%Y-%m-%d %H:%M},{end},row {i}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(Spooled, "BATCH", 7)


def test_a_spooled_sheet_gives_the_same_tasks_in_sheet_order_as_often_as_asked(tmp_path, small_batches):
    sheet = csv_sheet(tmp_path / "t.csv", 50)
    spooled = spool_sheet(sheet)
    assert len(spooled) == 50 and list(spooled) == list(spooled) == list(load_sheet(sheet))
    spooled.close()


def test_a_spooled_sheet_is_added_whole_in_one_import(store, tmp_path, small_batches):
    spooled = spool_sheet(csv_sheet(tmp_path / "t.csv", 50))
    result = spooled.into(store)
    assert (result.added, result.existing, len(result.ids)) == (50, 0, 50)
    assert [t["name"] for t in store.tasks(limit=3)[0]] == ["row 0", "row 1", "row 2"]
    again = spool_sheet(csv_sheet(tmp_path / "t.csv", 60)).into(store)
    assert (again.added, again.existing) == (10, 50)


def test_a_problem_on_the_last_row_of_a_big_sheet_queues_nothing(store, tmp_path, small_batches):
    with pytest.raises(SheetError, match=r"row 41, column F \(endtime\)"):
        spool_sheet(csv_sheet(tmp_path / "t.csv", 40, bad_row=41))
    assert store.status()["tasks"] == 0


def test_the_same_row_twice_far_apart_is_still_found(tmp_path, small_batches):
    sheet = csv_sheet(tmp_path / "t.csv", 30)
    lines = sheet.read_text().splitlines()
    sheet.write_text("\n".join([*lines, lines[3]]) + "\n")
    with pytest.raises(SheetError, match="row 32.*same NVR, cameras and time range as row 4"):
        spool_sheet(sheet)


def test_the_import_command_adds_a_dry_run_of_a_big_sheet_beside_the_real_one(tmp_path):
    sheet, db = csv_sheet(tmp_path / "t.csv", 30), tmp_path / "ts.db"
    command = [sys.executable, "-m", "taskserver", "import", str(sheet), "--db", str(db)]
    dry = subprocess.run([*command, "--create", "--dry-run"], capture_output=True, text=True, timeout=60)
    real = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "30 dry run(s) added" in dry.stdout and "30 task(s) added" in real.stdout, dry.stderr + real.stderr
