"""Running `taskclient` on a worker host: stopping it, misconfiguring it, other runners."""
from __future__ import annotations

import os
import signal
import sys

import psutil
import pytest

from .harness import (
    HEADER,
    SIM_PASSWORD,
    T,
    api,
    claims_held,
    start_client,
    start_coordinator,
    start_nvr,
    status,
    task_files,
    wait_for,
    worker_processes,
    write_sheet,
)

pytestmark = pytest.mark.slow


def slow_export(procs, tmp_path, tasks=2):
    nvr = start_nvr(procs, channels=1, hours=tasks, size=200_000, extra=("--delay", "0.1"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, T.replace(hour=h), T.replace(hour=h + 1)] for h in range(tasks)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    wait_for(lambda: api(coordinator.url, path="/api/tasks/1").json()["state"] == "leased", what="task 1 leased")
    return nvr, coordinator, client


def ctrl_c(client):
    """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
    os.killpg(client.pid, signal.SIGINT)


def test_ctrl_c_finishes_the_running_task_claims_no_more_and_exits(procs, tmp_path):
    nvr, coordinator, client = slow_export(procs, tmp_path)
    workers = worker_processes(client)
    ctrl_c(client)
    assert client.wait(60) == 130
    assert "finishing running tasks" in client.output()
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "done"
    assert api(coordinator.url, path="/api/tasks/2").json()["state"] == "queued"
    assert task_files(tmp_path / "dl") == nvr.expected(101, T, T.replace(hour=1))
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_second_ctrl_c_gives_running_tasks_back_at_once(procs, tmp_path):
    _, coordinator, client = slow_export(procs, tmp_path)
    ctrl_c(client)
    wait_for(lambda: "finishing running tasks" in client.output(), what="the first Ctrl-C to be taken")
    ctrl_c(client)
    assert client.wait(30) == 130
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "queued" and task["attempts"] == 0  # released: no attempt charged
    assert [a["outcome"] for a in task["attempt_log"]] == ["released"]
    assert not list((tmp_path / "dl").rglob("*.part"))


def test_sigterm_releases_running_tasks(procs, tmp_path):
    _, coordinator, client = slow_export(procs, tmp_path)
    client.kill(signal.SIGTERM)
    assert client.wait(30) == 130
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "queued"


def test_wrong_token_stops_the_host_with_a_clear_message(procs, tmp_path):
    sheet = write_sheet(tmp_path / "t.xlsx", [["10.0.0.5", "admin", "pw", 101, T, T.replace(hour=1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db", "--token", "right")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 2, "--token", "wrong")
    assert client.wait(60) == 3
    assert "the coordinator refused our token (HTTP 401)" in client.output()
    assert status(coordinator.url, token="right")["counts"]["queued"] == 1


def test_unknown_runner_options_are_refused_before_any_work(procs, tmp_path):
    client = start_client(procs, "http://127.0.0.1:9", tmp_path / "dl", 1, "--runner", "command")
    assert client.wait(30) == 2
    assert "the command runner needs --command" in client.output()


def test_command_runner_gets_parameters_in_argv_and_the_password_in_its_environment(procs, tmp_path):
    rows = [["10.0.0.5", "admin", "Cmd-secret", "101", T, T.replace(hour=1), "one"]]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db")
    script = tmp_path / "export.py"
    script.write_text("import os, sys\nopen('out.txt', 'w').write(' '.join(sys.argv[1:]) + ' ' "
                      "+ str(os.environ['TASK_PASSWORD'] == 'Cmd-secret'))\n")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--runner", "command",
                          "--command", f"{sys.executable} {script} {{server}} {{cameras}} {{start}}")
    assert client.wait(60) == 0
    (out,) = (tmp_path / "dl").rglob("out.txt")
    assert out.read_text() == "10.0.0.5 101 2026-01-01T00:00:00 True"
    assert api(coordinator.url, path="/api/tasks/1").json()["result"] == {"files": 1, "bytes": out.stat().st_size}


def test_a_worker_held_back_by_its_nvrs_cap_asks_for_its_claim_to_be_held_and_gets_the_freed_slot(procs, tmp_path):
    """Two tasks on one NVR capped at 1, two workers: the second worker waits in a held claim (the coordinator's
    hint is 30 s). The first task is cancelled: its slot is free at once, and the held worker takes the
    second task then, while the first worker has not even noticed the cancel yet."""
    rows = [["10.0.0.5", "admin", "pw", c, T, T.replace(hour=1)] for c in (101, 201)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--per-nvr", "1", "--max-wait", "30", "--lease-seconds", "60")
    gate = tmp_path / "gate"
    script = tmp_path / "run.py"
    script.write_text("import pathlib, sys, time\n"
                      "while not pathlib.Path(sys.argv[1]).exists():\n    time.sleep(0.05)\n")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 2, "--runner", "command",
                          "--command", f"{sys.executable} {script} {gate}")
    wait_for(lambda: claims_held(coordinator.url) == 1, 30, what="the second worker's claim to be held")
    first = api(coordinator.url, path="/api/tasks/1").json()
    assert api(coordinator.url, "POST", "/api/tasks/1/cancel").status_code == 200
    second = wait_for(lambda: (t := api(coordinator.url, path="/api/tasks/2").json())["state"] == "leased" and t,
                      10, what="the held claim to take the freed slot")  # a poll could have come 30 s later
    assert second["worker"] != first["worker"]  # the held worker, not the one whose task was cancelled
    gate.write_text("go")
    assert client.wait(60) == 0, client.output()[-2000:]
    assert api(coordinator.url, path="/api/tasks/2").json()["state"] == "done"
