"""Download: throughput and peak memory of one worker's export path against nvrsim on loopback.

Our hikload runner writes raw files (the device's stream, SHA-256 while streaming,
fsynced), remuxed MP4 (ffmpeg, stream copy, faststart) and MP4 joined per camera,
against `curl --digest` fetching the same recordings in one process followed by
`sync` of the same files: the same durability, and the limit of what the simulator
serves. Two cases: one large recording (the synthetic payload; plain hikload 1.1.4
too), and three 10-minute files of camera-like video (720p, 25 fps, ~2.4 Mbit/s, the
realistic IMKH + MPEG-PS payload). Our time is the task's, from listing to the last
file renamed, inside a worker process (a worker lives for many tasks; the whole
process, Python's start included, is in the JSON as `process`); curl's is its whole
run and the sync. Peak RSS is the worker process's own (getrusage); ffmpeg's is
reported apart. MB/s counts the bytes the device sent.
Run: python -m bench.download [--quick] [--rounds K]
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from bench.common import Workspace, fmt, goal, interleaved, options, ratios, report, spread
from tests.harness import SIM_PASSWORD, start_nvr

T = datetime(2026, 1, 1)
VIDEO = {"resolution": "1280x720", "fps": 25, "noise": 5}  # ~2.4 Mbit/s, frames of ~12 KB
OURS = {"raw": {"format": "raw"}, "mp4": {"format": "mp4"}, "joined": {"format": "mp4", "join": True}}
TOOLS = {"curl": "curl --digest + sync (baseline)", "raw": "taskclient, raw", "mp4": "taskclient, remuxed MP4",
         "joined": "taskclient, joined MP4", "hikload": "plain hikload 1.1.4 (no fsync)"}
GOALS = {"raw": 0.9, "mp4": 0.5, "joined": 0.5}


def run_ours() -> None:
    """Child process: run our hikload runner on the task given as JSON on stdin; print its time and memory."""
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
    print(json.dumps({"bytes": result["bytes"], "task": time.perf_counter() - began,
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


def prepare(ws: Workspace, label: str, tools: tuple[str, ...], interval: int, count: int, **nvr) -> dict:
    """Start a simulator holding the case's recordings; what each tool needs to fetch them."""
    sim = start_nvr(ws.procs, channels=1, hours=1, interval=interval, **nvr)
    end = T + timedelta(seconds=interval * count)
    recordings = sim.catalogue.recordings(101, T, end)
    return {"label": label, "tools": tools, "nvr": sim, "end": end, "recordings": recordings,
            "total": sum(r.size for r in recordings)}


def fetch(ws: Workspace, case: dict, tool: str) -> dict:
    """One tool fetching the case's recordings into a fresh folder: MB/s and peak RSS."""
    nvr, end, total = case["nvr"], case["end"], case["total"]
    out = ws.path / f"{case['label'].replace(' ', '_')}-{tool}-{time.monotonic_ns()}"
    figures = {"ffmpeg_rss": None}
    if tool in OURS:
        task = {"id": 1, "server": nvr.address, "username": "admin", "password": SIM_PASSWORD, "cameras": ["101"],
                "start": T.isoformat(), "end": end.isoformat(), "takes_earlier": True, "folder": str(out),
                "footage": {"window": "whole", **OURS[tool]}}
        process, _, stdout = timed([sys.executable, "-c", "from bench.download import run_ours; run_ours()"],
                                   json.dumps(task))
        child = json.loads(stdout.strip().splitlines()[-1])
        wall, rss, figures = child["task"], child["rss"], {"ffmpeg_rss": child["ffmpeg_rss"] or None,
                                                          "process": process}
    elif tool == "hikload":
        wall, rss, _ = timed([sys.executable, "-m", "hikload", "--server", nvr.address, "--username", "admin",
                              "--password", SIM_PASSWORD, "--starttime", T.isoformat(), "--endtime",
                              (end - timedelta(seconds=1)).isoformat(), "--cameras", "101", "--downloads", str(out)])
    else:
        curl, files = [], []
        for i, rec in enumerate(case["recordings"]):
            uri = rec.playback_uri(nvr.address).replace("&", "&amp;")
            files.append(str(out / f"{i:04d}.ps"))
            curl += (["--next"] if i else []) + [
                "--silent", "--fail", "--digest", "-u", f"admin:{SIM_PASSWORD}", "-X", "GET", "--data",
                f"<downloadRequest><playbackURI>{uri}</playbackURI></downloadRequest>",
                "-o", files[-1], "--create-dirs", f"{nvr.url}/ISAPI/ContentMgmt/download"]
        # The same durability as our worker's fsync of each file: sync them before the clock stops.
        wall, rss, _ = timed(["sh", "-c", 'curl "$@" && sync ' + " ".join(files), "sh", *curl])
        assert sum(Path(f).stat().st_size for f in files) == total
    shutil.rmtree(out, ignore_errors=True)
    return {"mbps": total / 1e6 / wall, "rss": rss, **figures}


def main() -> None:
    args = options(__doc__)
    big = 50_000_000 if args.quick else 257_000_000  # ~1.17x this after the simulator's size spread
    count, minutes = (2, 1) if args.quick else (3, 10)  # devices store files of 10 minutes to an hour
    with Workspace() as ws:
        cases = [prepare(ws, "1 large recording", ("curl", "raw", "hikload"), 3600, 1, size=big),
                 prepare(ws, f"{count} x {minutes} min of 720p video", ("curl", "raw", "mp4", "joined"),
                         60 * minutes, count, codec="h264", **VIDEO)]
        runs = interleaved({(c["label"], tool): (lambda c=c, tool=tool: fetch(ws, c, tool))
                            for c in cases for tool in c["tools"]}, args.rounds)
    rows, worst, peak = [], {}, 0.0
    for c in cases:
        limit = [r["mbps"] for r in runs[(c["label"], "curl")]]
        for tool in c["tools"]:
            results = runs[(c["label"], tool)]
            rates = [r["mbps"] for r in results]
            ratio = ratios(rates, limit)
            ffmpeg = [r["ffmpeg_rss"] / 1e6 for r in results if r["ffmpeg_rss"]]
            rows.append([c["label"], TOOLS[tool], f"{c['total'] / 1e6:.0f}", fmt(spread(rates)), fmt(ratio),
                         fmt(spread([r["rss"] / 1e6 for r in results])), fmt(spread(ffmpeg)) if ffmpeg else "-"])
            if tool in GOALS:
                worst[tool] = min([worst[tool], ratio] if tool in worst else [ratio], key=lambda r: r["median"])
                peak = max(peak, max(r["rss"] for r in results) / 1e6)
    notes = [goal(f"{TOOLS[tool]} >= {GOALS[tool]}x the baseline in the worst case", worst[tool],
                  worst[tool]["median"] >= GOALS[tool], "x") for tool in GOALS]
    notes.append(f"Goal peak RSS of a worker process <= 100 MB whatever the size: {'met' if peak <= 100 else 'MISSED'},"
                 f" {peak:.0f} MB at most.")
    report("download", f"Export from nvrsim on loopback, one worker process, {args.rounds} interleaved round(s)",
           ["case", "tool", "MB", "MB/s, median (range)", "x baseline (per round)", "peak RSS MB", "ffmpeg RSS MB"],
           rows, notes, {"runs": {"|".join(k): v for k, v in runs.items()}})


if __name__ == "__main__":
    main()
