"""`make demo`: the flagship job end to end on this machine.

Starts a simulated NVR on 127.0.0.1:18554 (the address the sample tasks.xlsx
names), the coordinator with the sample sheet and a fresh SQLite file, and a
worker host with 2 workers that runs to the sentinel. Then checks every file
byte for byte against the simulator, prints a summary and stops what it started.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import requests

from nvrsim import Catalogue
from taskserver.sheet import load_sheet

HERE = Path(__file__).resolve().parent
RUN = HERE / "demo-run"
NVR_PORT = 18554
NVR = dict(channels=4, start=datetime(2026, 1, 1), end=datetime(2026, 1, 1, 6), interval=600, size=1_000_000)


def start(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=RUN,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def address(proc: subprocess.Popen, log: Path, what: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://\S+)", log.read_text())
        if found:
            return found.group(1)
        if proc.poll() is not None:
            sys.exit(f"demo: {what} failed to start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    sys.exit(f"demo: {what} did not start within 30 s; see {log}")


def main() -> int:
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir()
    specs = load_sheet(HERE / "tasks.xlsx")
    password = specs[0].password  # the simulator is given the sheet's password in its environment, not argv
    procs: list[subprocess.Popen] = []
    began = time.monotonic()
    try:
        nvr = start([sys.executable, "-m", "nvrsim", "--port", str(NVR_PORT), "--channels", str(NVR["channels"]),
                     "--start", NVR["start"].isoformat(), "--end", NVR["end"].isoformat(),
                     "--interval", str(NVR["interval"]), "--size", str(NVR["size"])],
                    RUN / "nvrsim.log", env={"NVRSIM_PASSWORD": password})
        procs.append(nvr)
        print(f"demo: simulated NVR on {address(nvr, RUN / 'nvrsim.log', 'nvrsim (is port 18554 free?)')}")
        server = start([sys.executable, "-m", "taskserver", "serve", "--tasks", str(HERE / "tasks.xlsx"),
                        "--db", str(RUN / "taskserver.db"), "--port", "0"], RUN / "coordinator.log")
        procs.append(server)
        url = address(server, RUN / "coordinator.log", "the coordinator")
        print(f"demo: coordinator on {url} with {len(specs)} task(s) from tasks.xlsx")
        print("demo: worker host with 2 workers:")
        client = subprocess.run([sys.executable, "-m", "taskclient", "--server", url, "--workers", "2",
                                 "--downloads", str(RUN / "downloads")], cwd=RUN)
        status = requests.get(f"{url}/api/status", timeout=10).json()
        checked = verify(RUN / "downloads")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    counts = status["counts"]
    print(f"\ndemo summary: {counts['done']} task(s) done, {counts['failed']} failed; {status['files']} files,"
          f" {status['bytes'] / 1e6:.1f} MB; {checked} files checked byte for byte against the NVR;"
          f" wall time {time.monotonic() - began:.1f} s")
    print(f"demo: files are in {RUN / 'downloads'}; logs and database in {RUN}")
    ok = client.returncode == 0 and counts["done"] == len(specs) and checked == status["files"]
    return 0 if ok else 1


def verify(downloads: Path) -> int:
    """Compare every exported file with the simulator's recordings (by content); return how many matched."""
    catalogue = Catalogue(NVR["channels"], NVR["start"], NVR["end"], NVR["interval"], NVR["size"])
    digests = {r.sha256() for track in catalogue.tracks()
               for r in catalogue.recordings(track, NVR["start"], NVR["end"])}
    matched = 0
    for path in sorted(downloads.rglob("*.bin")):
        if hashlib.sha256(path.read_bytes()).hexdigest() not in digests:
            print(f"demo: MISMATCH {path}")
            continue
        matched += 1
    return matched


if __name__ == "__main__":
    sys.exit(main())
