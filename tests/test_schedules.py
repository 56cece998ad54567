"""Nightly exports, unattended: a schedule exports each day once, a night that failed is caught up, and people
see the schedules (dashboard, `taskserver status`) and stop one with a click."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from .harness import (
    SIM_PASSWORD,
    OffsetClock,
    api,
    coordinator_in_process,
    start_client,
    start_coordinator,
    start_nvr,
    task_files,
    wait_for,
)
from .test_console import taskserver

pytestmark = pytest.mark.slow


def day(d: int, h: int = 1, m: int = 0, s: int = 5) -> datetime:
    return datetime(2026, 1, d, h, m, s, tzinfo=UTC)


def test_a_daily_schedule_over_three_days_exports_every_recording_once_even_after_a_failed_night(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=72, interval=3600, size=20_000)  # 1 to 3 January
    clock = OffsetClock(day(2))  # 2 January, 01:00:05: the run for 1 January is due
    downloads = tmp_path / "downloads"
    settings = dict(schedule_every=0.2, lease_seconds=5, backoff_base=0.2, backoff_max=1, max_wait=0.5,
                    nvr_backoff=0.3, nvr_give_up=2)
    with coordinator_in_process(tmp_path / "ts.db", clock, **settings) as url:
        row = {"server": nvr.address, "username": "admin", "password": SIM_PASSWORD, "cameras": "101",
               "starttime": "2026-01-01 00:00", "schedule": "daily 01:00", "timezone": "UTC", "chunk": "12h",
               "name": "lobby"}
        assert api(url, "POST", "/api/tasks", json={"tasks": [row]}).status_code == 201

        def tasks():
            return api(url, path="/api/tasks?per_page=100").json()["tasks"]

        def run_night() -> list[dict]:
            assert start_client(procs, url, downloads, 2).wait(120) == 0
            return tasks()

        wait_for(lambda: len(tasks()) == 2, what="the first run's tasks")
        night1 = run_night()
        assert {(t["start"], t["state"]) for t in night1} == {
            ("2026-01-01T00:00:00", "done"), ("2026-01-01T12:00:00", "done")}

        nvr.faults(refuse_for=20)  # the NVR is down all night (20 s here)
        clock.jump_to(day(3))
        wait_for(lambda: len(tasks()) == 4, what="the second run's tasks")
        night2 = run_night()
        assert [t["state"] for t in night2 if t["start"].startswith("2026-01-02")] == ["failed", "failed"]

        wait_for(lambda: _answers(nvr), timeout=40, what="the NVR to be back in the morning")
        clock.jump_to(day(4))
        wait_for(lambda: len(tasks()) == 6, what="the third run's tasks")
        night3 = run_night()
        listed = api(url, path="/api/schedules").json()["schedules"]
        assert [(s["cadence"], s["runs"], s["next_window_start"]) for s in listed] == [
            ("daily 01:00", 3, "2026-01-04T00:00:00")]
        assert SIM_PASSWORD not in str(listed)
        assert api(url, "POST", f"/api/schedules/{listed[0]['id']}/cancel").json() == {"ok": True}
        assert api(url, path="/api/schedules").json()["schedules"] == []
        assert {t["state"] for t in night3} == {"done"}
        assert sorted(t["start"] for t in night3) == [f"2026-01-0{d}T{h:02d}:00:00" for d in (1, 2, 3) for h in (0, 12)]
    files = task_files(downloads)  # each recording in one place only
    assert files == nvr.expected(101, day(1, 0, 0, 0).replace(tzinfo=None), day(4, 0, 0, 0).replace(tzinfo=None))
    assert len(files) == 72


def _answers(nvr) -> bool:
    try:
        nvr.stats()
    except OSError:
        return False
    return True


def test_the_dashboard_and_status_list_schedules_and_a_click_stops_one(procs, tmp_path, browser):
    url = start_coordinator(procs, None, tmp_path / "ts.db").url
    rows = [{"server": "10.0.0.5", "username": "admin", "password": "Sched-pw-1", "cameras": "101,201",
             "starttime": "2030-01-01 00:00", "schedule": schedule, "timezone": "UTC", "name": name}
            for schedule, name in (("daily 01:00", "gate <b>nightly</b>"), ("every 6h", "yard"))]
    assert api(url, "POST", "/api/tasks", json={"tasks": rows}).status_code == 201
    listed = {s["name"]: s for s in api(url).json()["schedules"]}
    assert set(listed) == {"gate <b>nightly</b>", "yard"} and listed["yard"]["next_run_iso"].startswith("2030-01-01T")

    shown = taskserver("status", url=url).stdout
    assert "Schedules" in shown and "daily 01:00 UTC" in shown and "every 6h UTC" in shown
    assert "2030-01-01 00:00" in shown and "Sched-pw-1" not in shown

    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#schedules tr.schedule")
    assert page.is_visible("#schedules-box")
    cells = [c.strip() for c in page.inner_text(f"tr.schedule[data-id='{listed['yard']['id']}']").split("\t")]
    assert cells[1:5] == ["yard", "10.0.0.5", "101,201", "every 6h UTC"] and cells[6] == "2030-01-01 00:00:00"
    assert page.inner_text("#schedules").count("gate <b>nightly</b>") == 1  # a name shown as text
    page.click(f"button[data-unschedule='{listed['yard']['id']}']")
    page.wait_for_function("() => document.querySelectorAll('#schedules tr.schedule').length === 1")
    assert [s["name"] for s in api(url, path="/api/schedules").json()["schedules"]] == ["gate <b>nightly</b>"]
    assert "Sched-pw-1" not in page.content()
