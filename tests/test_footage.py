"""Footage as people ask for it: the window, playable files, a layout to browse, checksums, pictures.

Real ffmpeg and ffprobe against nvrsim's realistic payload (the device's IMKH + MPEG-PS
stream of real H.264/H.265, keyframes every 2 s, 4 frames a second, 160x120): what a
file holds is proven by decoding it and comparing every picture with the device's own.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

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
    write_sheet,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
                                                   reason="ffmpeg is not installed (apt-get install ffmpeg)")]


def probe(path: Path) -> tuple[float, str]:
    """Duration and video codec, as ffprobe reads them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of",
                          "default=nw=1", str(path)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split("=", 1) for line in out.split())
    return float(fields["duration"]), fields["codec_name"]


def pictures(path: Path) -> list[str]:
    """The decoded pictures of a video, one hash each, in the order a player shows them."""
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
                         capture_output=True, text=True, check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def device_pictures(nvr, tmp_path: Path, start: datetime, end: datetime, track: int = 101) -> list[str]:
    """The pictures the device holds for [start, end) of one recording, frame by frame."""
    (rec,) = [r for r in nvr.catalogue.recordings(track, start, end) if r.start <= start and end <= r.end]
    source = tmp_path / f"device-{start:%H%M%S}.ps"
    source.write_bytes(rec.cut(rec.start, rec.end).content())
    frames = pictures(source)
    fps = nvr.catalogue.pattern.fps
    return frames[int((start - rec.start).total_seconds() * fps):int((end - rec.start).total_seconds() * fps)]


def export(procs, tmp_path, nvr, rows, header, label, *client, chunk=None):
    """One coordinator and one worker host for these rows; the tasks' files by start, with their manifest."""
    sheet = write_sheet(tmp_path / f"{label}.xlsx", rows, header)
    coordinator = start_coordinator(procs, sheet, tmp_path / f"{label}.db", *(("--chunk", chunk) if chunk else ()))
    downloads = tmp_path / label
    worker = start_client(procs, coordinator.url, downloads, 2, *client)
    assert worker.wait(120) == 0, worker.output()[-3000:]
    files = []
    for task in api(coordinator.url, path="/api/tasks?per_page=500").json()["tasks"]:
        assert task["state"] == "done", task["last_error"]
        files += api(coordinator.url, path=f"/api/tasks/{task['id']}/files").json()["files"]
    return sorted(files, key=lambda f: f["start"]), downloads


def verified(downloads: Path) -> int:
    """`sha256sum -c SHA256SUMS` in the downloads folder passes; how many files it checked."""
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=downloads, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    return check.stdout.count(": OK")


def test_a_two_minute_window_inside_an_hour_long_file_is_one_playable_two_minute_mp4(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, interval=3600, codec="h264")
    start, end = at(0, 6) + timedelta(seconds=1), at(0, 8) + timedelta(seconds=1)  # between keyframes
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101", start, end, "lobby", window] for window in ("device", "exact")]
    files, downloads = export(procs, tmp_path, nvr, rows, [*HEADER, "window"], "dl", "--format", "mp4",
                              "--layout", "{row}/{camera_name}_{date}_{start}-{end}")
    assert [f["path"] for f in sorted(files, key=lambda f: f["path"])] == [
        "2/Camera_01_2026-01-01_000601-000801.mp4", "3/Camera_01_2026-01-01_000601-000801.mp4"]
    device, exact = (downloads / f["path"] for f in sorted(files, key=lambda f: f["path"]))
    window = device_pictures(nvr, tmp_path, start, end)

    # device: the NVR's cut, from the keyframe one second before the window: 2 minutes, +- one keyframe interval.
    lasts, codec = probe(device)
    assert codec == "h264" and 120 <= lasts <= 122
    assert pictures(device) == device_pictures(nvr, tmp_path, start - timedelta(seconds=1), end)  # not re-encoded
    # exact: the same cut, shown from the window's first picture to its last: 2 minutes within 0.1 s.
    lasts, codec = probe(exact)
    assert codec == "h264" and abs(lasts - 120) <= 0.1
    assert pictures(exact) == window and len(window) == 480
    assert all(f["sha256"] == hashlib.sha256((downloads / f["path"]).read_bytes()).hexdigest() for f in files)
    assert verified(downloads) == 2 and exported(downloads) == sorted([device, exact]) and not leftovers(downloads)
    # The device was asked for the window, not the hour.
    assert nvr.stats()["bytes_sent"] < nvr.catalogue.recordings(101, at(0), at(1))[0].size / 10


