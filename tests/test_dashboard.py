"""Watching a run in the browser: live progress, and requeueing a failed task with a click."""
from __future__ import annotations

import re
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
    assert nvr_cells[:7] == [nvr.address, "0 / 2", "0", "4", "", "1", f"{exported / 1e6:.1f}"]  # none found nothing
    worker_cells = [c.strip() for c in page.inner_text("#workers tr").split("\t")]
    assert worker_cells[1] == "w0" and worker_cells[2] == "idle" and worker_cells[3] == "4"

    # A done task's detail says where each of its files went: host, path, size and SHA-256.
    page.click("tr.task[data-id='1'] td:nth-child(2)")
    page.wait_for_selector("#detail table.files tr.file")
    files = api(coordinator.url, path="/api/tasks/1/files").json()["files"]
    assert len(files) >= 1
    lines = [[c.strip() for c in line.split("\t")] for line in page.inner_text("#detail table.files").splitlines()[1:]]
    assert [line[:4] for line in lines] == [[f["host"], f["path"], f"{f['size'] / 1e6:.1f}", f["sha256"][:16]]
                                            for f in files]
    assert page.get_attribute("#detail tr.file td.hash", "title") == files[0]["sha256"]

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

    # The worker host stopped at the drain; retired for good, it is forgotten with a click.
    page.wait_for_selector("#workers button[data-forget]")
    page.click("#workers button[data-forget]")
    page.wait_for_function("() => document.querySelectorAll('#workers tr').length === 0")
    assert api(coordinator.url).json()["workers"] == []


def test_the_dashboard_shows_what_each_task_came_to_and_offers_only_the_steering_that_fits(procs, tmp_path, browser):
    nvr = start_nvr(procs, channels=1, hours=2, size=50_000)
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "morning"],
            [nvr.address, "admin", SIM_PASSWORD, 101, at(10), at(11), "empty range"]]  # the NVR recorded nothing then
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--lease-seconds", "600")
    url = coordinator.url
    # A task posted by a script, claimed by the script's own worker, which has not reported anything yet.
    posted = {"server": "192.0.2.1", "username": "admin", "password": "Api-pw-1", "cameras": "101",
              "starttime": "2026-01-01 00:00", "endtime": "2026-01-01 01:00", "name": "posted", "priority": 5}
    assert api(url, "POST", "/api/tasks", json={"tasks": [posted]}).json()["ids"] == [3]
    assert api(url, path="/api/claim?worker=script/w9").json()["task"]["id"] == 3

    icon = api(url, path="/favicon.ico")
    assert icon.status_code == 200 and icon.headers["Content-Type"].startswith("image/svg+xml")
    page = browser.new_page()
    page.goto(url)
    assert page.get_attribute("link[rel=icon]", "href") == "favicon.ico"
    page.wait_for_selector("tr.task[data-id='3']")
    assert page.inner_text("tr.task[data-id='3'] td.progress") == "listing"  # running, nothing reported yet
    # Pause and Resume are offered according to the state; while paused there is no ETA, and the page says why.
    assert page.is_enabled("#pause") and page.is_disabled("#resume")
    page.click("#pause")
    page.wait_for_function("() => document.getElementById('resume').disabled === false")
    assert page.is_disabled("#pause") and "paused: no work is handed out" in page.inner_text("#progress-text")
    page.click("#resume")
    page.wait_for_function("() => document.getElementById('pause').disabled === false")

    client = start_client(procs, url, tmp_path / "dl", 1)
    wait_for(lambda: [api(url, path=f"/api/tasks/{n}").json()["state"] for n in (1, 2)] == ["done", "done"],
             what="the two sheet tasks done")
    page.wait_for_function("() => document.querySelector('[data-state=nothing-found] b').textContent === '1'")
    # The totals come first, the task table with the next read: wait for the row itself.
    page.wait_for_function("() => document.querySelector(\"tr.task[data-id='2'] td.state\").textContent"
                           " === 'done, nothing found'")
    empty = page.locator("tr.task[data-id='2'] td.state")
    assert empty.inner_text() == "done, nothing found" and "state-empty" in empty.get_attribute("class")
    files = api(url, path="/api/tasks/1").json()["result"]["files"]
    assert files > 0 and page.inner_text("tr.task[data-id='1'] td.progress") == f"{files}/{files}"
    assert page.inner_text("tr.task[data-id='1'] td.from") == "2026-01-01 00:00:00"
    assert page.inner_text("tr.task[data-id='1'] td.to") == "2026-01-01 01:00:00"
    rows_text = page.inner_text("#rows")
    assert re.search(r"empty range\t.*\tdone, nothing found", rows_text)
    assert re.search(r"request of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, task 1\tposted\t192\.0\.2\.1", rows_text)
    # The rate chart has its axes: minutes ago along the bottom, tasks per minute up the side.
    assert page.locator("#chart text.x-tick").all_text_contents() == ["-60 min", "-45 min", "-30 min", "-15 min", "now"]
    assert page.locator("#chart text.y-tick").all_text_contents() in (["2", "0"], ["1", "0"])  # the busiest minute
    # Two tasks in a few seconds are no rate to promise an end by.
    progress_text = page.inner_text("#progress-text")
    assert "measuring the rate" in progress_text and "0 min" not in progress_text
    assert page.inner_text("#requeue-failed") == "Requeue failed (0)" and page.is_disabled("#requeue-failed")
    assert "cancelled tasks stay cancelled" in page.inner_text("#requeue-note")

    page.click("tr.task[data-id='1'] td:nth-child(2)")
    page.wait_for_selector("#detail tr.attempt")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-outcomes.png"), full_page=True)
    started, ended = (page.inner_text(f"#detail tr.attempt td:nth-child({n})") for n in (2, 3))
    assert re.search(r"\d:\d\d:\d\d", started) and re.search(r"\d:\d\d:\d\d", ended)

    page.click("button[data-cancel='3']")
    page.wait_for_function("() => document.getElementById('progress-text').textContent.includes('(drained)')")
    detail = api(url, path="/api/tasks/3").json()["attempt_log"][-1]
    assert detail["error"] == "cancelled by an admin from 127.0.0.1"
    assert client.wait(60) == 0
    assert "Api-pw-1" not in page.content() and SIM_PASSWORD not in page.content()
