"""Things crash in the middle of an export: nothing is lost, nothing done runs twice."""
from __future__ import annotations

import signal
import time

import pytest

from .harness import (
    HEADER,
    SIM_PASSWORD,
    FakeClock,
    T,
    api,
    coordinator_in_process,
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


def slow_nvr(procs, channels=1, hours=2):
    # 0.1 s per 64 KiB block and ~200 KB recordings: a 1-hour task (6 recordings) takes 2-3 s to download.
    return start_nvr(procs, channels=channels, hours=hours, size=200_000, extra=("--delay", "0.1"))


def test_worker_killed_mid_download_task_comes_back_after_its_lease_and_completes(procs, tmp_path, db):
    nvr = slow_nvr(procs)
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, T.replace(hour=h), T.replace(hour=h + 1)] for h in (0, 1)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                                    "--lease-seconds", "2")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)

    def downloading():
        task = api(coordinator.url, path="/api/tasks/1").json()
        return task["state"] == "leased" and (task["progress"] or {}).get("bytes", 0) > 0
    wait_for(downloading, what="task 1 to be downloading")
    workers = worker_processes(client)
    assert len(workers) == 1
    workers[0].kill()  # kill -9 mid-download

    assert client.wait(90) == 0, client.output()[-2000:]
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done"
    assert [a["outcome"] for a in task["attempt_log"]] == ["expired", "done"]
    assert "worker 0 died (exit -9); starting a replacement" in client.output()
    expected = {**nvr.expected(101, T, T.replace(hour=2))}
    assert task_files(tmp_path / "dl") == expected
    assert leftovers(tmp_path / "dl") == []
    assert status(coordinator.url)["counts"]["done"] == 2


def test_a_worker_frozen_past_its_lease_and_its_successor_on_the_same_host_do_not_spoil_each_others_file(
        procs, tmp_path, db):
    """The host's other worker takes the task while the first is frozen mid-download; the first wakes up
    still writing. Each attempt writes its own temporary file: the task is done by the second attempt,
    with no failed attempt between, byte for byte, and nothing is left behind."""
    # One recording of 2 MB at 0.15 s per 64 KiB block: about 5 s to download, one output file.
    nvr = start_nvr(procs, channels=1, hours=1, interval=3600, size=2_000_000, extra=("--delay", "0.15"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, T, T.replace(hour=1)]]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db,
                                    "--lease-seconds", "2")
    downloads = tmp_path / "dl"
    client = start_client(procs, coordinator.url, downloads, 2)

    def task():
        return api(coordinator.url, path="/api/tasks/1").json()

    def downloader():
        for worker in worker_processes(client):
            if any(c.raddr and c.raddr.port == int(nvr.hostport.rsplit(":", 1)[1]) for c in worker.connections()):
                return worker
        return None
    first = wait_for(downloader, what="a worker to be downloading task 1")
    wait_for(lambda: (task()["progress"] or {}).get("bytes", 0) > 0, what="the first bytes written")
    first.suspend()  # frozen (a stalled VM, a debugger): its heartbeats stop, the lease runs out
    frozen_at = time.time()
    try:
        wait_for(lambda: len(task()["attempt_log"]) == 2 and task()["state"] == "leased", 30,
                 what="the host's other worker to take the task")

        def successor_writing():
            return any(p.stat().st_mtime > frozen_at for p in leftovers(downloads))
        wait_for(successor_writing, 30, what="the successor to be writing the same recording")
    finally:
        first.resume()  # wakes up mid-download, still holding its open file

    assert client.wait(90) == 0, client.output()[-3000:]
    done = task()
    assert done["state"] == "done" and [a["outcome"] for a in done["attempt_log"]] == ["expired", "done"], \
        done["attempt_log"]
    assert task_files(downloads) == nvr.expected(101, T, T.replace(hour=1))
    assert leftovers(downloads) == []


def test_coordinator_killed_and_restarted_loses_nothing_and_reruns_nothing(procs, tmp_path, db):
    nvr = slow_nvr(procs, channels=2, hours=3)
    rows = [[nvr.address, "admin", SIM_PASSWORD, track, T.replace(hour=h), T.replace(hour=h + 1)]
            for track in (101, 201) for h in range(3)]
    sheet = write_sheet(tmp_path / "t.xlsx", rows, HEADER)
    coordinator = start_coordinator(procs, sheet, db, "--lease-seconds", "10")
    port = coordinator.url.rsplit(":", 1)[1]
    client = start_client(procs, coordinator.url, tmp_path / "dl", 2)

    wait_for(lambda: status(coordinator.url)["counts"]["done"] >= 2, what="two tasks done")
    before = {t: api(coordinator.url, path=f"/api/tasks/{t}").json() for t in range(1, len(rows) + 1)}
    coordinator.kill(signal.SIGKILL)
    coordinator.wait(10)
    time.sleep(1.5)  # workers keep downloading and retry their reports meanwhile
    restarted = start_coordinator(procs, sheet, db, "--lease-seconds", "10", port=int(port))
    assert restarted.url == coordinator.url

    assert client.wait(120) == 0, client.output()[-2000:]
    final = status(restarted.url)
    assert final["counts"]["done"] == len(rows) and final["tasks"] == len(rows)  # the sheet added nothing twice
    for task_id, old in before.items():
        if old["state"] == "done":
            now = api(restarted.url, path=f"/api/tasks/{task_id}").json()
            assert now["finished"] == old["finished"] and now["attempts"] == 1, "a done task ran again"
    expected = {}
    for track in (101, 201):
        expected.update(nvr.expected(track, T, T.replace(hour=3)))
    assert task_files(tmp_path / "dl") == expected
    assert "added, 0 already" not in restarted.output() and f"0 task(s) added, {len(rows)} already" in restarted.output()


def test_completion_with_a_stale_lease_is_refused_and_changes_nothing(tmp_path):
    sheet = write_sheet(tmp_path / "t.xlsx", [["10.0.0.9", "admin", "pw", 101, T, T.replace(hour=1)]], HEADER)
    clock = FakeClock()
    with coordinator_in_process(tmp_path / "ts.db", clock, tasks=str(sheet), lease_seconds=60) as url:
        first = api(url, path="/api/claim?worker=slow").json()
        clock.advance(61)  # the lease runs out: the slow worker is presumed dead
        second = api(url, path="/api/claim?worker=fast").json()
        assert second["status"] == "task" and second["task"]["id"] == first["task"]["id"]
        assert second["lease"]["id"] != first["lease"]["id"]

        stale = {"lease": first["lease"]["id"], "result": {"files": 666, "bytes": 666}}
        refused = api(url, "POST", "/api/tasks/1/complete", json=stale)
        assert refused.status_code == 409 and refused.json()["error"] == "LeaseLost"
        assert api(url, "POST", "/api/tasks/1/heartbeat", json={"lease": first["lease"]["id"]}).status_code == 409
        assert api(url, path="/api/tasks/1").json()["state"] == "leased"

        ok = api(url, "POST", "/api/tasks/1/complete", json={"lease": second["lease"]["id"],
                                                             "result": {"files": 3, "bytes": 300}})
        assert ok.status_code == 200
        assert api(url, "POST", "/api/tasks/1/complete", json=stale).status_code == 409
        task = api(url, path="/api/tasks/1").json()
        assert task["state"] == "done" and task["result"] == {"files": 3, "bytes": 300}
        assert api(url, path="/api/claim?worker=fast").json() == {"status": "drained"}
