"""Dispatch: no-op tasks drained by 2 client processes x 2 workers.

Compares taskserver (claim + complete, every change committed to SQLite, the
completion carrying the next claim; then the same on PostgreSQL with one and with
two coordinators sharing the database) with the blog-post design (nothing durable),
RQ on the local Redis (SimpleWorker and the default forking worker) and the HTTP
ceiling (waitress answering a constant). Run: python -m bench.dispatch [--quick]
"""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta

import requests

from bench.common import Workspace, options, percentile, report, run_parallel, store_at
from tests.harness import PYTHON, postgres_missing, postgres_schema, start_coordinator, write_sheet

PROCESSES = 4  # 2 client processes x 2 workers


def ours_loop(url: str, worker: str) -> list[float]:
    """A worker's protocol loop with no work: claim, then complete-and-claim-next."""
    from taskclient.client import Coordinator

    api = Coordinator([url], worker)
    latencies = []
    t = time.perf_counter()
    answer = api.claim()
    latencies.append(time.perf_counter() - t)
    while answer["status"] == "task":
        t = time.perf_counter()
        answer = api.complete(answer["task"]["id"], answer["lease"]["id"], {"files": 0, "bytes": 0}, True)
        latencies.append(time.perf_counter() - t)
    return latencies


def ceiling_loop(url: str, count: int) -> list[float]:
    session = requests.Session()
    latencies = []
    for _ in range(count):
        t = time.perf_counter()
        session.get(url + "/api/claim", timeout=30).json()
        latencies.append(time.perf_counter() - t)
    return latencies


def blog_client(url: str) -> int:
    from bench.baselines.blogpost import run_client

    return run_client(url, _noop)


def _noop(row: str) -> None:
    return None


