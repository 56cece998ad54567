"""Watching and steering a run from scripts, and taking the outcome back to Excel."""
from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime

import pytest
from openpyxl import load_workbook

from .harness import (
    HEADER,
    PYTHON,
    SIM_PASSWORD,
    api,
    at,
    start_client,
    start_coordinator,
    start_nvr,
    status,
    write_sheet,
)

pytestmark = pytest.mark.slow


def test_scripts_find_tasks_poll_results_and_steer_the_run(procs, tmp_path, db):
    rows = [[f"nvr-{i % 2}", "admin", "pw", 101, at(i), at(i + 1), f"task {i}"] for i in range(5)]
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                            "--token", "tok").url

    def call(method, path, **kw):
        return api(url, method, path, token="tok", **kw)

    page = call("GET", "/api/tasks?state=queued&nvr=nvr-1&per_page=1&page=2").json()
    assert (page["total"], [t["name"] for t in page["tasks"]]) == (2, ["task 3"])
    assert [t["id"] for t in call("GET", "/api/tasks?order=newest").json()["tasks"]] == [5, 4, 3, 2, 1]
    assert call("GET", "/api/tasks?q=task 4").json()["total"] == 1
    assert call("GET", "/api/tasks?q=TASK 4").json()["total"] == 1  # search ignores case, on either database
    assert call("GET", "/api/tasks?q=%").json()["total"] == 0  # a literal %, not a wildcard

    claimed = call("GET", "/api/claim?worker=w").json()
    assert call("GET", f"/api/tasks/{claimed['task']['id']}/result").status_code == 404
    call("POST", f"/api/tasks/{claimed['task']['id']}/complete",
         json={"lease": claimed["lease"]["id"], "result": {"files": 2, "bytes": 20}})
    assert call("GET", "/api/tasks/done").json() == {"ids": [1]}
    assert call("GET", "/api/tasks/1/result").json() == {"id": 1, "result": {"files": 2, "bytes": 20}}

    # Cancel a running task: its worker's next report is refused, nothing of it is kept.
    running = call("GET", "/api/claim?worker=w").json()
    assert call("POST", f"/api/tasks/{running['task']['id']}/cancel").json() == {"ok": True, "state": "cancelled"}
    beat = call("POST", f"/api/tasks/{running['task']['id']}/heartbeat", json={"lease": running["lease"]["id"]})
    assert beat.status_code == 409
    assert call("POST", "/api/tasks/1/cancel").status_code == 409  # done stays done
    assert call("POST", f"/api/tasks/{running['task']['id']}/requeue").json()["state"] == "queued"
    assert call("POST", "/api/tasks/1/requeue").status_code == 409

    busy = call("GET", "/api/claim?worker=w").json()
    assert call("POST", "/api/pause").json()["paused"] is True
    assert call("GET", "/api/claim?worker=w").json()["status"] == "wait"
    # A completion's piggy-backed claim respects the pause too.
    answer = call("POST", f"/api/tasks/{busy['task']['id']}/complete",
                  json={"lease": busy["lease"]["id"], "result": {}, "next": True, "worker": "w"}).json()
    assert answer["next"]["status"] == "wait"
    assert status(url, token="tok")["paused"] is True
    call("POST", "/api/resume")
    assert call("GET", "/api/claim?worker=w").json()["status"] == "task"


@pytest.mark.parametrize("query, message", [
    ("state=lost", "state must be one of"),
    ("page=0", "page must be between 1"),
    ("per_page=x", "per_page must be a whole number"),
    ("order=random", "order must be one of"),
    ("colour=red", "unknown parameter(s): colour"),
])
def test_bad_queries_are_refused_clearly(procs, tmp_path, query, message):
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", [["h", "u", "p", 101, at(0), at(1)]], HEADER),
                            tmp_path / "ts.db").url
    answer = api(url, path=f"/api/tasks?{query}")
    assert answer.status_code == 400 and message in answer.json()["message"]
    assert api(url, path="/api/tasks/99").status_code == 404
    assert api(url, "POST", "/api/requeue", json={"everything": True}).status_code == 400


