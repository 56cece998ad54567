"""Dispatch: no-op tasks drained by the same client shape for every system, in interleaved rounds.

Every system is pulled by 2 client processes, one puller each, on keep-alive
connections (Celery and RQ: 2 workers). taskserver commits every claim and
completion (SQLite with synchronous=FULL, group commit; PostgreSQL), the completion
carrying the next claim; its opt-in batches row leases 8 tasks per request. The
blog-post design keeps nothing: its literal client fetches 2 rows and runs them in a
pool of 2 before fetching again; the same server with our pullers fetches one row
per request. Ratios are computed round by round. PostgreSQL's round trips per
complete-and-claim are counted at the protocol level (libpq's trace: this server has
no pg_stat_statements preloaded, which would need a restart).
Run: python -m bench.dispatch [--quick] [--rounds K]
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta

import requests

from bench import common
from bench.common import Workspace, fmt, goal, interleaved, options, percentile, ratios, report, spread, store_at
from tests.harness import PYTHON, postgres_missing, postgres_schema, start_coordinator, write_sheet

PULLERS = 2  # client processes, one puller each, keep-alive
SHAPE = "2 processes x 1 puller, keep-alive"
BATCH = 8


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


def batch_loop(url: str, worker: str) -> list[float]:
    """The opt-in batch loop: report the finished batch and lease the next one in one request."""
    from taskclient.client import Coordinator

    api = Coordinator([url], worker)
    latencies, answer = [], api.exchange([], BATCH)
    while answer.get("status") in ("task", "wait"):
        t = time.perf_counter()
        done = [{"id": t["task"]["id"], "lease": t["lease"]["id"], "result": {"files": 0, "bytes": 0}}
                for t in answer.get("tasks", [])]
        if not done:
            time.sleep(answer.get("retry_after", 0.1))
        answer = api.exchange(done, BATCH)
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


def blog_puller(url: str) -> int:
    from bench.baselines.blogpost_pullers import pull

    return pull(url)


def _noop(row: str) -> None:
    return None


def fill(db: str, n: int) -> None:
    from taskserver.store import TaskSpec

    store = store_at(db)
    start = datetime(2026, 1, 1)
    store.add([TaskSpec(key=f"t{i}", server=f"nvr-{i % 20}", username="u", password="p", cameras=("101",),
                        start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat()) for i in range(n)])
    store.close()


def bench_ours(ws: Workspace, n: int, db: str | None = None, loop=ours_loop) -> dict:
    db = db or str(ws.path / f"ours-{uuid.uuid4().hex[:8]}.db")
    fill(db, n)
    coordinator = start_coordinator(ws.procs, None, db, "--per-nvr", "1000", "--lease-seconds", "60")
    wall, results = common.run_parallel(loop, [(coordinator.url, f"bench/w{i}") for i in range(PULLERS)])
    latencies = [x for r in results for x in r]
    done = requests.get(coordinator.url + "/api/status", timeout=30).json()["counts"]["done"]
    coordinator.kill()
    assert done == n, f"only {done} of {n} done"
    return {"rate": n / wall, "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3}


def bench_postgres(ws: Workspace, n: int) -> dict | None:
    missing = postgres_missing()
    if missing:
        print(f"PostgreSQL runs skipped: {missing}")
        return None
    with postgres_schema() as url:
        return bench_ours(ws, n, url)


def round_trips(count: int = 200) -> float | None:
    """Round trips to PostgreSQL per complete-and-claim, at steady state, counted in libpq's protocol trace."""
    if postgres_missing():
        return None
    with postgres_schema() as url:
        fill(url, count + 10)
        store = store_at(url)
        claim = store.claim("w")
        conn = store._db().conn
        with tempfile.TemporaryFile() as trace:
            conn.pgconn.trace(trace.fileno())
            for _ in range(count):
                claim = store.complete(claim.task["id"], claim.lease["id"], {}, next_for="w")
            conn.pgconn.untrace()
            trace.seek(0)
            directions = [line.split(b"\t")[1] for line in trace.read().splitlines() if line.count(b"\t") >= 2]
        store.close()
    return sum(1 for a, b in zip(directions, directions[1:], strict=False) if (a, b) == (b"F", b"B")) / count


