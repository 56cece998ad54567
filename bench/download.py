"""Download: throughput and peak memory of one worker's download path against nvrsim on loopback.

Our hikload runner (search through hikload, streamed and verified download), plain
hikload 1.1.4 (`python -m hikload`), and `curl --digest` fetching the same
recordings in one process (the limit of what the simulator serves). Two cases:
one large recording, and 50 x 5 MB. Peak RSS from /usr/bin/time -v.
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


def case(ws: Workspace, label: str, size: int, interval: int, count: int) -> list[dict]:
    hours = interval * count / 3600
    nvr = start_nvr(ws.procs, channels=1, hours=max(1, int(hours + 0.999)), interval=interval, size=size)
    end = T + timedelta(seconds=interval * count)
    recordings = nvr.catalogue.recordings(101, T, end)
    total = sum(r.size for r in recordings)
    out = ws.path / label
    results = []

    task = {"id": 1, "server": nvr.address, "username": "admin", "password": SIM_PASSWORD, "cameras": ["101"],
            "start": T.isoformat(), "end": end.isoformat(), "takes_earlier": True, "folder": str(out / "ours")}
    wall, rss = timed([sys.executable, "-c", "from bench.download import run_ours; run_ours()"], json.dumps(task))
    assert sum(p.stat().st_size for p in (out / "ours").glob("*.mp4")) == total
    results.append({"tool": "taskclient hikload runner", "wall": wall, "rss": rss})

    wall, rss = timed([sys.executable, "-m", "hikload", "--server", nvr.address, "--username", "admin",
                       "--password", SIM_PASSWORD, "--starttime", T.isoformat(), "--endtime",
                       (end - timedelta(seconds=1)).isoformat(), "--cameras", "101",
                       "--downloads", str(out / "hikload")])
    results.append({"tool": "plain hikload 1.1.4", "wall": wall, "rss": rss})

    curl = ["curl", "--silent", "--fail"]
    for i, rec in enumerate(recordings):
        body = f"<downloadRequest><playbackURI>{rec.playback_uri(nvr.address).replace('&', '&amp;')}</playbackURI></downloadRequest>"
        curl += (["--next"] if i else []) + ["--digest", "-u", f"admin:{SIM_PASSWORD}", "-X", "GET", "--data", body,
                                             "-o", str(out / "curl" / rec.name), "--create-dirs",
                                             f"{nvr.url}/ISAPI/ContentMgmt/download"]
    wall, rss = timed(curl)
    assert sum(p.stat().st_size for p in (out / "curl").glob("*.mp4")) == total
    results.append({"tool": "curl --digest (the limit)", "wall": wall, "rss": rss})
    for r in results:
        r.update(case=label, mb=total / 1e6, mbps=total / 1e6 / r["wall"])
    return results


def main() -> None:
    args = options(__doc__)
    big = 50_000_000 if args.quick else 257_000_000  # ~1.17x this after the simulator's size spread
    many = 10 if args.quick else 50
    with Workspace() as ws:
        results = case(ws, "1 large recording", big, 3600, 1) + case(ws, f"{many} x 5 MB", 5_000_000, 600, many)
    rows = []
    for r in results:
        limit = next(x for x in results if x["case"] == r["case"] and x["tool"].startswith("curl"))
        rows.append([r["case"], r["tool"], r["mb"], r["mbps"], r["mbps"] / limit["mbps"], r["rss"] / 1e6])
    ours = [r for r in results if r["tool"].startswith("taskclient")]
    worst = min(r["mbps"] / next(x for x in results if x["case"] == r["case"] and x["tool"].startswith("curl"))["mbps"]
                for r in ours)
    peak = max(r["rss"] for r in ours) / 1e6
    report("download", "Download from nvrsim on loopback, one process",
           ["case", "tool", "MB", "MB/s", "x curl", "peak RSS MB"], rows,
           [f"Goals: ours >= 0.7x curl: worst case {worst:.2f}x ({'met' if worst >= 0.7 else 'MISSED'});"
            f" peak RSS <= 100 MB whatever the size: {peak:.0f} MB ({'met' if peak <= 100 else 'MISSED'})."],
           {"results": results})


if __name__ == "__main__":
    main()
