"""A worker host as a service: it stays when the queue drains, outlives coordinator restarts, stops cleanly."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

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
    task_files,
    wait_for,
    write_sheet,
)

pytestmark = pytest.mark.slow


def import_sheet(tmp_path, db, name: str, rows: list[list]) -> None:
    sheet = write_sheet(tmp_path / f"{name}.xlsx", rows, HEADER)
    done = subprocess.run([PYTHON, "-m", "taskserver", "import", str(sheet), "--db", str(db)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def drained(url: str) -> bool:
    answer = status(url)
    return answer["drained"] and answer["counts"]["done"] == answer["tasks"]


def test_a_service_host_runs_two_imports_across_a_drain_and_a_coordinator_restart_then_stops_cleanly(
        procs, tmp_path):
    nvr = start_nvr(procs, channels=2, hours=3, size=60_000, extra=("--delay", "0.02"))
    db = tmp_path / "ts.db"  # the host's side is the story here; the stores' contract is tested elsewhere
    first = [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "first night"]]
    sheet = write_sheet(tmp_path / "first.xlsx", first, HEADER)
    coordinator = start_coordinator(procs, sheet, db)
    port = int(coordinator.url.rsplit(":", 1)[1])
    host = start_client(procs, coordinator.url, tmp_path / "dl", 2, "--service", "--drained-poll", "1",
                        "--name", "nvr-exporter")

    wait_for(lambda: drained(coordinator.url), 60, what="the first import to be exported")
    wait_for(lambda: "queue drained; waiting for new work" in host.output(), 30, what="the host to say it waits")
    assert host.popen.poll() is None, "a service host stays when the queue drains"
    workers = [w for w in status(coordinator.url)["workers"] if w["name"].startswith("nvr-exporter")]
    assert len(workers) == 2 and {w["state"] for w in workers} == {"ok"}, workers

    # The coordinator restarts (an upgrade, a reboot) while the host waits; then a second import arrives.
    coordinator.kill(signal.SIGTERM)
    assert coordinator.wait(30) == 0  # a stop, as a service manager sends it, ends the coordinator cleanly
    coordinator = start_coordinator(procs, None, db, port=port)
    import_sheet(tmp_path, db, "second", [[nvr.address, "admin", SIM_PASSWORD, 201, at(1), at(2), "second night"]])
    wait_for(lambda: drained(coordinator.url) and status(coordinator.url)["tasks"] == 2, 60,
             what="the second import to be exported by the same host")
    assert host.popen.poll() is None
    assert task_files(tmp_path / "dl") == {**nvr.expected(101, at(0), at(1)), **nvr.expected(201, at(1), at(2))}

    # A third import is running when the service manager stops the host: its task goes back, uncharged.
    nvr.faults(delay=0.5)  # each 64 KiB block now takes half a second: the task is mid-download when stopped
    import_sheet(tmp_path, db, "third", [[nvr.address, "admin", SIM_PASSWORD, 101, at(2), at(3), "third night"]])
    wait_for(lambda: (api(coordinator.url, path="/api/tasks/3").json()["progress"] or {}).get("bytes", 0) > 0, 60,
             what="the third import's task to be downloading")
    host.kill(signal.SIGTERM)
    assert host.wait(60) == 0, host.output()[-3000:]
    task = api(coordinator.url, path="/api/tasks/3").json()
    assert task["state"] == "queued" and task["attempts"] == 0
    assert [a["outcome"] for a in task["attempt_log"]] == ["released"]
    assert task["attempt_log"][0]["error"] == "host nvr-exporter stopping"
    workers = [w for w in status(coordinator.url)["workers"] if w["name"].startswith("nvr-exporter")]
    assert len(workers) == 2 and all(w["state"] == "stopped" and not w["lost"] for w in workers), workers
    assert not [p for p in (tmp_path / "dl").rglob("*.part")]


def test_a_stop_sent_to_every_process_of_the_host_still_hands_the_running_task_back(procs, tmp_path):
    # systemd's default (KillMode=control-group) and `kill -TERM -<pgid>` signal the workers too, not only the host.
    nvr = start_nvr(procs, channels=1, hours=1, size=60_000, extra=("--delay", "0.5"))
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "slow"]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db")
    host = start_client(procs, coordinator.url, tmp_path / "dl", 2, "--service", "--name", "grouped")
    wait_for(lambda: (api(coordinator.url, path="/api/tasks/1").json()["progress"] or {}).get("bytes", 0) > 0, 60,
             what="the task to be downloading")
    os.killpg(host.pid, signal.SIGTERM)
    assert host.wait(60) == 0, host.output()[-3000:]
    task = api(coordinator.url, path="/api/tasks/1").json()
    # The idle worker's held claim may take the task its colleague gave back, and give it back in turn.
    assert task["state"] == "queued" and task["attempts"] == 0 and task["attempt_log"]
    assert all(a["outcome"] == "released" and a["error"] == "host grouped stopping" for a in task["attempt_log"])
    workers = [w for w in status(coordinator.url)["workers"] if w["name"].startswith("grouped")]
    assert len(workers) == 2 and all(w["state"] == "stopped" for w in workers), workers


def test_a_stop_sent_to_the_whole_group_leaves_a_commands_task_uncharged(procs, tmp_path):
    """The runner's command (and ffmpeg, rclone) run in sessions of their own: a SIGTERM to the host's
    process group reaches the worker, which gives the task back, not the command, whose death would
    have been reported as a failed attempt ("command exited with -15")."""
    sheet = write_sheet(tmp_path / "t.xlsx", [["10.9.8.1", "admin", "pw", 101, at(0), at(1), "long job"]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db")
    started = tmp_path / "started"
    script = tmp_path / "job.py"
    script.write_text(f"import pathlib, time\npathlib.Path({str(started)!r}).write_text('x')\ntime.sleep(60)\n")
    host = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--service", "--name", "grouped",
                        "--runner", "command", "--command", f"{PYTHON} {script}")
    wait_for(started.exists, 60, what="the command to be running")
    os.killpg(host.pid, signal.SIGTERM)
    assert host.wait(60) == 0, host.output()[-3000:]
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "queued" and task["attempts"] == 0, task
    assert [a["outcome"] for a in task["attempt_log"]] == ["released"], task["attempt_log"]
