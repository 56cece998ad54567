"""A wrong NVR password must not lock the site out: at most two refused logins, then the fix finishes the job.

The worker reports a refused login as `device: "auth"`; the coordinator then holds the
NVR/user pair's tasks (no attempt charged, no more logins) until a corrected password arrives.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from .harness import (
    HEADER,
    SIM_PASSWORD,
    api,
    at,
    files_of,
    start_client,
    start_coordinator,
    start_nvr,
    status,
    task_files,
    wait_for,
    write_sheet,
)

pytestmark = pytest.mark.slow


def test_a_wrong_password_costs_at_most_two_logins_whatever_the_cap_and_a_corrected_one_finishes_the_job(
        procs, tmp_path):
    locked = start_nvr(procs, channels=2, hours=2, extra=("--lock-after", "3", "--lock-for", "600"))
    other = start_nvr(procs, channels=1, hours=1)
    header = [*HEADER, "chunk"]
    rows = [[locked.address, "admin", "typo-password", "101,201", at(0), at(2), "gate", "12m"],
            [other.address, "admin", SIM_PASSWORD, "101", at(0), at(1), "lobby", None]]
    sheet = write_sheet(tmp_path / "t.xlsx", rows, header)
    db = tmp_path / "ts.db"
    # Five workers and five slots per NVR: the password is tried by two tasks at most all the same.
    coordinator = start_coordinator(procs, sheet, db, "--max-attempts", "5", "--per-nvr", "5")
    assert status(coordinator.url)["tasks"] == 21  # 20 chunks of the wrong password, 1 elsewhere
    client = start_client(procs, coordinator.url, tmp_path / "dl", 5, "--window", "whole")  # 12-minute chunks

    def refused_on_the_nvr_row():
        return any(n["password_refused"] for n in status(coordinator.url)["nvrs"] if n["server"] == locked.address)
    wait_for(refused_on_the_nvr_row, what="the NVR row to show the refused password")
    wait_for(lambda: api(coordinator.url, path="/api/tasks/21").json()["state"] == "done", what="the other NVR")
    assert locked.stats()["unauthorized"] <= 2 and locked.stats()["locked_answers"] == 0

    rows[0][2] = SIM_PASSWORD
    fixed = write_sheet(tmp_path / "t.xlsx", rows, header)
    subprocess.run([sys.executable, "-m", "taskserver", "import", str(fixed), "--db", str(db)], check=True,
                   capture_output=True)
    assert client.wait(120) == 0
    assert status(coordinator.url)["counts"]["done"] == 21
    assert files_of(coordinator.url, 21, tmp_path / "dl") == other.expected(101, at(0), at(1))
    for f in api(coordinator.url, path="/api/tasks/21/files").json()["files"]:  # same camera names and hours
        (tmp_path / "dl" / f["path"]).unlink()
    assert task_files(tmp_path / "dl") == {**locked.expected(101, at(0), at(2)), **locked.expected(201, at(0), at(2))}
    assert locked.stats()["unauthorized"] <= 2