def bench_ours(ws: Workspace, n: int, db: str | None = None, coordinators: int = 1) -> dict:
    from taskserver.store import TaskSpec

    db = db or str(ws.path / "ours.db")
    store = store_at(db)
    start = datetime(2026, 1, 1)
    store.add([TaskSpec(key=f"t{i}", server=f"nvr-{i % 20}", username="u", password="p", cameras=("101",),
                        start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat()) for i in range(n)])
    store.close()
    urls = [start_coordinator(ws.procs, None, db, "--per-nvr", "1000", "--lease-seconds", "60").url
            for _ in range(coordinators)]
    url = urls[0]
    wall, results = run_parallel(ours_loop, [(urls[i % coordinators], f"bench/w{i}") for i in range(PROCESSES)])
    latencies = [x for r in results for x in r]
    done = requests.get(url + "/api/status", timeout=30).json()["counts"]["done"]
    assert done == n, f"only {done} of {n} done"
    return {"wall": wall, "rate": n / wall, "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3}


def bench_postgres(ws: Workspace, n: int) -> tuple[dict, dict] | tuple[None, None]:
    """Ours on PostgreSQL: one coordinator, then two sharing the database (workers split between them)."""
    missing = postgres_missing()
    if missing:
        print(f"PostgreSQL runs skipped: {missing}")
        return None, None
    with postgres_schema() as url:
        one = bench_ours(ws, n, url)
    with postgres_schema() as url:
        two = bench_ours(ws, n, url, coordinators=2)
    return one, two


def bench_blog(ws: Workspace, n: int) -> dict:
    sheet = write_sheet(ws.path / "blog.xlsx", [["admin", "pw", f"nvr-{i % 20}", 101] for i in range(n)])
    proc = ws.procs.start("blogpost", [PYTHON, "-m", "bench.baselines.blogpost", str(sheet), "0"],
                          ready=r"listening on (http://\S+)", cwd=_repo(), timeout=120)
    wall, counts = run_parallel(blog_client, [(proc.url,)] * 2)
    assert sum(counts) == n, f"blog-post clients ran {sum(counts)} of {n}"
    return {"wall": wall, "rate": n / wall}


def bench_ceiling(ws: Workspace, n: int) -> dict:
    proc = ws.procs.start("ceiling", [PYTHON, "-m", "bench.baselines.ceiling", "0"], ready=r"listening on (http://\S+)",
                          cwd=_repo())
    wall, results = run_parallel(ceiling_loop, [(proc.url, n // PROCESSES)] * PROCESSES)
    latencies = [x for r in results for x in r]
    return {"wall": wall, "rate": len(latencies) / wall, "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3}


def bench_rq(ws: Workspace, n: int, worker_class: str) -> dict | None:
    try:
        import redis
        from rq import Queue
    except ImportError:
        print("RQ baseline skipped: rq is not installed (pip install -e '.[bench]')")
        return None
    conn = redis.Redis(host="127.0.0.1", port=6379, db=15)
    try:
        conn.ping()
    except redis.RedisError:
        print("RQ baseline skipped: no Redis on 127.0.0.1:6379")
        return None
    conn.flushdb()  # db 15 is the benchmark's own
    queue = Queue("bench", connection=conn)
    jobs = [Queue.prepare_data("bench.baselines.rq_jobs.noop", result_ttl=0) for _ in range(n)]
    for i in range(0, n, 1000):
        queue.enqueue_many(jobs[i:i + 1000])
    argv = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--quiet", "--url", "redis://127.0.0.1:6379/15",
            "--worker-class", worker_class, "bench"]
    t = time.perf_counter()
    workers = [subprocess.Popen(argv, cwd=_repo(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(PROCESSES)]
    for w in workers:
        w.wait(1800)
    wall = time.perf_counter() - t
    left = len(queue)
    conn.flushdb()
    assert left == 0, f"RQ left {left} jobs"
    return {"wall": wall, "rate": n / wall}


def _repo() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent)


def main() -> None:
    args = options(__doc__)
    n = 2_000 if args.quick else 20_000
    n_fork = 200 if args.quick else 2_000
    with Workspace() as ws:
        ours = bench_ours(ws, n)
        pg_one, pg_two = bench_postgres(ws, n)
        blog = bench_blog(ws, n)
        ceiling = bench_ceiling(ws, n)
        rq_simple = bench_rq(ws, n, "rq.worker.SimpleWorker")
        rq_fork = bench_rq(ws, n_fork, "rq.worker.Worker")
    rows = [
        ["taskserver (durable, claim+complete)", n, ours["rate"], 1.0, ours["rate"] / blog["rate"],
         ours["rate"] / ceiling["rate"], f"{ours['p50_ms']:.2f} / {ours['p99_ms']:.2f}"],
    ]
    for label, r in (("taskserver on PostgreSQL, 1 coordinator", pg_one),
                     ("taskserver on PostgreSQL, 2 coordinators", pg_two)):
        if r:
            rows.append([label, n, r["rate"], r["rate"] / ours["rate"], r["rate"] / blog["rate"],
                         r["rate"] / ceiling["rate"], f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"])
    rows += [
        ["blog-post design (nothing durable)", n, blog["rate"], blog["rate"] / ours["rate"], 1.0,
         blog["rate"] / ceiling["rate"], "-"],
    ]
    for label, r, count in (("RQ SimpleWorker", rq_simple, n), ("RQ forking Worker", rq_fork, n_fork)):
        if r:
            rows.append([label, count, r["rate"], r["rate"] / ours["rate"], r["rate"] / blog["rate"],
                         r["rate"] / ceiling["rate"], "-"])
    rows.append(["HTTP ceiling (constant answer)", n, ceiling["rate"], ceiling["rate"] / ours["rate"],
                 ceiling["rate"] / blog["rate"], 1.0, f"{ceiling['p50_ms']:.2f} / {ceiling['p99_ms']:.2f}"])
    goals = [f"Goal: ours >= 1.0x the blog-post design: {ours['rate'] / blog['rate']:.2f}x "
             f"({'met' if ours['rate'] >= blog['rate'] else 'MISSED'}); ours >= 0.5x the ceiling: "
             f"{ours['rate'] / ceiling['rate']:.2f}x ({'met' if ours['rate'] >= 0.5 * ceiling['rate'] else 'MISSED'})."]
    report("dispatch", f"Dispatch: {n} no-op tasks, 2 processes x 2 workers",
           ["system", "tasks", "tasks/s", "x ours", "x blog-post", "x ceiling", "latency p50 / p99 ms"],
           rows, goals, {"ours": ours, "postgres_1": pg_one, "postgres_2": pg_two, "blog": blog, "ceiling": ceiling, "rq_simple": rq_simple, "rq_fork": rq_fork})


if __name__ == "__main__":
    main()
