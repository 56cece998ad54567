"""A CCTV engineer exports recordings from NVRs with several worker hosts: the whole story."""
from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from .harness import (
    HEADER,
    SIM_PASSWORD,
    api,
    at,
    exported,
    leftovers,
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


def test_two_hosts_export_every_recording_exactly_once_byte_for_byte(procs, tmp_path, db):
    nvr = start_nvr(procs, channels=3, hours=4)
    rows = [
        [nvr.address, "admin", SIM_PASSWORD, "101,201", at(0), at(2), "lobby and gate, night"],
        [nvr.address, "admin", SIM_PASSWORD, 101, at(2), at(4), "lobby"],
        [nvr.address, "admin", SIM_PASSWORD, 201, at(2), at(4), "gate"],
    ] + [[nvr.address, "admin", SIM_PASSWORD, "301", at(h), at(h + 1), f"yard {h}h"] for h in range(4)]
    sheet = write_sheet(tmp_path / "tasks.xlsx", rows, HEADER)
    coordinator = start_coordinator(procs, sheet, db)
    downloads = tmp_path / "downloads"
    clients = [start_client(procs, coordinator.url, downloads, 2) for _ in range(2)]

    # No worker process ever holds an NVR password on its command line.
    def all_workers():
        kids = [c for client in clients for c in psutil.Process(client.pid).children(recursive=True)]
        return kids if len(worker_processes(clients[0]) + worker_processes(clients[1])) >= 4 else None
    for kid in wait_for(all_workers, what="4 worker processes"):
        try:
            assert SIM_PASSWORD not in " ".join(kid.cmdline())
        except psutil.NoSuchProcess:
            pass

    assert [client.wait(120) for client in clients] == [0, 0], clients[0].output()[-2000:]

    expected = {}
    for track in (101, 201, 301):
        expected.update(nvr.expected(track, at(0), at(4)))
    files = task_files(downloads)
    assert sorted(files) == sorted(expected)
    assert all(files[name] == expected[name] for name in expected), "a file differs from the NVR's recording"
    assert leftovers(downloads) == []

    final = status(coordinator.url)
    assert final["drained"] and final["counts"]["done"] == len(rows)
    assert final["files"] == len(expected) and final["bytes"] == sum(map(len, expected.values()))
    for task_id in range(1, len(rows) + 1):
        assert api(coordinator.url, path=f"/api/tasks/{task_id}").json()["attempts"] == 1
    # Exactly once on the device side too: each recording was served once, in full.
    assert nvr.stats()["downloads_completed"] == len(expected)
    # Files are grouped by NVR, then camera, then day, whichever row or host exported them; the
    # hosts' shared checksum file verifies every one.
    folders = {p.relative_to(downloads).parent.as_posix() for p in exported(downloads)}
    assert folders == {f"{nvr.address.replace(':', '_')}/{t}_Camera_{t // 100:02d}/2026-01-01" for t in (101, 201, 301)}
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=downloads, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(expected), check.stdout + check.stderr

    # Passwords appear in no answer but a claim, and in no log.
    answers = [api(coordinator.url).text] + [api(coordinator.url, path=f"/api/tasks/{i}").text for i in (1, 2)]
    logs = [coordinator.output()] + [client.output() for client in clients]
    for text in answers + logs:
        assert SIM_PASSWORD not in text


def test_wrong_password_is_tried_once_and_spares_the_others(procs, tmp_path, db):
    nvr = start_nvr(procs, channels=2, hours=2)
    rows = [
        [nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "good 1"],
        [nvr.address, "viewer", "not-the-password", 201, at(0), at(1), "wrong password"],
        [nvr.address, "admin", SIM_PASSWORD, 201, at(1), at(2), "good 2"],
    ]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                                    "--max-attempts", "3", "--nvr-give-up", "3")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 2)
    assert client.wait(90) == 0

    final = status(coordinator.url)
    assert final["counts"] == {**final["counts"], "done": 2, "failed": 1}
    bad = api(coordinator.url, path="/api/tasks/2").json()
    # A refused login is tried once: the pair's tasks are held, not retried, until --nvr-give-up.
    assert bad["state"] == "failed" and bad["attempts"] == 0
    assert "refused the password of user 'viewer'" in bad["last_error"]
    assert nvr.stats()["unauthorized"] == 1
    assert task_files(tmp_path / "dl") == {**nvr.expected(101, at(0), at(1)), **nvr.expected(201, at(1), at(2))}
    assert "not-the-password" not in coordinator.output() + client.output() + api(coordinator.url).text


