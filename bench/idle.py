"""Idle load: 200 idle workers polling a queue that is empty but not drained.

One task stays leased (its worker is busy elsewhere), so every claim is answered
"ask again after N s" and the workers poll as taskclient does: honouring the
coordinator's hint, with jitter. Measured: the coordinator's CPU (share of one
core) and the claim latency of one more worker asking every 100 ms. The open
dashboards/event streams part waits for the event stream to exist.
Run: python -m bench.idle [--quick]
"""
from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta

import psutil
import requests

from bench.common import Workspace, options, percentile, report, run_parallel
from tests.harness import start_coordinator

IDLE = 200
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


def main() -> None:
    args = options(__doc__)
    seconds = 8 if args.quick else 30
    from taskserver.store import Policy, TaskSpec, open_store

    with Workspace() as ws:
        db = ws.path / "idle.db"
        store = open_store(str(db), Policy())
        t0 = datetime(2026, 1, 1)
        store.add([TaskSpec(key="held", server="nvr-1", username="u", password="p", cameras=("101",),
                            start=t0.isoformat(), end=(t0 + timedelta(hours=1)).isoformat())])
        store.close()
        coordinator = start_coordinator(ws.procs, None, db, "--lease-seconds", "600", "--max-wait", "5")
        requests.get(f"{coordinator.url}/api/claim", params={"worker": "busy"}, timeout=10).json()  # hold it
        proc = psutil.Process(coordinator.pid)
        latencies = []
        done = threading.Event()

        def active() -> None:
            session = requests.Session()
            while not done.is_set():
                t = time.perf_counter()
                assert session.get(f"{coordinator.url}/api/claim", params={"worker": "active"},
                                   timeout=30).json()["status"] == "wait"
                latencies.append(time.perf_counter() - t)
                time.sleep(0.1)

        probe = threading.Thread(target=active)
        cpu0 = sum(proc.cpu_times()[:2])
        t = time.monotonic()
        probe.start()
        _, claims = run_parallel(idle_pollers, [(coordinator.url, IDLE // PROCESSES, seconds)] * PROCESSES)
        done.set()
        probe.join()
        elapsed = time.monotonic() - t
        cpu = (sum(proc.cpu_times()[:2]) - cpu0) / elapsed
    p99 = percentile(latencies, 99) * 1e3
    report("idle", f"Idle load: {IDLE} idle workers for {seconds} s",
           ["measure", "value"],
           [["idle claims answered", sum(claims)], ["idle claims per second", sum(claims) / elapsed],
            ["coordinator CPU, % of one core", cpu * 100], ["active worker claim p50 ms", percentile(latencies, 50) * 1e3],
            ["active worker claim p99 ms", p99]],
           [f"Goals: CPU <= 10% of a core: {cpu * 100:.1f}% ({'met' if cpu <= 0.10 else 'MISSED'}); claim p99 <= 50 ms:"
            f" {p99:.1f} ms ({'met' if p99 <= 50 else 'MISSED'}). Open event streams: not measured (no event stream yet)."],
           {"cpu": cpu, "latencies_ms": [x * 1e3 for x in latencies], "claims": sum(claims)})


if __name__ == "__main__":
    main()
