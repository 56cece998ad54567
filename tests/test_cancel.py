"""Cancelling a running export: its worker stops within seconds, not at its next heartbeat, says who
cancelled it, leaves none of its files behind, and goes on with the next task."""
from __future__ import annotations

import pytest

from .harness import (
    HEADER,
    SIM_PASSWORD,
    api,
    at,
    exported,
    start_client,
    start_coordinator,
    start_nvr,
    wait_for,
    write_sheet,
)

pytestmark = pytest.mark.slow


def test_a_cancelled_running_task_stops_at_once_and_leaves_no_files(procs, tmp_path):
    # Six recordings of 2 MB, each sent slowly: the first task runs for several seconds.
    nvr = start_nvr(procs, channels=1, hours=2, size=2_000_000, extra=("--delay", "0.02"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "long"],
            [nvr.address, "admin", SIM_PASSWORD, 101, at(1), at(2), "next"]]
    # A long lease: heartbeats come every 60 s, so only the lease read can stop the task in time.
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--lease-seconds", "180", "--per-nvr", "1")
    url = coordinator.url
    downloads = tmp_path / "dl"
    client = start_client(procs, url, downloads, 1)
    first = wait_for(lambda: next(iter(exported(downloads)), None), what="task 1's first file")

    assert api(url, "POST", "/api/tasks/1/cancel").json()["state"] == "cancelled"
    # Well inside the heartbeat's 60 s: the worker learnt it from its lease read.
    wait_for(lambda: "cancelled by an admin from 127.0.0.1" in client.output(), timeout=30,
             what="the worker to say who cancelled its task")
    assert not first.exists() and exported(downloads) == []  # removed: nobody would ever have recorded them
    assert not (downloads / "SHA256SUMS").exists()  # no file left to list
    line = next(line for line in client.output().splitlines() if "cancelled by an admin" in line)
    assert "task 1" in line and "removed the" in line and "file(s)" in line

    assert client.wait(120) == 0  # the next task ran, then the queue drained
    done = api(url, path="/api/tasks/2").json()
    assert done["state"] == "done" and done["result"]["files"] == 6
    attempt = api(url, path="/api/tasks/1").json()["attempt_log"][-1]
    assert (attempt["outcome"], attempt["error"]) == ("cancelled", "cancelled by an admin from 127.0.0.1")
    assert len(exported(downloads)) == 6  # task 2's files only


def test_a_short_running_task_shows_its_progress_long_before_its_first_heartbeat(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, size=2_000_000, extra=("--delay", "0.03"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "short"]]
    # Heartbeats every 60 s: the task is over long before the first one.
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--lease-seconds", "180")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    seen = wait_for(lambda: (lambda t: t if t["state"] == "leased" and (t["progress"] or {}).get("total") else None)(
        api(coordinator.url, path="/api/tasks/1").json()), timeout=30, what="task 1's progress while it runs")
    assert seen["progress"]["total"] == 6 and 0 <= seen["progress"]["done"] < 6
    assert client.wait(60) == 0
    done = api(coordinator.url, path="/api/tasks/1").json()
    assert done["state"] == "done" and done["progress"] is None and done["result"]["files"] == 6
