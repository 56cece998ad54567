"""Download: throughput and peak memory of one worker's export path against nvrsim on loopback.

Our hikload runner writes raw files (the device's stream, SHA-256 while streaming,
fsynced), remuxed MP4 (ffmpeg, stream copy, faststart) and MP4 joined per camera,
against `curl --digest` fetching the same recordings in one process followed by
`sync` of the same files: the same durability, the limit of what the simulator
serves. Two cases: one large recording (the synthetic payload; plain hikload 1.1.4 too),
and three 10-minute files of camera-like video (720p, 25 fps, ~2.4 Mbit/s, the realistic
IMKH + MPEG-PS payload). Our time is the task's, from listing to the last file renamed,
inside a worker process (a worker lives for many tasks; the whole process, Python's
start included, is in the JSON as `process`); curl's is its whole run and the sync.
Peak RSS is the worker process's own (getrusage); ffmpeg's is reported apart. MB/s
counts the bytes the device sent.
Run: python -m bench.download [--quick]
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import Workspace, options, report
from tests.harness import SIM_PASSWORD, start_nvr

T = datetime(2026, 1, 1)
VIDEO = {"resolution": "1280x720", "fps": 25, "noise": 5}


def run_ours() -> None:
    """Child process: run our hikload runner on the task given as JSON on stdin; print its peak memory."""
    import resource
    import threading

    from taskclient.runners import Progress
    from taskclient.runners.hikload import HikloadRunner

    task = json.loads(sys.stdin.read())
    folder = Path(task.pop("folder"))
    folder.mkdir(parents=True, exist_ok=True)
    runner = HikloadRunner(timeout=60, footage=task.pop("footage"))
    began = time.perf_counter()
    result = runner.run(task, folder / "task", Progress(), threading.Event())
    print(json.dumps({"bytes": result["bytes"], "files": result["files"], "task": time.perf_counter() - began,
                      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "ffmpeg_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))


def timed(argv: list[str], stdin: str | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes, /usr/bin/time) and standard output of a command."""
    t = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *argv], input=stdin, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {done.stderr[-1500:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) * 1024
    return wall, rss, done.stdout


def ours(nvr, end: datetime, out: Path, footage: dict) -> dict:
    task = {"id": 1, "server": nvr.address, "username": "admin", "password": SIM_PASSWORD, "cameras": ["101"],
            "start": T.isoformat(), "end": end.isoformat(), "takes_earlier": True, "folder": str(out),
            "footage": {"window": "whole", **footage}}
    wall, _, stdout = timed([sys.executable, "-c", "from bench.download import run_ours; run_ours()"],
                            json.dumps(task))
    figures = json.loads(stdout.strip().splitlines()[-1])
    # A worker process lives for many tasks: its task time is what a task costs (the process's start
    # is reported apart, as `process`).
    return {"wall": figures["task"], "process": wall, "rss": figures["rss"], "ffmpeg_rss": figures["ffmpeg_rss"] or None}


def curl_then_sync(nvr, recordings, out: Path) -> dict:
    """curl --digest fetches every recording in one process, then `sync` flushes the same files to disk."""
    curl = ["curl", "--silent", "--fail"]
    files = []
    for i, rec in enumerate(recordings):
        body = f"<downloadRequest><playbackURI>{rec.playback_uri(nvr.address).replace('&', '&amp;')}</playbackURI></downloadRequest>"
        files.append(str(out / f"{i:04d}.ps"))
        curl += (["--next"] if i else []) + ["--digest", "-u", f"admin:{SIM_PASSWORD}", "-X", "GET", "--data", body,
                                             "-o", files[-1], "--create-dirs", f"{nvr.url}/ISAPI/ContentMgmt/download"]
    script = 'curl "$@" && sync ' + " ".join(files)  # the same fsync our worker does, file by file
    wall, rss, _ = timed(["sh", "-c", script, "sh", *curl[1:]])
    assert sum(Path(f).stat().st_size for f in files) == sum(r.size for r in recordings)
    return {"wall": wall, "rss": rss, "ffmpeg_rss": None}


def case(ws: Workspace, label: str, nvr, recordings, end: datetime, outputs: dict, hikload: bool) -> list[dict]:
    total = sum(r.size for r in recordings)
    out = ws.path / label.replace(" ", "_")
    results = [{"tool": "curl --digest + sync (baseline)", **curl_then_sync(nvr, recordings, out / "curl")}]
    for name, footage in outputs.items():
        results.append({"tool": f"taskclient: {name}", **ours(nvr, end, out / name, footage)})
    if hikload:
        wall, rss, _ = timed([sys.executable, "-m", "hikload", "--server", nvr.address, "--username", "admin",
                              "--password", SIM_PASSWORD, "--starttime", T.isoformat(), "--endtime",
                              (end - timedelta(seconds=1)).isoformat(), "--cameras", "101",
                              "--downloads", str(out / "hikload")])
        results.append({"tool": "plain hikload 1.1.4 (no fsync)", "wall": wall, "rss": rss, "ffmpeg_rss": None})
    for r in results:
        r.update(case=label, mb=total / 1e6, mbps=total / 1e6 / r["wall"])
    return results


def main() -> None:
    args = options(__doc__)
    big = 50_000_000 if args.quick else 257_000_000  # ~1.17x this after the simulator's size spread
    count, minutes = (2, 1) if args.quick else (3, 10)  # devices store files of 10 minutes to an hour
    raw = {"raw": {"format": "raw"}}
    playable = {"raw": {"format": "raw"}, "remuxed mp4": {"format": "mp4"},
                "joined mp4": {"format": "mp4", "join": True}}
    with Workspace() as ws:
        nvr = start_nvr(ws.procs, channels=1, hours=1, interval=3600, size=big)
        end = T + timedelta(hours=1)
        results = case(ws, "1 large recording", nvr, nvr.catalogue.recordings(101, T, end), end, raw, True)
        video = start_nvr(ws.procs, channels=1, hours=1, interval=60 * minutes, codec="h264", **VIDEO)
        end = T + timedelta(minutes=minutes * count)
        results += case(ws, f"{count} x {minutes} min of 720p video", video, video.catalogue.recordings(101, T, end),
                        end, playable, False)
    rows = []
    for r in results:
        base = next(x for x in results if x["case"] == r["case"] and x["tool"].startswith("curl"))
        rows.append([r["case"], r["tool"], r["mb"], r["mbps"], r["mbps"] / base["mbps"], r["rss"] / 1e6,
                     r["ffmpeg_rss"] / 1e6 if r["ffmpeg_rss"] else "-"])

    def ratio(kind: str) -> float:
        return min(r[4] for r in rows if r[1] == f"taskclient: {kind}")
    peak = max(r["rss"] for r in results if r["tool"].startswith("taskclient")) / 1e6
    goals = [("raw", 0.9), ("remuxed mp4", 0.5), ("joined mp4", 0.5)]
    notes = [f"Goals: {kind} >= {goal}x the baseline: worst {ratio(kind):.2f}x ({'met' if ratio(kind) >= goal else 'MISSED'})"
             for kind, goal in goals]
    notes.append(f"Peak RSS of a worker process <= 100 MB whatever the size: {peak:.0f} MB"
                 f" ({'met' if peak <= 100 else 'MISSED'}).")
    report("download", "Export from nvrsim on loopback, one worker process",
           ["case", "tool", "MB", "MB/s", "x baseline", "peak RSS MB", "ffmpeg RSS MB"], rows, notes,
           {"results": results})


if __name__ == "__main__":
    main()
