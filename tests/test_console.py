"""`taskserver status` and `taskserver watch` in a terminal: the truth in words and human units, and no tracebacks."""
from __future__ import annotations

import os
import socket
import subprocess

from .harness import HEADER, PYTHON, api, at, start_coordinator, wait_for, write_sheet

ENV = {k: v for k, v in os.environ.items() if k not in ("TASKSERVER_URL", "TASKSERVER_TOKEN")}


def taskserver(*argv: str, url: str | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """A `taskserver` command with the coordinator's URL in TASKSERVER_URL, as an operator's shell would have it."""
    env = {**ENV, **({"TASKSERVER_URL": url} if url else {})}
    return subprocess.run([PYTHON, "-m", "taskserver", *argv], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_pipe() -> int:
    """A pipe whose reader has already gone, as `| head` is once it has read its lines."""
    read, write = os.pipe()
    os.close(read)
    return write


def test_status_says_paused_lists_each_nvr_in_human_units_and_the_last_drain(procs, tmp_path):
    rows = [["10.0.0.5", "admin", "pw", 101, at(h), at(h + 1), f"hour {h}"] for h in range(3)]
    rows.append(["10.0.0.6:8000", "viewer", "Wrong-pw", 101, at(0), at(1), "wrong password"])
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                            "--lease-seconds", "60").url

    def claim(task_id: int) -> str:
        claimed = api(url, path="/api/claim?worker=host-1/w0").json()
        assert claimed["task"]["id"] == task_id, claimed  # the NVR with fewer running tasks goes first
        return claimed["lease"]["id"]

    first, fourth = claim(1), claim(4)
    api(url, "POST", "/api/tasks/1/complete", json={"lease": first, "result": {"files": 0, "bytes": 0}})
    api(url, "POST", "/api/tasks/4/fail", json={"lease": fourth, "device": "auth",
                                                "error": "NVR 10.0.0.6:8000 refused the password of user 'viewer'"})
    api(url, "POST", "/api/tasks/2/complete", json={"lease": claim(2), "result": {
        "files": 12, "bytes": 1_534_000_000, "device": {"clock_offset": 12.4}}})
    api(url, "POST", "/api/pause")

    shown = taskserver("status", url=url)  # no --url: TASKSERVER_URL, as for worker hosts
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"coordinator {url}: PAUSED: no work is handed out" in out
    assert "done 2 (1 nothing found)" in out and "files 12  1.53 GB" in out
    nvr = next(line for line in out.splitlines() if line.strip().startswith("10.0.0.5 "))
    assert nvr.split()[:8] == ["10.0.0.5", "0/2", "1", "2", "1", "0", "1.53", "GB"]
    assert "+12 s" in nvr
    assert "10.0.0.6:8000: password refused for user 'viewer': tasks held until it is corrected" in out
    assert "refused the password of user 'viewer'" in next(line for line in out.splitlines()
                                                           if line.strip().startswith("10.0.0.6:8000 "))
    assert "host-1/w0" in out and " ago" in out

    # Read by `head`, which stops reading: no traceback, however much there was left to print.
    piped = taskserver("status", url=url, stdout=closed_pipe())
    assert piped.returncode == 0 and piped.stderr == ""

    api(url, "POST", "/api/resume")
    for task in (3, 4):
        api(url, "POST", f"/api/tasks/{task}/cancel")
    wait_for(lambda: api(url).json()["last_drain"], what="the drain's summary")
    drained = taskserver("status", "--url", url, url="http://127.0.0.1:9/").stdout  # --url comes first
    assert f"coordinator {url}: DRAINED" in drained
    assert "last drain " in drained and "queue drained: 2 done, 0 failed, 2 cancelled; 12 files, 1.53 GB" in drained


def test_status_and_watch_say_plainly_that_no_coordinator_answers(procs, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    down = taskserver("status", url=url)
    assert down.returncode == 1 and down.stdout == ""
    assert down.stderr.strip() == (f"taskserver: no coordinator answers at {url} (connection refused); is it running?"
                                   " Give its address with --url or TASKSERVER_URL")

    watch = procs.start("watch", [PYTHON, "-m", "taskserver", "watch"], env={"TASKSERVER_URL": url})
    wait_for(lambda: "no coordinator answers" in watch.output(), what="watch to say the coordinator is down")
    rows = [["10.0.0.5", "admin", "pw", 101, at(h), at(h + 1), f"hour {h}"] for h in range(2)]
    start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db", port=port)
    wait_for(lambda: "answers again" in watch.output(), what="watch to reconnect")
    wait_for(lambda: "-- queued 2" in watch.output(), what="the first summary")
    claimed = api(url, path="/api/claim?worker=host-1/w0").json()
    api(url, "POST", "/api/tasks/1/complete", json={"lease": claimed["lease"]["id"], "result": {"files": 0}})
    assert api(url, path="/api/claim?worker=host-1/w1").json()["task"]["id"] == 2
    api(url, "POST", "/api/tasks/2/cancel")
    # The worker held the task; the admin cancelled it.
    wait_for(lambda: "task 2 cancelled (was on host-1/w1): cancelled by an admin from 127.0.0.1" in watch.output(),
             what="the cancel")
    lines = watch.output().splitlines()
    assert any(line.endswith("task 1 done by host-1/w0: nothing found") for line in lines)
    assert sum("no coordinator answers" in line for line in lines) == 1  # once per outage, not once per retry
    assert "Traceback" not in watch.output() and "urllib3" not in watch.output()

    piped = subprocess.run([PYTHON, "-m", "taskserver", "watch"], stdout=closed_pipe(), stderr=subprocess.PIPE,
                           text=True, env={**ENV, "TASKSERVER_URL": url}, timeout=60)
    assert piped.returncode == 0 and "Traceback" not in piped.stderr
