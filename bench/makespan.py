"""Makespan: 200 tasks with heavy-tailed durations on 3 hosts x 2 workers, 5 NVRs capped at 2.

Real NVR exports run from minutes to an hour; here seconds, scaled down. The
lower bound is max(total work / workers, longest task). taskserver hands out the
longest ranges first; "sheet order" gives every task the same range length so
only the order of the sheet remains, isolating what scheduling is worth. The
blog-post client fetches 2 tasks and waits for both before fetching again.
Run: python -m bench.makespan [--quick]
"""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta

from bench.common import Workspace, options, report, run_parallel, store_at
from tests.harness import PYTHON, start_coordinator

HOSTS, PER_HOST, NVRS = 3, 2, 5


def durations(n: int, seed: int = 7) -> list[float]:
    """Many short tasks, a few long ones, in shuffled sheet order."""
    rng = random.Random(seed)
    values = [rng.uniform(0.5, 2.0) if rng.random() < 0.12 else rng.uniform(0.02, 0.15) for _ in range(n)]
    rng.shuffle(values)
    return values


def ours_worker(url: str, name: str) -> int:
    from taskclient.client import Coordinator

    api = Coordinator([url], name)
    answer, done = api.claim(), 0
    while answer["status"] != "drained":
        if answer["status"] == "wait":
            time.sleep(min(0.05, answer["retry_after"]))
            answer = api.claim()
            continue
        time.sleep(float(answer["task"]["name"]))  # the task's work
        answer = api.complete(answer["task"]["id"], answer["lease"]["id"], {}, True)
        done += 1
    return done


def blog_host(url: str) -> int:
    from bench.baselines.blogpost import run_client

    return run_client(url, _sleep_row)


def _sleep_row(row: str) -> None:
    time.sleep(float(row.split(",")[4]))


def bench_ours(ws: Workspace, work: list[float], spans: bool) -> float:
    from taskserver.store import TaskSpec

    db = ws.path / f"ours-{spans}.db"
    store = store_at(str(db))
    t0 = datetime(2026, 1, 1)
    store.add([TaskSpec(key=f"t{i}", server=f"nvr-{i % NVRS}", username="u", password="p", cameras=("101",),
                        start=t0.isoformat(), end=(t0 + timedelta(hours=d if spans else 1)).isoformat(),
                        name=repr(d)) for i, d in enumerate(work)])
    store.close()
    url = start_coordinator(ws.procs, None, db, "--per-nvr", "2", "--max-wait", "0.05").url
    wall, counts = run_parallel(ours_worker, [(url, f"h{h}/w{w}") for h in range(HOSTS) for w in range(PER_HOST)])
    assert sum(counts) == len(work)
    return wall


def bench_blog(ws: Workspace, work: list[float]) -> float:
    from tests.harness import write_sheet

    sheet = write_sheet(ws.path / "blog.xlsx", [["u", "p", f"nvr-{i % NVRS}", 101, d] for i, d in enumerate(work)])
    proc = ws.procs.start("blogpost", [PYTHON, "-m", "bench.baselines.blogpost", str(sheet), "0"],
                          ready=r"listening on (http://\S+)", cwd=str(ws_repo()))
    wall, counts = run_parallel(blog_host, [(proc.url,)] * HOSTS)
    assert sum(counts) == len(work)
    return wall


def ws_repo():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


def main() -> None:
    args = options(__doc__)
    work = durations(60 if args.quick else 200)
    bound = max(sum(work) / (HOSTS * PER_HOST), max(work))
    with Workspace() as ws:
        results = {"taskserver (longest first, NVR caps)": bench_ours(ws, work, spans=True),
                   "taskserver, sheet order (NVR caps)": bench_ours(ws, work, spans=False),
                   "blog-post client (batches of 2, no caps)": bench_blog(ws, work)}
    rows = [[name, len(work), wall, wall / bound] for name, wall in results.items()]
    ours = results["taskserver (longest first, NVR caps)"] / bound
    blog = results["blog-post client (batches of 2, no caps)"] / bound
    report("makespan", f"Makespan: {len(work)} heavy-tailed tasks, {HOSTS} hosts x {PER_HOST} workers, {NVRS} NVRs",
           ["system", "tasks", "makespan s", "x lower bound"], rows,
           [f"Lower bound {bound:.2f} s (total work {sum(work):.1f} s / {HOSTS * PER_HOST} workers, longest"
            f" {max(work):.2f} s). Goal: ours <= 1.05x: {ours:.3f}x ({'met' if ours <= 1.05 else 'MISSED'});"
            f" the batch barrier costs the blog-post client {blog:.3f}x."],
           {"bound": bound, "results": results})


if __name__ == "__main__":
    main()
