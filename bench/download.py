"""Download: throughput and peak memory of one worker's download path against nvrsim on loopback.

Our hikload runner (search through hikload, streamed and verified download), plain
hikload 1.1.4 (`python -m hikload`), and `curl --digest` fetching the same
recordings in one process (the limit of what the simulator serves). Two cases:
one large recording, and 50 x 5 MB. Peak RSS from /usr/bin/time -v.
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


def run_ours() -> None:
    """Child process: run our hikload runner on the task given as JSON on stdin."""
    import threading

    from taskclient.runners import Progress
    from taskclient.runners.hikload import HikloadRunner

    task = json.loads(sys.stdin.read())
    folder = Path(task.pop("folder"))
    folder.mkdir(parents=True, exist_ok=True)
    result = HikloadRunner(timeout=60).run(task, folder, Progress(), threading.Event())
    print(json.dumps(result))


def timed(argv: list[str], stdin: str | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a command."""
    t = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *argv], input=stdin, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {done.stderr[-1500:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) * 1024
    return wall, rss


def prepare(ws: Workspace, label: str, size: int, interval: int, count: int) -> dict:
    """Start a simulator holding the case's recordings; what each tool needs to fetch them."""
    hours = interval * count / 3600
    nvr = start_nvr(ws.procs, channels=1, hours=max(1, int(hours + 0.999)), interval=interval, size=size)
    end = T + timedelta(seconds=interval * count)
    recordings = nvr.catalogue.recordings(101, T, end)
    return {"label": label, "nvr": nvr, "end": end, "recordings": recordings, "total": sum(r.size for r in recordings)}


def fetch(ws: Workspace, case: dict, tool: str) -> dict:
    """One tool fetching the case's recordings into a fresh folder: MB/s and peak RSS."""
    nvr, end, total = case["nvr"], case["end"], case["total"]
    out = ws.path / f"{case['label']}-{tool}-{time.monotonic_ns()}"
    if tool == "ours":
        task = {"id": 1, "server": nvr.address, "username": "admin", "password": SIM_PASSWORD, "cameras": ["101"],
                "start": T.isoformat(), "end": end.isoformat(), "takes_earlier": True, "folder": str(out)}
        wall, rss = timed([sys.executable, "-c", "from bench.download import run_ours; run_ours()"], json.dumps(task))
        assert sum(p.stat().st_size for p in out.glob("*.mp4")) == total
    elif tool == "hikload":
        wall, rss = timed([sys.executable, "-m", "hikload", "--server", nvr.address, "--username", "admin",
                           "--password", SIM_PASSWORD, "--starttime", T.isoformat(), "--endtime",
                           (end - timedelta(seconds=1)).isoformat(), "--cameras", "101", "--downloads", str(out)])
    else:
        curl = ["curl", "--silent", "--fail"]
        for i, rec in enumerate(case["recordings"]):
            uri = rec.playback_uri(nvr.address).replace("&", "&amp;")
            curl += (["--next"] if i else []) + [
                "--digest", "-u", f"admin:{SIM_PASSWORD}", "-X", "GET", "--data",
                f"<downloadRequest><playbackURI>{uri}</playbackURI></downloadRequest>",
                "-o", str(out / rec.name), "--create-dirs", f"{nvr.url}/ISAPI/ContentMgmt/download"]
        wall, rss = timed(curl)
        assert sum(p.stat().st_size for p in out.glob("*.mp4")) == total
    shutil.rmtree(out, ignore_errors=True)
    return {"mbps": total / 1e6 / wall, "rss": rss}


TOOLS = {"ours": "taskclient hikload runner", "hikload": "plain hikload 1.1.4", "curl": "curl --digest (the limit)"}


def main() -> None:
    args = options(__doc__)
    big = 50_000_000 if args.quick else 257_000_000  # ~1.17x this after the simulator's size spread
    many = 10 if args.quick else 50
    with Workspace() as ws:
        cases = [prepare(ws, "1 large recording", big, 3600, 1), prepare(ws, f"{many} x 5 MB", 5_000_000, 600, many)]
        runs = interleaved({(c["label"], tool): (lambda c=c, tool=tool: fetch(ws, c, tool))
                            for c in cases for tool in TOOLS}, args.rounds)
    rows, worst, peak = [], [], 0.0
    for c in cases:
        limit = [r["mbps"] for r in runs[(c["label"], "curl")]]
        for tool, label in TOOLS.items():
            rates = [r["mbps"] for r in runs[(c["label"], tool)]]
            ratio = ratios(rates, limit)
            rows.append([c["label"], label, f"{c['total'] / 1e6:.0f}", fmt(spread(rates)), fmt(ratio),
                         fmt(spread([r["rss"] / 1e6 for r in runs[(c["label"], tool)]]))])
            if tool == "ours":
                worst.append(ratio)
                peak = max(peak, max(r["rss"] for r in runs[(c["label"], tool)]) / 1e6)
    slowest = min(worst, key=lambda r: r["median"])
    report("download", f"Download from nvrsim on loopback, one process, {args.rounds} interleaved round(s)",
           ["case", "tool", "MB", "MB/s, median (range)", "x curl (per round)", "peak RSS MB"], rows,
           [goal("ours >= 0.7x curl in the worst case", slowest, slowest["median"] >= 0.7, "x"),
            f"Goal peak RSS <= 100 MB whatever the size: {'met' if peak <= 100 else 'MISSED'}, {peak:.0f} MB at most."],
           {"runs": {"|".join(k): v for k, v in runs.items()}})


if __name__ == "__main__":
    main()