def test_a_chunked_row_and_the_same_row_unchunked_export_every_moment_once(procs, tmp_path):
    # One-minute recordings; the window and its one-minute chunks start half-way through them.
    nvr = start_nvr(procs, channels=1, hours=1, interval=60, codec="h264")
    start, end = at(0, 0) + timedelta(seconds=30), at(0, 4) + timedelta(seconds=30)
    row = [nvr.address, "admin", SIM_PASSWORD, "101", start, end, "yard", "exact"]
    header = [*HEADER, "window"]
    whole, dl_whole = export(procs, tmp_path, nvr, [row], header, "whole", "--format", "mp4")
    chunked, dl_chunked = export(procs, tmp_path, nvr, [row], header, "chunked", "--format", "mp4", chunk="1m")
    assert len(whole) == 5 and len(chunked) == 8  # each chunk takes its own part of two recordings
    moments = {label: [(f["start"], f["end"]) for f in files] for label, files in (("w", whole), ("c", chunked))}
    for spans in moments.values():  # back to back, from the window's start to its end: no gap, no overlap
        assert spans[0][0] == start.isoformat() and spans[-1][1] == end.isoformat()
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    totals = [sum(probe(downloads / f["path"])[0] for f in files) for files, downloads in
              ((whole, dl_whole), (chunked, dl_chunked))]
    assert abs(totals[0] - 240) <= 0.5 and abs(totals[1] - 240) <= 0.8
    shown = [[p for f in files for p in pictures(downloads / f["path"])] for files, downloads in
             ((whole, dl_whole), (chunked, dl_chunked))]
    expected = [p for m in range(5) for p in device_pictures(nvr, tmp_path, max(start, at(0, m)),
                                                             min(end, at(0, m + 1)))]
    assert shown[0] == expected and shown[1] == expected  # every picture of the window once, in order

    # Joined into one MKV per camera: the same pictures, the codec copied.
    joined, dl_joined = export(procs, tmp_path, nvr, [row[:7] + ["device"]], header, "joined", "--format", "mkv",
                               "--join")
    (f,) = joined
    assert f["path"].endswith(".mkv") and (f["start"], f["end"]) == (start.isoformat(), end.isoformat())
    assert probe(dl_joined / f["path"])[1] == "h264" and pictures(dl_joined / f["path"]) == expected
    assert verified(dl_joined) == 1


def test_h265_material_is_copied_unless_the_host_asks_for_h264(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, interval=60, codec="h265")
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101", at(0, 1), at(0, 2), "h265"]]
    (copied,), dl = export(procs, tmp_path, nvr, rows, HEADER, "copied", "--format", "mp4")
    assert probe(dl / copied["path"]) == (60.0, "hevc")
    (recoded,), dl2 = export(procs, tmp_path, nvr, rows, HEADER, "recoded", "--format", "mkv", "--transcode", "h264")
    lasts, codec = probe(dl2 / recoded["path"])
    assert codec == "h264" and abs(lasts - 60) <= 0.5


def test_a_host_without_ffmpeg_says_so_at_start_and_claims_nothing(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, codec="h264")
    empty = tmp_path / "no-tools"
    empty.mkdir()
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101", at(0), at(0, 10), "lobby", "exact"]]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, [*HEADER, "window"]), tmp_path / "t.db")
    without = {"PATH": str(empty)}
    refused = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--format", "mp4", env=without)
    assert refused.wait(30) == 2
    assert "--format mp4 needs ffmpeg, and ffmpeg and ffprobe are not on PATH on this host" in refused.output()
    assert api(coordinator.url, path="/api/tasks/1").json()["attempt_log"] == []  # nothing claimed

    # A raw host starts, but a row asking for an exact window goes back to the queue, uncharged.
    raw = start_client(procs, coordinator.url, tmp_path / "dl", 1, env=without)
    assert raw.wait(60) == 4  # three host faults in a row: the host stops
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "queued" and task["attempts"] == 0
    assert "this row asks for window exact, which needs ffmpeg; this host has none" in task["attempt_log"][0]["error"]
    assert not (tmp_path / "dl").exists() or exported(tmp_path / "dl") == []
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "done"
    (path,) = exported(tmp_path / "dl")
    assert path.suffix == ".mp4" and verified(tmp_path / "dl") == 1


