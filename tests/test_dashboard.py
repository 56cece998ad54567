"""Watching a run in the browser: live progress, and requeueing a failed task with a click."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .harness import HEADER, SIM_PASSWORD, api, at, start_client, start_coordinator, start_nvr, wait_for, write_sheet

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def test_dashboard_shows_live_progress_and_requeues_a_failed_task(procs, tmp_path, browser):
    nvr = start_nvr(procs, channels=1, hours=4, size=200_000, extra=("--delay", "0.05"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(h), at(h + 1), f"hour {h}"] for h in range(4)]
    rows.append([nvr.address, "viewer", "Bad-pass-9", 101, at(0), at(1), "wrong password"])
    # The refused password holds its task until --nvr-give-up, then it fails (a short one here).
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--max-attempts", "1", "--nvr-give-up", "3")
    page = browser.new_page()
    page.goto(coordinator.url)
    page.wait_for_selector("[data-state=done]")
    assert page.inner_text("[data-state=done] b") == "0"
    page.wait_for_function("() => document.getElementById('live').textContent === 'live'")  # on the event stream

    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    # The page follows the run without a reload: the done count climbs as the worker completes tasks.
    page.wait_for_function("() => +document.querySelector('[data-state=done] b').textContent >= 1", timeout=30_000)
    assert client.wait(90) == 0
    page.wait_for_function("() => document.getElementById('progress-text').textContent.includes('(drained)')",
                           timeout=10_000)
    assert page.inner_text("[data-state=done] b") == "4"
    assert "t.xlsx, sheet 'tasks', row 6" in page.inner_text("#rows")  # the sheet row of the failed task
    # Per NVR: tasks per state and megabytes; per worker: its host and process.
    nvr_cells = [c.strip() for c in page.inner_text("#nvrs tr").split("\t")]
    exported = api(coordinator.url).json()["nvrs"][0]["bytes"]
    assert exported > 0
    assert nvr_cells[:6] == [nvr.address, "0 / 2", "0", "4", "1", f"{exported / 1e6:.1f}"]
    worker_cells = [c.strip() for c in page.inner_text("#workers tr").split("\t")]
    assert worker_cells[1] == "w0" and worker_cells[2] == "idle" and worker_cells[3] == "4"

    page.select_option("#state", "failed")
    page.wait_for_selector("button[data-requeue='5']")
    page.click("tr.task[data-id='5'] td:nth-child(2)")  # the task's detail, with its attempts
    page.wait_for_selector("#detail >> text=refused the password of user 'viewer'")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    shutil.copy(tmp_path / "dashboard.png", ARTIFACTS / "dashboard.png")

    page.click("button[data-requeue='5']")
    wait_for(lambda: api(coordinator.url, path="/api/tasks/5").json()["state"] == "queued", what="task 5 requeued")
    assert SIM_PASSWORD not in page.content() and "Bad-pass-9" not in page.content()