def bench_blog(ws: Workspace, n: int, client=blog_client) -> dict:
    sheet = ws.path / f"blog-{n}.xlsx"
    if not sheet.exists():
        write_sheet(sheet, [["admin", "pw", f"nvr-{i % 20}", 101] for i in range(n)])
    proc = ws.procs.start("blogpost", [PYTHON, "-m", "bench.baselines.blogpost", str(sheet), "0"],
                          ready=r"listening on (http://\S+)", cwd=_repo(), timeout=120)
    wall, counts = common.run_parallel(client, [(proc.url,)] * PULLERS)
    proc.kill()
    assert sum(counts) == n, f"blog-post clients ran {sum(counts)} of {n}"
    return {"rate": n / wall}


def bench_ceiling(ws: Workspace, n: int) -> dict:
    proc = ws.procs.start("ceiling", [PYTHON, "-m", "bench.baselines.ceiling", "0"], ready=r"listening on (http://\S+)",
                          cwd=_repo())
    wall, results = common.run_parallel(ceiling_loop, [(proc.url, n // PULLERS)] * PULLERS)
    proc.kill()
    latencies = [x for r in results for x in r]
    return {"rate": len(latencies) / wall, "p50_ms": percentile(latencies, 50) * 1e3,
            "p99_ms": percentile(latencies, 99) * 1e3}


def _redis(db: int):
    try:
        import redis
    except ImportError:
        return None
    conn = redis.Redis(host="127.0.0.1", port=6379, db=db)
    try:
        conn.ping()
    except redis.RedisError:
        return None
    return conn


def bench_rq(ws: Workspace, n: int) -> dict | None:
    conn = _redis(15)
    if conn is None:
        print("RQ baseline skipped: rq or Redis on 127.0.0.1:6379 missing")
        return None
    from rq import Queue

    conn.flushdb()  # db 15 is the benchmark's own
    queue = Queue("bench", connection=conn)
    jobs = [Queue.prepare_data("bench.baselines.rq_jobs.noop", result_ttl=0) for _ in range(n)]
    for i in range(0, n, 1000):
        queue.enqueue_many(jobs[i:i + 1000])
    argv = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--quiet", "--url", "redis://127.0.0.1:6379/15",
            "--worker-class", "rq.worker.SimpleWorker", "bench"]
    t = time.perf_counter()
    workers = [subprocess.Popen(argv, cwd=_repo(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(PULLERS)]
    for w in workers:
        w.wait(1800)
    wall = time.perf_counter() - t
    left = len(queue)
    conn.flushdb()
    assert left == 0, f"RQ left {left} jobs"
    return {"rate": n / wall}


def bench_celery(ws: Workspace, n: int) -> dict | None:
    """Celery 5: 2 workers x concurrency 1, late acks; timed from the first task taken to the last acknowledged."""
    conn = _redis(14)
    try:
        from bench.baselines.celery_jobs import noop
    except ImportError:
        print("Celery baseline skipped: pip install -e '.[bench]'")
        return None
    if conn is None:
        print("Celery baseline skipped: no Redis on 127.0.0.1:6379")
        return None
    conn.flushdb()  # db 14 is the benchmark's own
    with noop.app.producer_pool.acquire(block=True) as producer:
        for _ in range(n):
            noop.apply_async(producer=producer)
    assert conn.llen("celery") == n
    workers = [ws.procs.start("celery", [PYTHON, "-m", "celery", "-A", "bench.baselines.celery_jobs", "worker",
                                         "--concurrency", "1", "--loglevel", "WARNING", "--without-gossip",
                                         "--without-mingle", "--without-heartbeat", "-n", f"bench{i}@%h"],
                              cwd=_repo()) for i in range(PULLERS)]
    deadline = time.monotonic() + 1800
    while conn.llen("celery") == n and time.monotonic() < deadline:
        time.sleep(0.005)
    t = time.perf_counter()
    while (conn.llen("celery") or conn.hlen("unacked")) and time.monotonic() < deadline:
        time.sleep(0.005)
    wall = time.perf_counter() - t
    left = conn.llen("celery") + conn.hlen("unacked")
    for w in workers:
        w.kill()
    conn.flushdb()
    assert left == 0, f"Celery left {left} tasks"
    return {"rate": n / wall}


def _repo() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parent.parent)


ROWS = [  # name in the results, label, client shape
    ("sqlite", "taskserver, SQLite (durable, group commit)", f"{SHAPE}, complete-with-next"),
    ("sqlite_batch", f"taskserver, SQLite, opt-in batches of {BATCH}", f"{SHAPE}, batch of {BATCH} per request"),
    ("postgres", "taskserver, PostgreSQL, 1 coordinator", f"{SHAPE}, complete-with-next"),
    ("blog_pullers", "blog-post server, same pullers as ours", f"{SHAPE}, one GET per task"),
    ("blog", "blog-post design, the blog's literal loop", "2 processes x pool of 2, keep-alive, batch of 2"),
    ("celery", "Celery 5, late acks, local Redis", "2 workers x concurrency 1, prefetch 1"),
    ("rq", "RQ SimpleWorker, local Redis", "2 burst workers"),
    ("ceiling", "HTTP ceiling (waitress, constant answer)", f"{SHAPE}, one GET per request"),
]


def main() -> None:
    args = options(__doc__)
    n = 1_000 if args.quick else 10_000
    with Workspace() as ws:
        runs = interleaved({
            "sqlite": lambda: bench_ours(ws, n),
            "sqlite_batch": lambda: bench_ours(ws, n, loop=batch_loop),
            "postgres": lambda: bench_postgres(ws, n),
            "blog_pullers": lambda: bench_blog(ws, n, blog_puller),
            "blog": lambda: bench_blog(ws, n),
            "celery": lambda: bench_celery(ws, n),
            "rq": lambda: bench_rq(ws, n),
            "ceiling": lambda: bench_ceiling(ws, n),
        }, args.rounds)
        trips = round_trips(50 if args.quick else 200)
    rates = {name: [r["rate"] for r in results] for name, results in runs.items()}
    base = rates["blog_pullers"]
    rows = []
    for name, label, shape in ROWS:
        if name not in rates:
            continue
        latency = runs[name][0].get("p50_ms")
        rows.append([label, shape, fmt(spread(rates[name])), fmt(ratios(rates[name], base)),
                     fmt(ratios(rates[name], rates["blog"])),
                     fmt(ratios(rates[name], rates["sqlite"])),
                     "-" if latency is None else f"{spread([r['p50_ms'] for r in runs[name]])['median']:.2f} / "
                                                 f"{spread([r['p99_ms'] for r in runs[name]])['median']:.2f}"])
    notes = []
    vs_blog = ratios(rates["sqlite"], base)
    notes.append(goal("SQLite >= 1.0x the blog-post server with the same pullers", vs_blog, vs_blog["median"] >= 1.0,
                      "x"))
    if "celery" in rates:
        best = [max(a, b) for a, b in zip(rates["sqlite"], rates["sqlite_batch"], strict=True)]
        stretch = ratios(best, rates["celery"])
        notes.append(goal("(stretch) SQLite >= Celery, best of single and batched", stretch,
                          stretch["median"] >= 1.0, "x"))
    if "postgres" in rates:
        pg = ratios(rates["postgres"], rates["sqlite"])
        notes.append(goal("PostgreSQL >= 0.7x SQLite, 1 coordinator", pg, pg["median"] >= 0.7, "x"))
    if trips is not None:
        notes.append(f"Goal PostgreSQL complete-and-claim in <= 3 round trips: {'met' if trips <= 3 else 'MISSED'},"
                     f" {trips:.2f} per task (libpq protocol trace, 200 tasks at steady state)")
    report("dispatch", f"Dispatch: {n:,} no-op tasks per round, {args.rounds} interleaved round(s)",
           ["system", "client shape", "tasks/s, median (range)", "x blog-post server, same pullers",
            "x blog-post literal loop", "x taskserver SQLite", "latency p50 / p99 ms"], rows, notes,
           {"tasks": n, "runs": runs, "round_trips_postgres": trips})


if __name__ == "__main__":
    main()