def test_no_ffmpeg_is_needed_for_raw_device_cuts(procs, tmp_path):
    # Synthetic payload, keyframes every 2 s: the device's cuts of one-minute chunks tile its recordings.
    nvr = start_nvr(procs, channels=1, hours=1, interval=420)
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101", at(0, 5), at(0, 55), "yard"]]
    empty = tmp_path / "no-tools"
    empty.mkdir()
    results = {}
    for label, chunk in (("whole", None), ("chunked", "10m")):
        files, downloads = _raw_export(procs, tmp_path, nvr, rows, label, chunk, {"PATH": str(empty)})
        results[label] = b"".join((downloads / f["path"]).read_bytes() for f in files)
        for f in files:  # each file is what the device sends for its piece, nothing more
            rec = next(r for r in nvr.catalogue.recordings(101, at(0), at(1))
                       if r.start.isoformat() <= f["start"] < r.end.isoformat())
            piece = rec.cut(datetime.fromisoformat(f["start"]), datetime.fromisoformat(f["end"]))
            assert (downloads / f["path"]).read_bytes() == piece.content() and f["path"].endswith(".bin")
    assert results["whole"] == results["chunked"]  # the same bytes: no moment twice, none missing


def _raw_export(procs, tmp_path, nvr, rows, label, chunk, env):
    sheet = write_sheet(tmp_path / f"{label}.xlsx", rows, HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / f"{label}.db", *(("--chunk", chunk) if chunk else ()))
    downloads = tmp_path / label
    assert start_client(procs, coordinator.url, downloads, 2, env=env).wait(90) == 0
    files = []
    for task in api(coordinator.url, path="/api/tasks?per_page=500").json()["tasks"]:
        assert task["state"] == "done", task["last_error"]
        files += api(coordinator.url, path=f"/api/tasks/{task['id']}/files").json()["files"]
    return sorted(files, key=lambda f: f["start"]), downloads


def test_pictures_and_a_motion_filter_export_exactly_the_matching_items(procs, tmp_path):
    nvr = start_nvr(procs, channels=2, hours=1)
    plain = start_nvr(procs, channels=1, hours=1, extra=("--no-pictures",))
    old = start_nvr(procs, channels=1, hours=1, extra=("--no-record-types",))
    rows = [[n.address, "admin", SIM_PASSWORD, cams, at(0), at(1), label, "both", "motion"]
            for n, cams, label in ((nvr, "101,201", "both"), (plain, "101", "no pictures"), (old, "101", "old"))]
    sheet = write_sheet(tmp_path / "t.xlsx", rows, [*HEADER, "content", "record_type"])
    coordinator = start_coordinator(procs, sheet, tmp_path / "t.db")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 2, "--layout", "{nvr}/{camera_name}_{start}").wait(90) == 0
    tasks = [api(coordinator.url, path=f"/api/tasks/{i}").json() for i in (1, 2, 3)]
    assert [t["state"] for t in tasks] == ["done"] * 3

    def expected(n, tracks, with_pictures=True):
        found = {}
        for track in tracks:
            shots = n.catalogue.pictures(track + 2, at(0), at(1)) if with_pictures else []
            for item in [*n.catalogue.recordings(track, at(0), at(1)), *shots]:
                if item.kind == "motion":
                    ext = ".jpg" if item.track % 100 == 3 else ".bin"
                    found[f"{n.hostport.replace(':', '_')}/Camera_{track // 100:02d}_{item.start:%H%M%S}{ext}"] = \
                        item.content()
        return found
    got = {p.relative_to(tmp_path / "dl").as_posix(): p.read_bytes() for p in exported(tmp_path / "dl")}
    want = {**expected(nvr, (101, 201)), **expected(plain, (101,), with_pictures=False)}
    assert got == want and any(k.endswith(".jpg") for k in want) and any(k.endswith(".bin") for k in want)
    kinds = {f["kind"] for f in api(coordinator.url, path="/api/tasks/1/files").json()["files"]}
    assert kinds == {"video", "picture"}
    # Devices that cannot do what the row asks say so in the result; the task is not failed.
    assert tasks[1]["result"]["notes"] == [f"NVR {plain.address} has no pictures for camera 103 (its search is"
                                           " refused): no pictures exported"]
    assert tasks[2]["result"]["files"] == 0 and tasks[2]["result"]["note"] == (
        f"NVR {old.address} cannot search by record type (the filter motion is refused): no video exported for"
        f" record type motion; NVR {old.address} cannot search by record type (the filter motion is refused): no"
        " pictures exported")
    assert verified(tmp_path / "dl") == len(want)


