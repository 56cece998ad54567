"""Makespan: heavy-tailed tasks on 3 worker hosts x 2 workers, 5 NVRs capped at 2, in interleaved rounds.

Real NVR exports run from minutes to an hour. Here the task durations are scaled
down to seconds; the product's timings are not: the coordinator runs with its
default settings (leases, retries, the "ask again after" hint of up to 5 s) and each
host is the shipped worker pool, `python -m taskclient --runner command --command
'sleep {name}'`, which claims as it does in production. The lower bound is
max(total work / workers, longest task), raised to what the NVR caps allow at best
(see lower_bounds). taskserver hands out the longest ranges first; "sheet order"
gives every task the same range length, so only the order of the sheet remains. The blog-post client fetches 2 tasks and waits for both before
fetching again. Run: python -m bench.makespan [--quick] [--rounds K]
"""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

import requests

from bench.common import Workspace, fmt, goal, interleaved, options, report, run_parallel, spread, store_at
from tests.harness import PYTHON, start_client, start_coordinator, wait_for

HOSTS, PER_HOST, NVRS, CAP = 3, 2, 5, 2


def durations(n: int, scale: float, seed: int = 7) -> list[float]:
    """Many short tasks, a few long ones (a heavy tail), in shuffled sheet order."""
    rng = random.Random(seed)
    values = [round(scale * (rng.uniform(10, 30) if rng.random() < 0.12 else rng.uniform(1, 4)), 2)
              for _ in range(n)]
    rng.shuffle(values)
    return values


def blog_host(url: str) -> int:
    from bench.baselines.blogpost import run_client

    return run_client(url, _sleep_row)


def _sleep_row(row: str) -> None:
    time.sleep(float(row.split(",")[4]))


DEFAULTS = ("--lease-seconds", "60", "--backoff-base", "10", "--backoff-max", "600", "--max-wait", "5",
            "--nvr-backoff", "5", "--per-nvr", str(CAP))  # the product's defaults, over the tests' short timings


def lower_bounds(work: list[float]) -> tuple[float, float]:
    """How soon any schedule could end: (ignoring the NVR caps, with them).

    Ignoring the caps: the larger of total work / workers and the longest task. With
    them, an NVR's tasks run on at most CAP slots: no sooner than its work / CAP, and
    when it has more than CAP tasks, two of its CAP + 1 longest share a slot.
    """
    free = max(sum(work) / (HOSTS * PER_HOST), max(work))
    capped = free
    for nvr in range(NVRS):
        mine = sorted((d for i, d in enumerate(work) if i % NVRS == nvr), reverse=True)
        capped = max(capped, sum(mine) / CAP)
        if len(mine) > CAP:
            capped = max(capped, mine[CAP - 1] + mine[CAP])
    return free, capped


def bench_ours(ws: Workspace, work: list[float], spans: bool) -> float:
    from taskserver.store import TaskSpec

    db = ws.path / f"ours-{spans}-{time.monotonic_ns()}.db"
    store = store_at(str(db))
    t0 = datetime(2026, 1, 1)
    store.add([TaskSpec(key=f"t{i}", server=f"nvr-{i % NVRS}", username="u", password="p", cameras=("101",),
                        start=t0.isoformat(), end=(t0 + timedelta(hours=d if spans else 1)).isoformat(),
                        name=repr(d)) for i, d in enumerate(work)])
    store.close()
    coordinator = start_coordinator(ws.procs, None, db, *DEFAULTS)
    t = time.perf_counter()
    hosts = [start_client(ws.procs, coordinator.url, ws.path / f"downloads-{h}", PER_HOST, "--runner", "command",
                          "--command", "sleep {name}", "--name", f"host{h}") for h in range(HOSTS)]
    # Makespan ends when the last task is done; idle workers then notice the sentinel at their next poll.
    wait_for(lambda: requests.get(coordinator.url + "/api/status", timeout=30).json()["counts"]["done"] == len(work),
             timeout=1800, interval=0.05, what="every task done")
    wall = time.perf_counter() - t
    for host in hosts:
        assert host.wait(60) == 0, host.output()[-2000:]
    coordinator.kill()
    return wall


def bench_blog(ws: Workspace, work: list[float]) -> float:
    from tests.harness import write_sheet

    sheet = write_sheet(ws.path / "blog.xlsx", [["u", "p", f"nvr-{i % NVRS}", 101, d] for i, d in enumerate(work)])
    proc = ws.procs.start("blogpost", [PYTHON, "-m", "bench.baselines.blogpost", str(sheet), "0"],
                          ready=r"listening on (http://\S+)", cwd=str(ws_repo()))
    wall, counts = run_parallel(blog_host, [(proc.url,)] * HOSTS)
    proc.kill()
    assert sum(counts) == len(work)
    return wall


def ws_repo():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


def main() -> None:
    args = options(__doc__)
    work = durations(12, 0.25) if args.quick else durations(36, 1.0)
    free, bound = lower_bounds(work)
    labels = {"spans": "taskserver, longest range first, NVR caps", "order": "taskserver, sheet order, NVR caps",
              "blog": "blog-post client (batches of 2, no caps)"}
    shapes = {"spans": f"{HOSTS} x `taskclient --workers {PER_HOST} --runner command`, default settings",
              "order": f"{HOSTS} x `taskclient --workers {PER_HOST} --runner command`, default settings",
              "blog": f"{HOSTS} processes x pool of {PER_HOST}"}
    with Workspace() as ws:
        runs = interleaved({"spans": lambda: bench_ours(ws, work, spans=True),
                            "order": lambda: bench_ours(ws, work, spans=False),
                            "blog": lambda: bench_blog(ws, work)}, args.rounds)
    walls = {name: spread(values) for name, values in runs.items()}
    bounds = {name: spread([w / bound for w in values]) for name, values in runs.items()}
    frees = {name: spread([w / free for w in values]) for name, values in runs.items()}
    rows = [[labels[name], shapes[name], len(work), fmt(walls[name]), fmt(bounds[name]), fmt(frees[name])]
            for name in runs]
    report("makespan", f"Makespan: {len(work)} heavy-tailed tasks, {HOSTS} hosts x {PER_HOST} workers, {NVRS} NVRs,"
           f" {args.rounds} interleaved round(s)",
           ["system", "client shape", "tasks", "makespan s, median (range)", "x lower bound with the caps",
            "x lower bound ignoring them"], rows,
           [f"Lower bound with the caps {bound:.1f} s (each NVR's tasks on {CAP} slots); ignoring them {free:.1f} s"
            f" (total work {sum(work):.1f} s / {HOSTS * PER_HOST} workers, longest {max(work):.1f} s).",
            goal("taskserver <= 1.05x the lower bound with the caps", bounds["spans"],
                 bounds["spans"]["median"] <= 1.05, "x")],
           {"bound": bound, "bound_ignoring_caps": free, "work": work, "runs": runs})


if __name__ == "__main__":
    main()
