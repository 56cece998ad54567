"""The worker protocol as a worker sees it, against the real coordinator under waitress."""
from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from .harness import (
    HEADER,
    PYTHON,
    FakeClock,
    T,
    api,
    claims_held,
    coordinator_in_process,
    start_coordinator,
    wait_for,
    write_sheet,
)

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "Pr0tocol-secret"


@pytest.fixture
def two_tasks(tmp_path):
    rows = [["10.1.1.1", "admin", PASSWORD, 101, T, T.replace(hour=1), "first"],
            ["10.1.1.2:8000", "admin", PASSWORD, "", T, T.replace(hour=1), "second"]]
    return write_sheet(tmp_path / "tasks.xlsx", rows, HEADER)


def claim(url, worker="w", token=None):
    return api(url, path=f"/api/claim?worker={worker}", token=token)


def test_claim_hands_out_one_task_with_credentials_and_a_lease_uncached(procs, tmp_path, two_tasks, db):
    url = start_coordinator(procs, two_tasks, db).url
    answer = claim(url)
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["status"] == "task"
    assert body["task"] | {"key": None} == {
        "id": 1, "key": None, "name": "first", "server": "10.1.1.1", "username": "admin", "password": PASSWORD,
        "cameras": ["101"], "start": "2026-01-01T00:00:00", "end": "2026-01-01T01:00:00", "takes_earlier": True,
        "timezone": None, "tls_fingerprint": None, "mode": "export", "options": {"row": "2"}, "attempt": 1,
        "max_attempts": 5}
    assert len(body["lease"]["id"]) == 32 and body["lease"]["seconds"] == 5
    assert claim(url).json()["task"]["cameras"] == []  # empty: every channel
    # Credentials only ever travel in a claim.
    assert PASSWORD not in api(url).text + api(url, path="/api/tasks/1").text


def test_three_answers_task_then_wait_while_leased_elsewhere_then_drained(procs, tmp_path, two_tasks, db):
    url = start_coordinator(procs, two_tasks, db).url
    a, b = claim(url, "a").json(), claim(url, "b").json()
    wait = claim(url, "c")
    assert wait.json() == {"status": "wait", "retry_after": 0.5}  # capped by --max-wait
    assert wait.headers["Retry-After"] == "1"
    for answer in (a, b):
        done = api(url, "POST", f"/api/tasks/{answer['task']['id']}/complete",
                   json={"lease": answer["lease"]["id"], "result": {"files": 1, "bytes": 10}})
        assert done.json() == {"ok": True}
    assert claim(url, "c").json() == {"status": "drained"}
    assert api(url).json()["drained"] is True


def test_completion_can_carry_the_next_claim(procs, tmp_path, two_tasks, db):
    url = start_coordinator(procs, two_tasks, db).url
    first = claim(url, "w").json()
    answer = api(url, "POST", "/api/tasks/1/complete",
                 json={"lease": first["lease"]["id"], "result": {}, "next": True, "worker": "w"}).json()
    assert answer["next"]["status"] == "task" and answer["next"]["task"]["id"] == 2
    repeat = api(url, "POST", "/api/tasks/1/complete", json={"lease": first["lease"]["id"], "result": {}})
    assert repeat.json() == {"ok": True}  # a retried completion is harmless


def test_failed_attempts_back_off_then_fail_for_good(procs, tmp_path, two_tasks, db):
    url = start_coordinator(procs, two_tasks, db, "--max-attempts", "2").url
    first = claim(url).json()
    answer = api(url, "POST", "/api/tasks/1/fail", json={"lease": first["lease"]["id"], "error": "NVR busy"})
    assert answer.json() == {"ok": True, "state": "waiting"}
    assert api(url, path="/api/tasks/1").json()["last_error"] == "NVR busy"
    second = claim(url).json()
    assert second["task"]["id"] == 2  # task 1 is backing off
    retry = wait_for(lambda: (c := claim(url).json())["status"] == "task" and c, what="task 1 to be ready")
    assert retry["task"]["id"] == 1 and retry["task"]["attempt"] == 2
    answer = api(url, "POST", "/api/tasks/1/fail", json={"lease": retry["lease"]["id"], "error": "NVR busy again"})
    assert answer.json()["state"] == "failed"
    task = api(url, path="/api/tasks/1").json()
    assert task["state"] == "failed" and task["attempts"] == 2 and task["last_error"] == "NVR busy again"


