"""What a worker learns from the NVR itself: its clock and zone, its logins, and a dry run's listing.

The hikload runner runs in this process against a real nvrsim, as a worker process runs it.
"""
from __future__ import annotations

import io
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from taskclient import device, export
from taskclient.errors import TaskFailed
from taskclient.ledger import Ledger
from taskclient.posixtz import Zone, ZoneError
from taskclient.runners import Progress
from taskclient.runners.hikload import HikloadRunner

from .harness import (
    HEADER,
    SIM_PASSWORD,
    api,
    at,
    files_of,
    manifest_files,
    start_client,
    start_coordinator,
    start_nvr,
    status,
    task_files,
    write_sheet,
)


def run(nvr, tmp_path, password=SIM_PASSWORD, **fields):
    task = {"id": 1, "server": nvr.address, "username": "admin", "password": password, "cameras": ["101"],
            "start": at(0).isoformat(), "end": at(1).isoformat(), "takes_earlier": True, **fields}
    device._clocks.clear()  # as in a new worker process: the clock is read afresh
    return HikloadRunner(timeout=10).run(task, tmp_path / "dl" / "000001-t", Progress(), threading.Event())


@pytest.mark.fast
@pytest.mark.parametrize("text, iana", [
    ("CST-8:00:00", "Asia/Shanghai"),
    ("EET-2EEST,M3.5.0/3,M10.5.0/4", "Europe/Bucharest"),
    ("CST-2:00:00DST01:00:00,M3.5.0/03:00:00,M10.5.0/04:00:00", "Europe/Bucharest"),  # Hikvision's DST form
    ("EST5EDT,M3.2.0,M11.1.0", "America/New_York"),
    ("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney"),
    ("<-03>3", "America/Sao_Paulo"),
])
def test_posix_zones_convert_utc_as_the_iana_database_does(text, iana):
    zone = Zone.parse(text)
    moment = datetime(2025, 1, 1, tzinfo=UTC)
    while moment < datetime(2027, 1, 1, tzinfo=UTC):
        assert zone.to_local(moment) == moment.astimezone(ZoneInfo(iana)).replace(tzinfo=None), (text, moment)
        moment += timedelta(minutes=97)


@pytest.mark.fast
@pytest.mark.parametrize("text", ["", "CST", "+8:00", "CST-8:99", "X" * 200, "CET-1CEST,M13.1.0,M10.5.0"])
def test_text_that_is_no_posix_zone_is_refused(text):
    with pytest.raises(ZoneError):
        Zone.parse(text)


def test_the_device_clock_offset_and_zone_are_reported_with_a_warning_beyond_a_minute(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, extra=("--clock-offset", "-300", "--zone", "CST-8:00:00"))
    result = run(nvr, tmp_path)
    assert result["files"] == 6
    clock = result["device"]
    assert abs(clock["clock_offset"] + 300) <= 3 and clock["zone"] == "CST-8:00:00" and clock["time_mode"] == "NTP"
    assert result["warnings"] == [f"NVR {nvr.address} clock is {abs(clock['clock_offset'])} s behind this worker's"]

    on_time = start_nvr(procs, channels=1, hours=1)
    result = run(on_time, tmp_path / "b")
    assert abs(result["device"]["clock_offset"]) <= 3 and result["warnings"] == []


def test_timezone_auto_converts_utc_times_with_the_device_zone(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=3, extra=("--zone", "CST-8:00:00"))
    # 17:00-18:00 UTC on 31 December is 01:00-02:00 on the device's own clock (UTC+8).
    result = run(nvr, tmp_path, start="2025-12-31T17:00:00+00:00", end="2025-12-31T18:00:00+00:00", timezone="auto")
    assert manifest_files(result, tmp_path / "dl") == nvr.expected(101, at(1), at(2)) and result["files"] == 6

    # Without "auto" the times are the NVR's own (today's behaviour).
    result = run(nvr, tmp_path / "b", start=at(2).isoformat(), end=at(3).isoformat())
    assert set(manifest_files(result, tmp_path / "b" / "dl")) == set(nvr.expected(101, at(2), at(3)))