def test_the_excel_report_matches_the_database_cell_by_cell_and_holds_no_password(procs, tmp_path, db):
    nvr = start_nvr(procs, channels=2, hours=2)
    header = [*HEADER, "chunk"]
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101,201", at(0), at(2), "lobby", "1h"],
            [nvr.address, "viewer", "Wr0ng-pass", 101, at(0), at(1), "bad password", None]]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", header=header, rows=rows),
                                    db, "--max-attempts", "1", "--nvr-give-up", "2")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 2).wait(60) == 0

    export = subprocess.run([PYTHON, "-m", "taskserver", "export", str(tmp_path / "report.xlsx"), "--db",
                             str(db)], capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    downloaded = api(coordinator.url, path="/api/report.xlsx")
    assert downloaded.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    (tmp_path / "downloaded.xlsx").write_bytes(downloaded.content)

    for path in (tmp_path / "report.xlsx", tmp_path / "downloaded.xlsx"):
        with zipfile.ZipFile(path) as archive:
            text = b"".join(archive.read(name) for name in archive.namelist())
        assert SIM_PASSWORD.encode() not in text and b"Wr0ng-pass" not in text
        book = load_workbook(path)
        assert book.sheetnames == ["Rows", "NVRs", "Tasks", "Files"]
        tasks = book["Tasks"]
        assert tasks.freeze_panes == "A2" and tasks.auto_filter.ref == "A1:Q6" and tasks["A1"].font.bold
        for line in tasks.iter_rows(min_row=2, values_only=True):
            task = api(coordinator.url, path=f"/api/tasks/{line[0]}").json()
            result = task["result"] or {}
            last = task["attempt_log"][-1]
            assert line[1:10] == (task["source"], task["name"], task["server"], ",".join(task["cameras"]),
                                  datetime.fromisoformat(task["start"]), datetime.fromisoformat(task["end"]),
                                  task["state"], task["attempts"], task["worker"])
            assert line[14:17] == (result.get("files"), result.get("bytes"), task["last_error"])
            # Started and the time taken are the last attempt's, as Attempts and Worker are.
            assert line[10] == datetime.fromtimestamp(last["started"], UTC).replace(tzinfo=None, microsecond=0)
            assert line[12].total_seconds() == pytest.approx(last["ended"] - last["started"], abs=1)
            assert line[13] == datetime.fromtimestamp(task["started"], UTC).replace(tzinfo=None, microsecond=0)
        assert tasks["H2"].fill.start_color.rgb.endswith("C6EFCE")  # done in green
        rolled = [line for line in book["Rows"].iter_rows(min_row=2, values_only=True)]
        assert rolled == [
            ("t.xlsx, sheet 'tasks', row 2", "lobby", nvr.address, 4, 4, 0, 0, 0, 0, 24, sum(
                len(b) for track in (101, 201) for b in nvr.expected(track, at(0), at(2)).values()), "done"),
            ("t.xlsx, sheet 'tasks', row 3", "bad password", nvr.address, 1, 0, 0, 1, 0, 0, 0, 0, "failed"),
        ]
        assert [line for line in book["NVRs"].iter_rows(min_row=2, values_only=True)][0][:7] == (
            nvr.address, 5, 4, 0, 1, 0, 0)


def test_metrics_for_prometheus_agree_with_the_run(procs, tmp_path, db):
    from prometheus_client.parser import text_string_to_metric_families

    nvr = start_nvr(procs, channels=1, hours=2)
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(h), at(h + 1)] for h in (0, 1)]
    rows.append([nvr.address, "admin", SIM_PASSWORD, 901, at(0), at(1), "no such camera"])
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                                    "--max-attempts", "2", "--token", "tok")
    assert api(coordinator.url, path="/metrics", token="wrong").status_code == 401
    client = start_client(procs, coordinator.url, tmp_path / "dl", 2, "--token", "tok")
    assert client.wait(60) == 0
    text = api(coordinator.url, path="/metrics", token="tok").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("taskserver_tasks", (("state", "done"),))] == 2
    assert samples[("taskserver_tasks", (("state", "failed"),))] == 1
    assert samples[("taskserver_claims_total", ())] == 3  # 2 good tasks once, the missing camera once (for good)
    assert samples[("taskserver_completions_total", ())] == 2
    assert samples[("taskserver_failures_total", ())] == 1
    assert samples[("taskserver_bytes_downloaded_total", ())] == status(coordinator.url, token="tok")["bytes"] > 0
    assert samples[("taskserver_nvr_in_flight", (("nvr", nvr.address),))] == 0
    assert SIM_PASSWORD not in text


def test_tasks_posted_through_the_api_are_checked_like_sheet_rows_and_added_all_or_nothing(procs, tmp_path, db):
    url = start_coordinator(procs, None, db).url
    good = {"server": "10.0.0.5", "user": "admin", "password": "Api-secret", "cameras": "101,201",
            "start": "2026-01-01 00:00", "end": "2026-01-01T02:00:00", "name": "lobby"}
    bad = {**good, "starttime": "someday", "colour": "red"}
    bad.pop("start")
    refused = api(url, "POST", "/api/tasks", json={"tasks": [good, bad, "x"]})
    assert refused.status_code == 400
    assert refused.json()["message"].splitlines()[0] == "3 problem(s) in the request; nothing was imported:"
    assert refused.json()["message"].splitlines()[1:] == [
        "request, row 2, column colour: unknown field (known: cameras, chunk, content, endtime, id, max_parallel,"
        " name, password, priority, record_type, schedule, server, starttime, timezone, tls_fingerprint, username,"
        " window)",
        "request, row 2, column starttime: 'someday' is not a date-time (use e.g. 2026-01-31 08:00)",
        "request, row 3: each task must be an object",
    ]
    assert api(url).json()["tasks"] == 0  # nothing of the batch was added

    added = api(url, "POST", "/api/tasks", json={"tasks": [good], "chunk": "1h"})
    assert added.status_code == 201 and added.json()["added"] == 4  # 2 cameras x 2 hours
    again = api(url, "POST", "/api/tasks", json={"tasks": [good], "chunk": "1h"}).json()
    assert (again["added"], again["existing"], again["ids"]) == (0, 4, [])
    assert again["existing_ids"] == added.json()["ids"]  # a task posted again answers with the id it has
    task = api(url, path="/api/tasks/1").json()
    assert re.fullmatch(r"request of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, task 1 \(cam 101 chunk 1/2\)", task["source"])
    assert "Api-secret" not in str(task)
    # The same rows as a dry run: tasks of their own beside the real ones, listing and downloading nothing.
    dry = api(url, "POST", "/api/tasks", json={"tasks": [good], "dry_run": True})
    assert dry.status_code == 201 and dry.json()["added"] == 1
    listed = api(url, path=f"/api/tasks/{dry.json()['ids'][0]}").json()
    assert (listed["mode"], listed["name"], listed["key"].startswith("list:")) == ("list", "dry run: lobby", True)
    assert api(url, "POST", "/api/tasks", json={"tasks": [{**good, "schedule": "daily 01:00"}],
                                                "dry_run": True}).status_code == 400