def test_release_requeues_without_charging_an_attempt(procs, tmp_path, two_tasks, db):
    url = start_coordinator(procs, two_tasks, db).url
    first = claim(url).json()
    assert api(url, "POST", "/api/tasks/1/release", json={"lease": first["lease"]["id"]}).status_code == 200
    assert api(url, path="/api/tasks/1").json()["state"] == "queued"
    again = claim(url).json()
    assert again["task"]["id"] == 1 and again["task"]["attempt"] == 1


def test_lease_expiry_and_heartbeats_over_http_on_the_coordinators_clock(tmp_path):
    clock = FakeClock()
    sheet = write_sheet(tmp_path / "t.xlsx", [["10.1.1.1", "admin", PASSWORD, 101, T, T.replace(hour=1)]], HEADER)
    with coordinator_in_process(tmp_path / "ts.db", clock, tasks=str(sheet), lease_seconds=60) as url:
        lease = claim(url, "beating").json()["lease"]["id"]
        for _ in range(4):  # 160 s in all, well past the lease: each beat moves its end on
            clock.advance(40)
            beat = api(url, "POST", "/api/tasks/1/heartbeat", json={"lease": lease, "progress": {"done": 1}})
            assert beat.json() == {"ok": True, "lease_seconds": 60}
        task = api(url, path="/api/tasks/1").json()
        assert task["state"] == "leased" and task["progress"] == {"done": 1}
        clock.advance(61)  # silence: the lease runs out
        task = api(url, path="/api/tasks/1").json()
        assert task["state"] == "queued" and task["attempts"] == 1
        assert task["last_error"] == "lease expired: worker beating stopped reporting"
        assert api(url, "POST", "/api/tasks/1/heartbeat", json={"lease": lease}).status_code == 409
        assert claim(url, "next").json()["task"]["attempt"] == 2


@pytest.mark.parametrize("body, message", [
    ({}, "'lease'"),
    ({"lease": 5}, "'lease'"),
    ({"lease": "x", "result": [1]}, "'result' must be an object"),
])
def test_malformed_reports_are_refused_with_a_clear_message(procs, tmp_path, two_tasks, body, message):
    url = start_coordinator(procs, two_tasks, tmp_path / "ts.db").url
    claim(url)
    answer = api(url, "POST", "/api/tasks/1/complete", json=body)
    assert answer.status_code == 400 and message in answer.json()["message"]
    assert api(url, path="/api/tasks/1").json()["state"] == "leased"
    assert api(url, "POST", "/api/tasks/99/complete", json={"lease": "x"}).status_code == 404
    assert claim(url, "bad worker name!").status_code == 400


def test_token_is_required_when_configured(procs, tmp_path, two_tasks):
    url = start_coordinator(procs, two_tasks, tmp_path / "ts.db", "--token", "s3cret", "--read-token", "look").url
    assert claim(url).status_code == 401
    assert claim(url, token="wrong").status_code == 401
    assert claim(url, token="look").status_code == 401  # the read-only token never gets credentials
    assert api(url, "POST", "/api/pause", token="look").status_code == 401
    # On loopback, read-only views need no token; a wrong one is still refused.
    assert api(url).status_code == 200 and api(url, token="wrong").status_code == 401
    assert claim(url, token="s3cret").json()["status"] == "task"
    assert api(url, path="/healthz").status_code == 200


