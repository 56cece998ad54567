"""The coordinator's log tells the run's story, including what commands and other coordinators changed."""
from __future__ import annotations

import signal
import subprocess

from .harness import HEADER, PYTHON, api, at, start_coordinator, wait_for, write_sheet


def command(*argv: str) -> str:
    done = subprocess.run([PYTHON, "-m", "taskserver", *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_log_shows_imports_and_requeues_made_by_commands_the_drain_and_the_stop(procs, tmp_path, db):
    rows = [["nvr-1", "admin", "pw", 101, at(h), at(h + 1), f"hour {h}"] for h in (0, 1)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db, "--max-attempts", "1")
    url = coordinator.url
    # More work imported by a command, in a process of its own, while the coordinator runs.
    more = write_sheet(tmp_path / "more.xlsx", [["nvr-2", "admin", "pw", 101, at(0), at(1), "late"]], HEADER)
    assert "1 task(s) added" in command("import", str(more), "--db", str(db))
    wait_for(lambda: "imported (not through this coordinator): 1 task(s) added" in coordinator.output(),
             what="the command's import in the coordinator's log")

    claimed = api(url, path="/api/claim?worker=host/w0").json()
    api(url, "POST", f"/api/tasks/{claimed['task']['id']}/fail",
        json={"lease": claimed["lease"]["id"], "error": "disk on fire", "permanent": True})
    printed = command("requeue", "--db", str(db))
    assert f"1 task(s) queued again: {claimed['task']['id']}" in printed
    line = wait_for(lambda: next((line for line in coordinator.output().splitlines()
                                  if "requeued (not through this coordinator)" in line), None),
                    what="the command's requeue in the coordinator's log")
    assert f"1 task(s): {claimed['task']['id']}; requeued by taskserver requeue (" in line

    # What this coordinator did itself is logged once, where it did it.
    for task in (1, 2, 3):
        api(url, "POST", f"/api/tasks/{task}/cancel")
    wait_for(lambda: "queue drained: 0 done, 0 failed, 3 cancelled" in coordinator.output(), what="the drain logged")
    log = coordinator.output()
    assert log.count("cancelled by an admin from 127.0.0.1") == 3
    assert "cancelled (not through this coordinator)" not in log

    coordinator.kill(signal.SIGTERM)
    assert coordinator.wait(30) == 0
    log = coordinator.output()
    assert "stopping (SIGTERM received)" in log and log.rstrip().endswith("coordinator stopped")
    assert "Traceback" not in log