@pytest.mark.parametrize("body, status, message", [
    ({"tasks": []}, 400, "'tasks' must be a non-empty list"),
    ({"tasks": [{"server": ["a"]}]}, 400, "expected text, a number or an ISO date-time"),
    ({"rows": []}, 400, 'expected {"tasks"'),
    ({"tasks": [{"server": "h", "username": "u", "password": "p", "starttime": "2026-01-01", "endtime": "2026-01-02",
                 "priority": "high"}]}, 400, "'high' is not a whole number"),
])
def test_bad_task_batches_are_refused_with_a_clear_message(procs, tmp_path, body, status, message, db):
    url = start_coordinator(procs, None, db).url
    answer = api(url, "POST", "/api/tasks", json=body)
    assert answer.status_code == status and message in answer.json()["message"]
    assert api(url).json()["tasks"] == 0
    assert api(url, path="/api/tasks/abc").status_code == 404


def test_the_report_opens_in_libreoffice(procs, tmp_path):
    office = shutil.which("soffice") or shutil.which("libreoffice")
    if office is None:
        pytest.skip("LibreOffice is not installed (apt-get install libreoffice-calc-nogui)")
    rows = [["nvr-1", "admin", "pw", 101, at(h), at(h + 1), f"hour {h}"] for h in range(3)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db")
    (tmp_path / "report.xlsx").write_bytes(api(coordinator.url, path="/api/report.xlsx").content)
    converted = subprocess.run(
        [office, f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}", "--headless", "--convert-to", "csv",
         "--outdir", str(tmp_path / "csv"), str(tmp_path / "report.xlsx")],
        capture_output=True, text=True, timeout=120)
    assert converted.returncode == 0, converted.stderr
    lines = (tmp_path / "csv" / "report.csv").read_text().splitlines()  # the first sheet: Rows
    assert lines[0] == "Sheet row,Name,NVR,Tasks,Done,Nothing found,Failed,Cancelled,Other,Files,Bytes,State"
    assert lines[1:] == [f"\"t.xlsx, sheet 'tasks', row {r}\",hour {r - 2},nvr-1,1,0,0,0,0,1,0,0,in progress"
                         for r in (2, 3, 4)]


def test_the_manifest_says_which_host_holds_each_file_and_scripts_find_a_camera_hour(procs, tmp_path, db):
    rows = [["nvr-a", "admin", "pw", 101, at(0), at(2), "lobby"]]
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db, "--token", "tok").url
    claimed = api(url, path="/api/claim?worker=host1-9/w0", token="tok").json()
    manifest = [{"path": f"nvr-a/Lobby/2026-01-01/{h:02d}00-{h + 1:02d}00.mp4", "size": 10 + h, "sha256": f"{h}" * 64,
                 "camera": "101", "camera_name": "Lobby", "start": at(h).isoformat(), "end": at(h + 1).isoformat()}
                for h in (0, 1)]
    api(url, "POST", f"/api/tasks/{claimed['task']['id']}/complete", token="tok",
        json={"lease": claimed["lease"]["id"], "result": {"files": 2, "bytes": 21, "manifest": manifest}})
    listed = api(url, path="/api/tasks/1/files", token="tok").json()["files"]
    assert [(f["host"], f["path"], f["size"], f["sha256"]) for f in listed] == [
        ("host1-9", m["path"], m["size"], m["sha256"]) for m in manifest]
    hour = api(url, path="/api/files?nvr=nvr-a&camera=101&from=2026-01-01T01:30&to=2026-01-01T01:40",
               token="tok").json()
    assert [f["path"] for f in hour["files"]] == [manifest[1]["path"]] and hour["next_after"] is None
    assert api(url, path="/api/files?from=yesterday", token="tok").status_code == 400
    assert api(url, path="/api/files?limit=0", token="tok").status_code == 400
    assert api(url, path="/api/tasks/99/files", token="tok").status_code == 404
