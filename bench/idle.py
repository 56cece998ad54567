"""Idle load: 200 idle workers polling a queue that is empty but not drained.

One task stays leased (its worker is busy elsewhere), so every claim is answered
"ask again after N s" and the workers poll as taskclient does: honouring the
coordinator's hint, with jitter. Measured: the coordinator's CPU (share of one
core) and the claim latency of one more worker asking every 100 ms; first alone,
then with 20 dashboards' event streams open as well.
Run: python -m bench.idle [--quick] [--rounds K]
"""
from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta

import psutil
import requests

from bench.common import (
    Workspace,
    fmt,
    goal,
    interleaved,
    options,
    percentile,
    ratios,
    report,
    run_parallel,
    spread,
    store_at,
)
from tests.harness import start_coordinator

IDLE = 200
STREAMS = 20
PROCESSES = 4


def idle_pollers(url: str, threads: int, seconds: float) -> int:
    """`threads` idle workers in one process; returns the claims they made."""
    stop = time.monotonic() + seconds
    counts = []

    def poll(n: int) -> None:
        session, made = requests.Session(), 0
        time.sleep(random.uniform(0, 2))  # workers do not all start in the same instant
        while time.monotonic() < stop:
            answer = session.get(f"{url}/api/claim", params={"worker": f"idle/{n}"}, timeout=30).json()
            made += 1
            time.sleep(answer.get("retry_after", 1) * random.uniform(0.8, 1.2))
        counts.append(made)

    pool = [threading.Thread(target=poll, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(counts)


def open_streams(url: str, count: int, done: threading.Event) -> list[threading.Thread]:
    """`count` dashboards following /api/events until `done`."""
    def follow() -> None:
        with requests.get(f"{url}/api/events", stream=True, timeout=(10, 30)) as response:
            assert response.status_code == 200, response.text
            for _ in response.iter_lines():
                if done.is_set():
                    return

    streams = [threading.Thread(target=follow, daemon=True) for _ in range(count)]
    for s in streams:
        s.start()
    return streams


def measure(url: str, pid: int, seconds: float, streams: int) -> dict:
    """Idle workers (plus `streams` open event streams) for `seconds`: coordinator CPU and a claim's latency."""
    proc = psutil.Process(pid)
    latencies = []
    done = threading.Event()

    def active() -> None:
        session = requests.Session()
        while not done.is_set():
            t = time.perf_counter()
            assert session.get(f"{url}/api/claim", params={"worker": "active"}, timeout=30).json()["status"] == "wait"
            latencies.append(time.perf_counter() - t)
            time.sleep(0.1)

    followers = open_streams(url, streams, done)
    probe = threading.Thread(target=active)
    cpu0 = sum(proc.cpu_times()[:2])
    t = time.monotonic()
    probe.start()
    _, claims = run_parallel(idle_pollers, [(url, IDLE // PROCESSES, seconds)] * PROCESSES)
    done.set()
    probe.join()
    elapsed = time.monotonic() - t
    cpu = (sum(proc.cpu_times()[:2]) - cpu0) / elapsed
    for f in followers:
        f.join(10)  # each ends at its stream's next line (a summary every few seconds)
    return {"cpu": cpu, "claims": sum(claims), "rate": sum(claims) / elapsed,
            "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3}


def main() -> None:
    args = options(__doc__)
    seconds = 5 if args.quick else 15
    from taskserver.store import TaskSpec

    with Workspace() as ws:
        db = ws.path / "idle.db"
        store = store_at(str(db))
        t0 = datetime(2026, 1, 1)
        store.add([TaskSpec(key="held", server="nvr-1", username="u", password="p", cameras=("101",),
                            start=t0.isoformat(), end=(t0 + timedelta(hours=1)).isoformat())])
        store.close()
        coordinator = start_coordinator(ws.procs, None, db, "--lease-seconds", "600", "--max-wait", "5")
        requests.get(f"{coordinator.url}/api/claim", params={"worker": "busy"}, timeout=10).json()  # hold it
        runs = interleaved({"alone": lambda: measure(coordinator.url, coordinator.pid, seconds, 0),
                            "streams": lambda: measure(coordinator.url, coordinator.pid, seconds, STREAMS)},
                           args.rounds)
    labels = {"alone": f"{IDLE} idle workers", "streams": f"{IDLE} idle workers + {STREAMS} event streams"}
    cpu_alone = [r["cpu"] for r in runs["alone"]]
    rows = [[labels[name], fmt(spread([r["rate"] for r in runs[name]])),
             fmt(spread([r["cpu"] * 100 for r in runs[name]])),
             fmt(ratios([r["cpu"] for r in runs[name]], cpu_alone)),
             fmt(spread([r["p50_ms"] for r in runs[name]])), fmt(spread([r["p99_ms"] for r in runs[name]]))]
            for name in runs]
    cpu = spread([r["cpu"] * 100 for r in runs["streams"]])
    p99 = spread([r["p99_ms"] for r in runs["streams"]])
    report("idle", f"Idle load: {IDLE} idle workers for {seconds} s, alone and with {STREAMS} open event streams,"
           f" {args.rounds} interleaved round(s)",
           ["load", "idle claims/s", "coordinator CPU % of a core", "x CPU without streams (per round)",
            "active claim p50 ms", "active claim p99 ms"], rows,
           [goal("(with the streams open) CPU <= 10% of a core", cpu, cpu["median"] <= 10, "%"),
            goal("(with the streams open) claim p99 <= 50 ms", p99, p99["median"] <= 50, " ms")],
           {"runs": runs})


if __name__ == "__main__":
    main()
