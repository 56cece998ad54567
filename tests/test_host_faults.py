"""A worker host's own trouble (a full disk) is the host's: no attempt is charged, and another host does the work.

These stories mount a 20 MB tmpfs as a worker host's --downloads (the tests run as root);
without permission to mount they are skipped with the reason.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .harness import (
    HEADER,
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


@pytest.fixture
def small_disk(tmp_path):
    """A 20 MB filesystem of its own, unmounted afterwards."""
    where = tmp_path / "small-disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(where)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 20 MB tmpfs here ({mounted.stderr.strip() or 'mount failed'}); needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def big_task(procs, tmp_path, *nvr_extra):
    # 6 recordings of about 8 MB each: about 50 MB, more than the small disk holds.
    nvr = start_nvr(procs, channels=1, hours=1, size=8_000_000, extra=nvr_extra)
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "big"]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db", "--max-attempts", "1")
    return nvr, coordinator


def test_a_host_too_small_for_a_task_charges_no_attempt_says_it_is_full_and_another_host_finishes(
        procs, tmp_path, small_disk):
    nvr, coordinator = big_task(procs, tmp_path)
    assert sum(r.size for r in nvr.catalogue.recordings(101, at(0), at(1))) > 40_000_000
    small = start_client(procs, coordinator.url, small_disk, 1, "--min-free", "1M", "--name", "small-host")
    wait_for(lambda: "disk full" in small.output(), what="the small host to say it is full")
    assert "no space left on device for this task: it needs" in small.output()
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "queued" and task["attempts"] == 0
    assert [a["outcome"] for a in task["attempt_log"]] == ["released"]
    assert task["attempt_log"][0]["error"].startswith("host small-host: no space left on device for this task")
    assert list(small_disk.iterdir()) == []  # nothing half-written, no empty folder
    (shown,) = [w for w in status(coordinator.url)["workers"] if w["name"].startswith("small-host")]
    assert shown["state"] == "full" and "claiming nothing until space returns" in shown["detail"]

    big = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--min-free", "1M")
    assert big.wait(120) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done" and task["attempts"] == 1
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))
    assert small.wait(30) == 0  # the full host saw the queue drain while it waited for space
    assert list(small_disk.iterdir()) == []
    (shown,) = [w for w in status(coordinator.url)["workers"] if w["name"].startswith("small-host")]
    assert shown["state"] == "stopped"


def test_a_disk_that_fills_up_mid_task_releases_it_and_three_faults_in_a_row_stop_the_host(
        procs, tmp_path, small_disk):
    # Without size= the listing cannot tell how much is needed: the disk fills up while downloading.
    nvr, coordinator = big_task(procs, tmp_path, "--no-size")
    small = start_client(procs, coordinator.url, small_disk, 1, "--min-free", "0", "--name", "small-host")
    assert small.wait(90) == 4, small.output()[-3000:]
    output = small.output()
    assert "stopping this host after repeated host faults: host small-host: no space left on device" in output
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "queued" and task["attempts"] == 0
    assert [a["outcome"] for a in task["attempt_log"]] == ["released"] * 3
    (shown,) = [w for w in status(coordinator.url)["workers"] if w["name"].startswith("small-host")]
    assert shown["state"] == "fault" and "no space left on device" in shown["detail"]
    assert not [p for p in Path(small_disk).rglob("*.part")]