def test_a_camera_the_device_lacks_is_named_with_the_ones_it_has(procs, tmp_path):
    nvr = start_nvr(procs, channels=4, hours=1)
    with pytest.raises(TaskFailed) as missing:
        run(nvr, tmp_path, cameras=["101201", "201"])
    assert str(missing.value) == f"NVR {nvr.address} has no camera 101201; it has 101, 201, 301, 401"
    assert missing.value.permanent and nvr.stats()["searches"] == 0


def test_a_dry_run_lists_counts_and_sizes_and_downloads_nothing(procs, tmp_path):
    nvr = start_nvr(procs, channels=2, hours=2)
    result = run(nvr, tmp_path, cameras=["101", "201"], mode="list")
    per = {t: nvr.catalogue.recordings(t, at(0), at(1)) for t in (101, 201)}
    assert result["files"] == 0 and result["bytes"] == 0
    assert result["listing"] == {
        "recordings": 12, "bytes": sum(r.size for rs in per.values() for r in rs),
        "cameras": {str(t): {"recordings": len(rs), "bytes": sum(r.size for r in rs)} for t, rs in per.items()}}
    assert nvr.stats()["downloads_started"] == 0 and not (tmp_path / "dl").exists()


def test_a_wrong_password_is_tried_once_and_a_lockout_says_how_long(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, extra=("--lock-after", "2", "--lock-for", "600"))
    with pytest.raises(TaskFailed) as refused:
        run(nvr, tmp_path, password="wrong")
    assert refused.value.device == "auth" and refused.value.locked_for is None
    assert str(refused.value) == (f"NVR {nvr.address} refused the password of user 'admin' (HTTP 401 Unauthorized);"
                                  " 1 login attempt(s) left before the device locks it")
    assert nvr.stats()["unauthorized"] == 1  # one refused login per attempt, never retried

    with pytest.raises(TaskFailed) as locked:
        run(nvr, tmp_path, password="wrong")
    assert locked.value.device == "auth" and locked.value.locked_for == 600
    with pytest.raises(TaskFailed) as still:  # now even the right password is refused, as devices do
        run(nvr, tmp_path)
    assert still.value.device == "auth" and 590 <= still.value.locked_for <= 600
    assert "has locked the login of user 'admin' for" in str(still.value)
    assert nvr.stats()["unauthorized"] == 2


@pytest.mark.slow
def test_a_dry_run_sizes_the_export_before_it_runs_and_the_nvr_row_shows_the_device_clock(procs, tmp_path,
                                                                                        browser):
    nvr = start_nvr(procs, channels=2, hours=2, extra=("--clock-offset", "300"))
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, "101,201", at(0), at(1), "yard"]],
                        HEADER)
    db = tmp_path / "ts.db"
    coordinator = start_coordinator(procs, None, db)
    taskserver = [sys.executable, "-m", "taskserver", "import", str(sheet), "--db", str(db)]
    subprocess.run([*taskserver, "--dry-run"], check=True, capture_output=True)
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0

    dry = api(coordinator.url, path="/api/tasks/1").json()
    per = {t: nvr.catalogue.recordings(t, at(0), at(1)) for t in (101, 201)}
    assert dry["state"] == "done" and dry["result"]["files"] == 0
    assert dry["result"]["listing"] == {
        "recordings": 12, "bytes": sum(r.size for rs in per.values() for r in rs),
        "cameras": {str(t): {"recordings": len(rs), "bytes": sum(r.size for r in rs)} for t, rs in per.items()}}
    assert dry["result"]["warnings"] == [f"NVR {nvr.address} clock is {dry['result']['device']['clock_offset']} s"
                                         " ahead of this worker's"]
    assert nvr.stats()["downloads_started"] == 0 and task_files(tmp_path / "dl") == {}
    (row,) = status(coordinator.url)["nvrs"]
    assert abs(row["clock_offset"] - 300) <= 3
    # The dashboard and the report say what the export would bring, per row and per camera.
    total_mb = f"{dry['result']['listing']['bytes'] / 1e6:.1f}"
    page = browser.new_page()
    page.goto(coordinator.url)
    page.wait_for_selector("#rows >> text=would export")
    assert f"done; dry run: would export 12 recording(s), {total_mb} MB" in page.inner_text("#rows")
    assert page.inner_text("tr.task[data-id='1'] td.progress") == f"would export 12, {total_mb} MB"
    page.click("tr.task[data-id='1'] td:nth-child(2)")
    page.wait_for_selector("#detail table.listing")
    cells = [[c.strip() for c in line.split("\t")] for line in page.inner_text("#detail table.listing").splitlines()]
    assert cells == [["camera", "recordings", "MB"], *(
        [str(t), str(len(rs)), f"{sum(r.size for r in rs) / 1e6:.1f}"] for t, rs in per.items())]
    report = load_workbook(io.BytesIO(api(coordinator.url, path="/api/report.xlsx").content))
    assert [line[3:6] for line in report["Dry run"].iter_rows(min_row=2, values_only=True)] == [
        *((str(t), len(rs), sum(r.size for r in rs)) for t, rs in per.items()),
        ("all", 12, dry["result"]["listing"]["bytes"])]

    subprocess.run(taskserver, check=True, capture_output=True)  # now the real export of the same sheet
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0
    assert task_files(tmp_path / "dl") == {**nvr.expected(101, at(0), at(1)), **nvr.expected(201, at(0), at(1))}


