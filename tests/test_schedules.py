"""Nightly exports, unattended: a schedule exports each day once, and a night that failed is caught up."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from .harness import (
    SIM_PASSWORD,
    OffsetClock,
    api,
    coordinator_in_process,
    start_client,
    start_nvr,
    task_files,
    wait_for,
)

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