def test_beyond_loopback_read_only_views_need_a_token_too(procs, tmp_path, two_tasks):
    proc = start_coordinator(procs, two_tasks, tmp_path / "ts.db", "--host", "0.0.0.0", "--token", "full",
                             "--read-token", "look")
    url = proc.url.replace("0.0.0.0", "127.0.0.1")
    for path in ("/api/status", "/api/tasks", "/api/tasks/1", "/metrics", "/api/report.xlsx"):
        assert api(url, path=path).status_code == 401, path
        assert api(url, path=path, token="look").status_code == 200, path
    assert api(url, "POST", "/api/tasks/1/cancel", token="look").status_code == 401
    assert api(url, "POST", "/api/tasks/1/cancel", token="full").status_code == 200


def test_listening_beyond_loopback_without_a_token_generates_one(procs, tmp_path, two_tasks):
    proc = start_coordinator(procs, two_tasks, tmp_path / "ts.db", "--host", "0.0.0.0")
    token = re.search(r"generated one \(shown once\):\s+(\S+)", proc.output()).group(1)
    url = proc.url.replace("0.0.0.0", "127.0.0.1")
    assert claim(url).status_code == 401
    assert claim(url, token=token).json()["status"] == "task"


def test_a_running_worker_reads_its_lease_and_learns_who_cancelled_its_task(procs, tmp_path, two_tasks, db):
    from taskclient.client import Coordinator

    url = start_coordinator(procs, two_tasks, db, "--token", "tok", "--read-token", "look").url
    worker = Coordinator([url], "host1/w0", token="tok")
    task = worker.claim()
    task_id, lease = task["task"]["id"], task["lease"]["id"]
    assert worker.lease_state(task_id, lease) == {"current": True, "state": "leased", "reason": None, "detail": None}
    feed = api(url, path="/api/events?follow=false&after=0", token="tok").text.count("event: task")
    assert worker.lease_state(task_id, lease)["current"]  # asking again ...
    assert api(url, path="/api/events?follow=false&after=0", token="tok").text.count("event: task") == feed  # writes nothing
    # The lease belongs to the worker protocol: the read-only token cannot ask.
    assert api(url, path=f"/api/tasks/{task_id}/lease?lease={lease}", token="look").status_code == 401
    assert api(url, path=f"/api/tasks/{task_id}/lease?lease=bad%20lease", token="tok").status_code == 400

    assert api(url, "POST", f"/api/tasks/{task_id}/cancel", token="tok").json()["state"] == "cancelled"
    assert worker.lease_state(task_id, lease) == {"current": False, "state": "cancelled", "reason": "cancelled",
                                                  "detail": "cancelled by an admin from 127.0.0.1"}
    log = api(url, path=f"/api/tasks/{task_id}", token="tok").json()["attempt_log"]
    assert (log[-1]["outcome"], log[-1]["error"]) == ("cancelled", "cancelled by an admin from 127.0.0.1")