@pytest.mark.parametrize("mode", ["close", "reset"])
def test_download_cut_mid_transfer_fails_the_attempt_then_retries_to_a_byte_exact_file(procs, tmp_path, mode):
    nvr = start_nvr(procs, channels=1, hours=1, size=200_000,
                    extra=("--drop-after", "70000", "--drop-count", "2", "--drop-mode", mode))
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    assert client.wait(90) == 0

    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done"
    assert [a["outcome"] for a in task["attempt_log"]] == ["failed", "failed", "done"]
    cut = "download cut after 70000" if mode == "close" else "connection lost"
    assert all(cut in a["error"] for a in task["attempt_log"][:2]), task["attempt_log"]
    expected = nvr.expected(101, at(0), at(1))
    assert task_files(tmp_path / "dl") == expected
    assert leftovers(tmp_path / "dl") == []


def test_busy_nvr_answer_is_never_saved_as_a_recording(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(busy_above=0)  # every download answered 503, as an overloaded NVR does
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db", "--max-attempts", "20")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)

    def busy_failure():
        log = api(coordinator.url, path="/api/tasks/1").json()["attempt_log"]
        return any("HTTP 503 (device busy)" in (a["error"] or "") for a in log)
    wait_for(busy_failure, what="an attempt failed by a busy NVR")
    assert task_files(tmp_path / "dl") == {}
    nvr.faults(busy_above=None)

    assert client.wait(90) == 0
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


def test_a_hung_nvr_times_out_rests_and_finally_fails_its_tasks_with_a_clear_error(procs, tmp_path, db):
    nvr = start_nvr(procs, channels=1, hours=2)
    nvr.faults(stall=True)
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(h), at(h + 1)] for h in (0, 1)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                                    "--max-attempts", "1", "--nvr-give-up", "3")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--nvr-timeout", "1")
    assert client.wait(60) == 0
    for task_id in (1, 2):
        task = api(coordinator.url, path=f"/api/tasks/{task_id}").json()
        assert task["state"] == "failed"
        assert task["last_error"].startswith(f"NVR {nvr.address} unreachable for ")
        assert task["last_error"].endswith(f"last error: NVR {nvr.address}: no answer to the device info request"
                                           " within 1 s")
    # Resting the NVR charged no attempts: several timeouts with --max-attempts 1.
    log = api(coordinator.url, path="/api/tasks/1").json()["attempt_log"]
    assert len(log) >= 2 and {a["outcome"] for a in log[:-1]} == {"nvr unreachable"}


def test_retry_after_a_cut_keeps_the_files_already_complete(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, size=100_000,
                    extra=("--drop-skip", "3", "--drop-after", "30000", "--drop-count", "1", "--drop-mode", "reset"))
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    assert client.wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert [a["outcome"] for a in task["attempt_log"]] == ["failed", "done"]
    assert task["result"]["downloaded"] == 3 and task["result"]["skipped"] == 3
    stats = nvr.stats()
    # 6 recordings: 3 complete, 1 cut, then the retry fetched only the 3 missing ones.
    assert (stats["downloads_started"], stats["downloads_completed"], stats["downloads_dropped"]) == (7, 6, 1)
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


def test_after_fixing_a_wrong_password_reimport_and_requeue_finish_the_job(procs, tmp_path, db):
    nvr = start_nvr(procs, channels=1, hours=1)
    row = [nvr.address, "admin", "typo-password", 101, at(0), at(1), "lobby"]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", [row], HEADER), db, "--max-attempts", "1",
                                    "--nvr-give-up", "2")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "failed"

    row[2] = SIM_PASSWORD
    fixed = write_sheet(tmp_path / "t.xlsx", [row], HEADER)
    taskserver = [sys.executable, "-m", "taskserver"]
    out = subprocess.run([*taskserver, "import", str(fixed), "--db", str(db)], capture_output=True, text=True)
    assert "0 task(s) added, 1 already in" in out.stdout and "(1 with a corrected password)" in out.stdout
    out = subprocess.run([*taskserver, "requeue", "--db", str(db)], capture_output=True, text=True)
    assert out.stdout.strip() == "1 task(s) queued again: 1"

    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done" and task["attempts"] == 1
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))
