"""Exporting from a fleet: per-NVR caps, resting busy or rebooting NVRs, chunks, scheduling, memory."""
from __future__ import annotations

import shutil
import threading

import psutil
import pytest

from .harness import (
    HEADER,
    SIM_PASSWORD,
    api,
    at,
    exported,
    file_name,
    files_of,
    start_client,
    start_coordinator,
    start_nvr,
    status,
    task_files,
    worker_processes,
    write_sheet,
)

pytestmark = pytest.mark.slow


def test_no_nvr_ever_runs_more_than_its_cap_of_downloads(procs, tmp_path, db):
    # Each simulated NVR answers 503 above its cap: a tripwire, counted in its stats.
    caps = [2, 2, 1]
    nvrs = [start_nvr(procs, channels=2, hours=3, size=120_000,
                      extra=("--delay", "0.05", "--busy-above", str(cap))) for cap in caps]
    header = [*HEADER, "max_parallel", "chunk"]
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101,201", at(0), at(3), f"nvr {i}", cap if cap != 2 else None, "1h"]
            for i, (nvr, cap) in enumerate(zip(nvrs, caps, strict=True))]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, header), db)
    assert status(coordinator.url)["tasks"] == 18  # 3 rows x 2 cameras x 3 one-hour chunks
    clients = [start_client(procs, coordinator.url, tmp_path / "dl", 4) for _ in range(2)]
    assert [c.wait(180) for c in clients] == [0, 0]

    expected = {}
    for nvr, cap in zip(nvrs, caps, strict=True):
        stats = nvr.stats()
        assert stats["busy_answers"] == 0, f"{nvr.address} saw more than {cap} downloads at once"
        assert stats["max_concurrent"] == cap  # the cap was reached, never passed
        for track in (101, 201):
            expected.update({f"{nvr.address}/{k}": v for k, v in nvr.expected(track, at(0), at(3)).items()})
    got = {}
    for task_id in range(1, 19):
        server = api(coordinator.url, path=f"/api/tasks/{task_id}").json()["server"]
        got.update({f"{server}/{name}": data for name, data in files_of(coordinator.url, task_id, tmp_path / "dl").items()})
    assert got == expected
    shown = {n["server"]: (n["max_parallel"], n["running"], n["queued"]) for n in status(coordinator.url)["nvrs"]}
    assert shown == {nvr.address: (cap, 0, 0) for nvr, cap in zip(nvrs, caps, strict=True)}


def test_a_busy_nvr_rests_and_no_task_attempt_is_burned(procs, tmp_path, db):
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(busy_above=0)  # every download answered 503 until the NVR calms down
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, db, "--max-attempts", "1")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    waited = threading.Event()

    def calm_down_after_three_busy_answers():
        while nvr.stats()["busy_answers"] < 3:
            waited.wait(0.05)
        nvr.faults(busy_above=None)
    threading.Thread(target=calm_down_after_three_busy_answers, daemon=True).start()

    assert client.wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done" and task["attempts"] == 1
    outcomes = [a["outcome"] for a in task["attempt_log"]]
    assert outcomes[-1] == "done" and set(outcomes[:-1]) == {"nvr busy"} and len(outcomes) >= 4
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


def test_an_nvr_rebooting_for_a_while_is_waited_for(procs, tmp_path, db):
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(refuse_next=4)  # rebooting: it resets the worker's first connections, however late they come
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, db, "--max-attempts", "1")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    assert client.wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done"
    assert "nvr unreachable" in [a["outcome"] for a in task["attempt_log"]]
    assert nvr.faults()["refuse_next"] == 0  # every reset was met, and waited out
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


def test_chunked_and_unchunked_exports_hold_exactly_the_same_files(procs, tmp_path):
    # 7-minute recordings and a range from 00:05 to 03:55: chunk edges fall inside recordings.
    nvr = start_nvr(procs, channels=2, hours=4, interval=420)
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101,201", at(0, 5), at(3, 55), "yard"]]
    sheet = write_sheet(tmp_path / "t.xlsx", rows, HEADER)
    results = {}
    for label, extra in (("whole", ()), ("chunked", ("--chunk", "1h"))):
        coordinator = start_coordinator(procs, sheet, tmp_path / f"{label}.db", *extra)
        client = start_client(procs, coordinator.url, tmp_path / label, 2, "--window", "whole")
        assert client.wait(120) == 0
        results[label] = (task_files(tmp_path / label), status(coordinator.url))
    whole, chunked = results["whole"][0], results["chunked"][0]
    expected = {**nvr.expected(101, at(0, 5), at(3, 55)), **nvr.expected(201, at(0, 5), at(3, 55))}
    assert whole == expected and chunked == expected  # task_files also fails on a file downloaded twice
    assert results["chunked"][1]["tasks"] == 8  # 2 cameras x 4 chunks
    assert nvr.stats()["downloads_completed"] == 2 * len(expected)  # once per export, no duplicates


def test_streaming_keeps_worker_memory_bounded_whatever_the_recording_size(procs, tmp_path):
    # One recording of ~230 MB (hikload would hold about twice that in memory).
    nvr = start_nvr(procs, channels=1, hours=1, interval=3600, size=200_000_000)
    (recording,) = nvr.catalogue.recordings(101, at(0), at(1))
    assert recording.size > 200_000_000
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    peak = 0
    while client.popen.poll() is None:
        for worker in worker_processes(client):
            try:
                peak = max(peak, worker.memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        threading.Event().wait(0.02)
    assert client.wait(5) == 0
    (path,) = exported(tmp_path / "dl")
    assert path.stat().st_size == recording.size
    assert 0 < peak < 150_000_000, f"worker peak RSS {peak / 1e6:.0f} MB"
    with open(path, "rb") as f:  # spot-check the bytes without loading the file
        for offset in (0, recording.size // 2, recording.size - 70_000):
            f.seek(offset)
            expected = next(recording.chunks(offset))  # the rest of the 64 KiB block at offset
            assert f.read(len(expected)) == expected


def test_verify_ffprobe_refuses_a_video_shorter_than_its_recording(procs, tmp_path):
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg); --verify ffprobe needs it")
    good = start_nvr(procs, channels=1, hours=1, interval=60, extra=("--video",))
    short = start_nvr(procs, channels=1, hours=1, interval=60, extra=("--video-seconds", "20"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(0, 3), name]
            for nvr, name in ((good, "good"), (short, "short"))]
    sheet = write_sheet(tmp_path / "t.xlsx", rows, HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db", "--max-attempts", "1")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 2, "--verify", "ffprobe")
    assert client.wait(90) == 0
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "done"
    bad = api(coordinator.url, path="/api/tasks/2").json()
    assert bad["state"] == "failed"
    assert bad["last_error"].endswith("the video lasts 20.0 s but the recording spans 60 s (ffprobe)")
    # The device's real MP4 keeps its honest extension; the short video never took a final name.
    assert [p.name for p in exported(tmp_path / "dl")] == sorted(
        file_name(r, extension=".mp4") for r in good.catalogue.recordings(101, at(0), at(0, 3)))
    assert {p.relative_to(tmp_path / "dl").parts[0] for p in exported(tmp_path / "dl")} == {good.hostport.replace(":", "_")}

    # Without the check, sizes match the listing and the short videos would be taken as complete.
    coordinator2 = start_coordinator(procs, write_sheet(tmp_path / "s.xlsx", rows[1:], HEADER), tmp_path / "s.db")
    assert start_client(procs, coordinator2.url, tmp_path / "dl2", 1).wait(60) == 0
    assert api(coordinator2.url, path="/api/tasks/1").json()["state"] == "done"