def test_hostile_and_unicode_names_from_the_sheet_and_the_nvr_stay_inside_downloads(procs, tmp_path):
    nvr = start_nvr(procs, channels=4, hours=1)
    nvr.faults(names={"1": "../../etc/cron.d", "2": "/etc/passwd", "3": "CON", "4": "Caméra Entrée 東門"})
    labels = ["../../up", "/abs/olute", "NUL", "Nord-Est Ålesund"]
    rows = [[nvr.address, "admin", SIM_PASSWORD, f"{c}01", at(0), at(0, 10), label] for c, label in
            zip((1, 2, 3, 4), labels, strict=True)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "t.db")
    downloads = tmp_path / "box" / "dl"
    client = start_client(procs, coordinator.url, downloads, 2, "--layout", "{nvr_label}/{camera_name}/{start}")
    assert client.wait(60) == 0
    got = sorted(p.relative_to(downloads).as_posix() for p in exported(downloads))
    assert got == ["Nord-Est_Ålesund/Caméra_Entrée_東門/000000.bin", "_NUL/_CON/000000.bin",
                   "abs_olute/etc_passwd/000000.bin", "up/etc_cron.d/000000.bin"]
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["dl"]  # nothing beside downloads
    assert verified(downloads) == 4


def test_two_tasks_never_write_the_same_path_and_a_failed_one_leaves_no_folder(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=2)
    broken = start_nvr(procs, channels=1, hours=1, extra=("--drop-after", "1000"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101", at(h), at(h, 10), f"hour {h}"] for h in (0, 1)]
    rows.append([broken.address, "admin", SIM_PASSWORD, "101", at(0), at(0, 10), "broken"])
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "t.db",
                                    "--max-attempts", "1")
    downloads = tmp_path / "dl"
    # A template without times: both hours of camera 01 would be "Camera_01/2026-01-01".
    assert start_client(procs, coordinator.url, downloads, 1, "--layout", "{camera_name}/{date}").wait(60) == 0
    assert api(coordinator.url, path="/api/tasks/3").json()["state"] == "failed"
    paths = {t: api(coordinator.url, path=f"/api/tasks/{t}/files").json()["files"][0]["path"] for t in (1, 2)}
    assert paths == {1: "Camera_01/2026-01-01.bin", 2: "Camera_01/2026-01-01_task2.bin"}
    for t, h in ((1, 0), (2, 1)):
        (rec,) = nvr.catalogue.recordings(101, at(h), at(h, 10))
        assert (downloads / paths[t]).read_bytes() == rec.content()
    assert verified(downloads) == 2 and not leftovers(downloads)
    folders = [d for d in downloads.rglob("*") if d.is_dir()]
    assert all(any(d.iterdir()) for d in folders), "an empty folder was left behind"
    assert {d.relative_to(downloads).as_posix() for d in folders} == {".taskclient", "Camera_01"}
    assert sorted(os.listdir(downloads / "Camera_01")) == ["2026-01-01.bin", "2026-01-01_task2.bin"]