def test_status_command_shows_progress_before_any_dashboard(procs, tmp_path, two_tasks, db):
    url = start_coordinator(procs, two_tasks, db, "--token", "tok").url
    first = claim(url, "host1/w0", token="tok").json()
    api(url, "POST", "/api/tasks/1/complete", token="tok",
        json={"lease": first["lease"]["id"], "result": {"files": 4, "bytes": 4000}})
    shown = subprocess.run([PYTHON, "-m", "taskserver", "status", "--url", url], capture_output=True, text=True,
                           env={**os.environ, "TASKSERVER_TOKEN": "tok"}, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "tasks 2: queued 1  leased 0  waiting 0  done 1  failed 0  cancelled 0" in shown.stdout
    assert f"coordinator {url}: running" in shown.stdout and "files 4  4.0 kB" in shown.stdout
    assert re.search(r"host1/w0 +idle +1 ", shown.stdout)
    refused = subprocess.run([PYTHON, "-m", "taskserver", "status", "--url", url, "--token", "bad"],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "refused the token (HTTP 401)" in refused.stderr


@pytest.mark.parametrize("argv", [["--app", "taskserver", "run"], ["run"]])
def test_flask_development_server_serves_the_same_app(procs, tmp_path, two_tasks, argv):
    env = {"TASKSERVER_TASKS": str(two_tasks), "TASKSERVER_DB": str(tmp_path / "dev.db")}
    proc = procs.start("flask", [PYTHON, "-m", "flask", *argv, "--port", "0"], ready=r"Running on (http://\S+)",
                       env=env, cwd=REPO)
    assert api(proc.url).json()["counts"]["queued"] == 2


def test_longest_ranges_go_first_and_work_spreads_over_nvrs(procs, tmp_path, db):
    rows = [["nvr-a", "u", "p", 101, T, T.replace(hour=1), "a 1h"],
            ["nvr-a", "u", "p", 101, T.replace(hour=1), T.replace(hour=4), "a 3h"],
            ["nvr-b", "u", "p", 101, T, T.replace(hour=2), "b 2h"],
            ["nvr-b", "u", "p", 201, T, T.replace(hour=2), "b 2h again"]]
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                            "--per-nvr", "10").url
    assert [claim(url).json()["task"]["name"] for _ in rows] == ["a 3h", "b 2h", "b 2h again", "a 1h"]

    even = [["nvr-a", "u", "p", c, T, T.replace(hour=1), f"a{c}"] for c in (101, 201, 301)]
    even += [["nvr-b", "u", "p", c, T, T.replace(hour=1), f"b{c}"] for c in (101, 201)]
    url = start_coordinator(procs, write_sheet(tmp_path / "e.xlsx", even, HEADER), tmp_path / "e.db",
                            "--per-nvr", "10", "--login-trials", "10").url  # order only: no password on trial
    assert [claim(url).json()["task"]["name"] for _ in even] == ["a101", "b101", "a201", "b201", "a301"]


def test_work_held_back_by_an_nvr_cap_means_wait_not_drained(procs, tmp_path, db):
    rows = [["nvr-a", "u", "p", c, T, T.replace(hour=1)] for c in (101, 201)]
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                            "--per-nvr", "1").url
    first = claim(url).json()
    assert claim(url).json()["status"] == "wait"
    assert api(url).json()["nvrs"] == [{"server": "nvr-a", "running": 1, "queued": 1, "max_parallel": 1,
                                        "resting_for": 0, "last_error": None, "done": 0, "failed": 0, "files": 0,
                                        "bytes": 0, "password_refused": [], "clock_offset": None,
                                        "nothing_found": 0}]
    api(url, "POST", f"/api/tasks/{first['task']['id']}/complete",
        json={"lease": first["lease"]["id"], "result": {"files": 2, "bytes": 5000}})
    nvr = api(url).json()["nvrs"][0]
    assert (nvr["running"], nvr["queued"], nvr["done"], nvr["files"], nvr["bytes"]) == (0, 1, 1, 2, 5000)
    assert claim(url).json()["status"] == "task"
    assert claim(url).json()["status"] == "wait"  # the last task is leased, not done: not drained yet


def held_claim(url: str, worker: str, seconds: float) -> dict:
    """A claim asking to be held; runs in a thread of its own, its answer in the returned dict."""
    answer: dict = {}

    def ask():
        answer.update(requests.get(f"{url}/api/claim?worker={worker}&wait={seconds}", timeout=120).json())
    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    answer["thread"] = thread
    return answer