@pytest.mark.slow
def test_a_sheet_with_timezone_auto_exports_the_hour_a_utc_report_names_on_each_nvrs_own_clock(procs, tmp_path):
    # The same UTC hour is 01:00 on a device at UTC+8 and 03:00 on one at UTC+10 (its own POSIX rule).
    shanghai = start_nvr(procs, channels=1, hours=4, extra=("--zone", "CST-8:00:00"))
    sydney = start_nvr(procs, channels=1, hours=4, extra=("--zone", "AEST-10"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101", "2025-12-31T17:00:00Z", "2025-12-31T18:00:00Z", name, "auto"]
            for nvr, name in ((shanghai, "shanghai"), (sydney, "sydney"))]
    sheet = write_sheet(tmp_path / "t.xlsx", rows, [*HEADER, "timezone"])
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 2).wait(60) == 0
    for task_id, (nvr, hour) in enumerate(((shanghai, 1), (sydney, 3)), start=1):
        task = api(coordinator.url, path=f"/api/tasks/{task_id}").json()
        assert task["state"] == "done", task["last_error"]
        assert files_of(coordinator.url, task_id, tmp_path / "dl") == nvr.expected(101, at(hour), at(hour + 1))
        assert task["result"]["device"]["zone"] == ("CST-8:00:00" if hour == 1 else "AEST-10")


def test_files_complete_on_disk_are_in_the_ledger_while_the_task_still_runs(procs, tmp_path, monkeypatch):
    """A worker killed mid-task (no `finally` runs) must not leave complete files that no ledger knows."""
    monkeypatch.setattr(export, "RECORD_EVERY", 0.0)
    nvr = start_nvr(procs, channels=1, hours=1)
    seen = []

    class Watching(Progress):
        def update(self, **values):
            super().update(**values)
            if values.get("done") == 3:  # three files written, three still to come
                seen.append(sum(1 for e in Ledger(tmp_path / "dl").entries().values() if e.get("sha256")))

    task = {"id": 1, "server": nvr.address, "username": "admin", "password": SIM_PASSWORD, "cameras": ["101"],
            "start": at(0).isoformat(), "end": at(1).isoformat(), "takes_earlier": True}
    result = HikloadRunner(timeout=10).run(task, tmp_path / "dl" / "000001-t", Watching(), threading.Event())
    assert result["files"] == 6 and seen == [3]
    assert len((tmp_path / "dl" / "SHA256SUMS").read_text().splitlines()) == 6