def test_a_held_claim_takes_the_task_its_nvr_frees_the_moment_it_is_freed(procs, tmp_path, db):
    """A worker told to wait asks the coordinator to hold its claim; a completion or an import ends the hold
    at once with a task (the hint is 60 s here: without the wake-up, the answers would not come in time)."""
    rows = [["nvr-a", "u", "p", c, T, T.replace(hour=1)] for c in (101, 201)]
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                            "--per-nvr", "1", "--max-wait", "60", "--lease-seconds", "120").url
    first = claim(url, "a").json()
    assert claim(url, "b").json() == {"status": "wait", "retry_after": 60}
    waiting = held_claim(url, "b", 50)
    wait_for(lambda: claims_held(url) == 1, what="b's claim to be held")
    api(url, "POST", f"/api/tasks/{first['task']['id']}/complete", json={"lease": first["lease"]["id"], "result": {}})
    waiting["thread"].join(20)
    assert waiting["status"] == "task" and waiting["task"]["id"] == 2
    assert claims_held(url) == 0
    second = waiting

    # An import of work for another NVR ends a hold too; a heartbeat does not.
    waiting = held_claim(url, "c", 50)
    wait_for(lambda: claims_held(url) == 1, what="c's claim to be held")
    beat = api(url, "POST", "/api/tasks/2/heartbeat", json={"lease": second["lease"]["id"], "progress": None})
    assert beat.status_code == 200 and waiting["thread"].is_alive()
    added = api(url, "POST", "/api/tasks", json={"tasks": [{"server": "nvr-b", "user": "u", "password": "p",
                                                           "cameras": "101", "start": "2026-01-01",
                                                           "end": "2026-01-02"}]})
    assert added.status_code == 201
    waiting["thread"].join(20)
    assert waiting["status"] == "task" and waiting["task"]["server"] == "nvr-b"



def test_at_most_half_the_threads_hold_claims_and_a_bad_wait_is_refused(procs, tmp_path, db):
    rows = [["nvr-a", "u", "p", c, T, T.replace(hour=1)] for c in (101, 201)]
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                            "--per-nvr", "1", "--max-wait", "60", "--lease-seconds", "120", "--threads", "2").url
    first = claim(url, "a").json()
    waiting = held_claim(url, "b", 50)
    wait_for(lambda: claims_held(url) == 1, what="b's claim to be held")
    # The one thread that may hold is holding: another claim asking to be held is answered at once.
    assert api(url, path="/api/claim?worker=c&wait=50").json() == {"status": "wait", "retry_after": 60}
    for bad in ("-1", "61", "nan", "inf", "soon", "1" * 30, "5_0", "\u096b", "1e1", " 5"):
        answer = api(url, path=f"/api/claim?worker=d&wait={bad}")
        assert answer.status_code == 400 and "'wait' must be a number of seconds from 0 to 60" in answer.text, bad
    api(url, "POST", f"/api/tasks/{first['task']['id']}/release", json={"lease": first["lease"]["id"]})
    waiting["thread"].join(20)
    assert waiting["status"] == "task" and waiting["task"]["id"] == 1


def test_a_worker_that_hangs_up_while_its_claim_is_held_is_leased_nothing(procs, tmp_path, db):
    """Killed, or its network gone, while the coordinator held its claim: the task freed meanwhile goes to
    the next worker as its first attempt, not to the one that left (which would cost an attempt and a lease)."""
    import socket
    from urllib.parse import urlsplit

    rows = [["nvr-a", "u", "p", c, T, T.replace(hour=1)] for c in (101, 201)]
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                            "--per-nvr", "1", "--max-wait", "60", "--lease-seconds", "120").url
    first = claim(url, "a").json()
    where = urlsplit(url)
    gone = socket.create_connection((where.hostname, where.port))
    gone.sendall(f"GET /api/claim?worker=b&wait=50 HTTP/1.1\r\nHost: {where.netloc}\r\n\r\n".encode())
    wait_for(lambda: claims_held(url) == 1, what="b's claim to be held")
    gone.close()  # b is killed
    api(url, "POST", f"/api/tasks/{first['task']['id']}/complete", json={"lease": first["lease"]["id"], "result": {}})
    wait_for(lambda: claims_held(url) == 0, 20, what="the hold to end")
    nxt = claim(url, "c").json()
    assert nxt["status"] == "task" and nxt["task"]["id"] == 2 and nxt["task"]["attempt"] == 1, nxt
