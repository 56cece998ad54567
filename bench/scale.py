"""Import and scale: a 100,000-row sheet on both stores, and claims with 1,000,000 tasks queued.

Import: `taskserver import` (a process of its own, wall time and peak RSS) against a
bare openpyxl read-only pass over the same file, on SQLite and on PostgreSQL; and
the peak memory of importing 1,000,000 rows (a CSV sheet) into each.
Claim cost: dispatch (2 pullers, complete-with-next) against a queue of 20,000 and
one of 1,000,000 tasks, on both stores, first never analysed, then after ANALYZE.
With the big SQLite queue: the coordinator's memory and /api/status. And claims
after churn: 20,000 complete-and-claims in process on a table never vacuumed, the
last 2,000 against the first 2,000 (PostgreSQL keeps every replaced row version
until a VACUUM; a claim must not read them all).
Run: python -m bench.scale [--quick] [--rounds K]
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime, timedelta

import psutil
import requests

from bench.common import Workspace, fmt, goal, interleaved, options, percentile, ratios, report, run_parallel, spread
from tests.harness import postgres_missing, postgres_schema, start_coordinator

T = datetime(2026, 1, 1)
NVRS = 200


def make_sheet(path, rows: int) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("tasks")
    sheet.append(["server", "username", "password", "cameras", "starttime", "endtime", "name"])
    for i in range(rows):
        start = T + timedelta(hours=i)
        sheet.append([f"10.0.0.{i % 200 + 1}", "admin", "pw", "101,201", start,
                      start + timedelta(hours=1), f"row {i}"])
    workbook.save(path)


BARE = ("import sys; from openpyxl import load_workbook; w = load_workbook(sys.argv[1], read_only=True);"
        " print(sum(1 for _ in w.worksheets[0].iter_rows(values_only=True)))")


def timed(argv: list[str]) -> dict:
    """Wall seconds and peak RSS of a command (GNU time)."""
    t = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed: {done.stderr[-1500:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1)) * 1024
    return {"wall": wall, "rss": rss}


def import_into(ws: Workspace, sheet, store: str) -> dict | None:
    argv = [sys.executable, "-m", "taskserver", "import", str(sheet)]
    if store == "sqlite":
        return timed([*argv, "--db", str(ws.path / f"import-{time.monotonic_ns()}.db"), "--create"])
    if postgres_missing():
        return None
    with postgres_schema() as url:
        return timed([*argv, "--db", url])


def make_csv(path, rows: int) -> None:
    """A big sheet as CSV (a million rows of .xlsx would take minutes just to write)."""
    with open(path, "w") as out:
        out.write("server,username,password,cameras,starttime,endtime\n")
        for i in range(rows):
            start = T + timedelta(minutes=i)
            out.write(f"10.0.0.{i % 200 + 1},admin,pw,101,{start:%Y-%m-%d %H:%M},"
                      f"{start + timedelta(hours=1):%Y-%m-%d %H:%M}\n")


# --- a big queue, filled in SQL (the fill is not what is measured) ---------------------------
COLUMNS = "key, name, server, username, cameras, start, \"end\", priority, source, grp, span, takes_earlier, created"


def fill(url: str, n: int) -> None:
    """`n` queued tasks over NVRS NVRs: the store makes the schema, the NVRs and logins; SQL the rest."""
    from bench.common import store_at
    from taskserver.store import TaskSpec

    store = store_at(url)
    store.add([TaskSpec(key=f"seed{i}", server=f"nvr-{i}", username="u", password="p", cameras=("101",),
                        start=T.isoformat(), end=(T + timedelta(hours=1)).isoformat()) for i in range(NVRS)])
    rows = (f"SELECT 'k' || g, '', 'nvr-' || (g - g / {NVRS} * {NVRS}), 'u', '101', '2026-01-01T00:00:00',"
            " '2026-01-01T01:00:00', 0, '', 'k' || g, 3600 * (1 + g - g / 3 * 3), 1, 0 FROM")  # no % in either
    with store._write() as db:
        if url.startswith("postgresql"):
            db.execute(f"INSERT INTO tasks ({COLUMNS}) {rows} generate_series(1, ?) AS g", (n - NVRS,))
        else:
            db.execute(f"INSERT INTO tasks ({COLUMNS}) WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1"
                       f" FROM s WHERE g < ?) {rows} s", (n - NVRS,))
    store.close()


def analyze(url: str) -> None:
    from bench.common import store_at

    store = store_at(url)
    store._db().execute("ANALYZE")
    store.close()


def dispatch(ws: Workspace, url: str, tasks: int, keep: dict | None = None) -> dict:
    """Complete-and-claim `tasks` tasks with 2 pullers against the queue at `url`."""
    coordinator = start_coordinator(ws.procs, None, url, "--per-nvr", "2", "--lease-seconds", "60")
    per = tasks // 2
    wall, results = run_parallel(_limited_loop, [(coordinator.url, f"bench/w{i}", per) for i in range(2)])
    latencies = [x for r in results for x in r]
    figures = {"rate": len(latencies) / wall, "p99_ms": percentile(latencies, 99) * 1e3}
    if keep is not None:
        status = []
        for _ in range(3):
            t = time.perf_counter()
            requests.get(coordinator.url + "/api/status", timeout=60).raise_for_status()
            status.append(time.perf_counter() - t)
        figures.update(rss=psutil.Process(coordinator.pid).memory_info().rss, status_ms=min(status) * 1e3)
    coordinator.kill()
    coordinator.popen.wait(10)
    return figures


def _limited_loop(url: str, worker: str, count: int) -> list[float]:
    from taskclient.client import Coordinator

    api = Coordinator([url], worker)
    latencies, answer = [], api.claim()
    for _ in range(count):
        t = time.perf_counter()
        answer = api.complete(answer["task"]["id"], answer["lease"]["id"], {}, True)
        latencies.append(time.perf_counter() - t)
    return latencies


def claim_cost(ws: Workspace, small: int, big: int, tasks: int, rounds: int) -> dict:
    """Dispatch against a small and a big queue on each store, never analysed, then analysed."""
    stores = {"sqlite": lambda size: str(ws.path / f"queue-{size}.db")}
    contexts, schemas = [], {}
    if not postgres_missing():
        def pg(size):  # one schema per size, kept for the whole benchmark
            if size not in schemas:
                contexts.append(postgres_schema())
                schemas[size] = contexts[-1].__enter__()
            return schemas[size]
        stores["postgres"] = pg
    sizes = (small + 2 * rounds * tasks, big)  # the small queue stays >= `small` throughout
    try:
        for url in stores.values():
            for size in sizes:
                fill(url(size), size)
        results = {}
        for analysed in (False, True):
            if analysed:
                for url in stores.values():
                    for size in sizes:
                        analyze(url(size))
            systems = {}
            for name, url in stores.items():
                for label, size in zip(("small", "big"), sizes, strict=True):
                    keep = {} if (name, label) == ("sqlite", "big") else None
                    systems[(name, label, analysed)] = (
                        lambda url=url, size=size, keep=keep: dispatch(ws, url(size), tasks, keep))
            results.update(interleaved(systems, rounds))
    finally:
        for context in contexts:
            context.__exit__(None, None, None)
    return results


def churn(ws: Workspace, store_kind: str, tasks: int, window: int) -> dict | None:
    """Complete-and-claim `tasks` tasks in process, one worker, never vacuumed: ms per task, first and last window."""
    from bench.common import store_at
    from bench.dispatch import fill as fill_even

    if store_kind == "postgres":
        if postgres_missing():
            return None
        context = postgres_schema()
        url = context.__enter__()
    else:
        context, url = None, str(ws.path / f"churn-{time.monotonic_ns()}.db")
    try:
        fill_even(url, tasks + 10)  # over 20 NVRs, as in the dispatch benchmark
        store = store_at(url)
        claim = store.claim("bench/w")
        marks = []
        for done in range(tasks):
            if done in (0, tasks - window):
                marks.append(time.perf_counter())
            claim = store.complete(claim.task["id"], claim.lease["id"], {}, next_for="bench/w")
            if done in (window - 1, tasks - 1):
                marks.append(time.perf_counter())
        store.close()
    finally:
        if context is not None:
            context.__exit__(None, None, None)
    return {"first_ms": (marks[1] - marks[0]) / window * 1e3, "last_ms": (marks[3] - marks[2]) / window * 1e3}


def main() -> None:
    args = options(__doc__)
    rows_n = 5_000 if args.quick else 100_000
    small, big = (2_000, 50_000) if args.quick else (20_000, 1_000_000)
    tasks = 300 if args.quick else 3_000
    with Workspace() as ws:
        sheet = ws.path / "big.xlsx"
        make_sheet(sheet, rows_n)
        imports = interleaved({
            "bare": lambda: timed([sys.executable, "-c", BARE, str(sheet)]),
            "sqlite": lambda: import_into(ws, sheet, "sqlite"),
            "postgres": lambda: import_into(ws, sheet, "postgres"),
        }, args.rounds)
        million = ws.path / "million.csv"
        make_csv(million, big)
        # One round: a peak of memory does not depend on the machine's load.
        big_imports = {name: import_into(ws, million, name) for name in ("sqlite", "postgres")}
        costs = claim_cost(ws, small, big, tasks, args.rounds)
        churned, window = (3_000, 500) if args.quick else (20_000, 2_000)
        churns = interleaved({name: lambda name=name: churn(ws, name, churned, window)
                              for name in ("sqlite", "postgres")}, args.rounds)
    bare = [r["wall"] for r in imports["bare"]]
    rows = [[f"bare openpyxl read-only pass, {rows_n:,} rows", fmt(spread(bare)), "1",
             fmt(spread([r["rss"] / 1e6 for r in imports["bare"]]))]]
    notes = []
    for name in ("sqlite", "postgres"):
        if name in imports:
            walls = [r["wall"] for r in imports[name]]
            ratio = ratios(walls, bare)
            rows.append([f"taskserver import into {name}, {rows_n:,} rows", fmt(spread(walls)), fmt(ratio),
                         fmt(spread([r["rss"] / 1e6 for r in imports[name]]))])
            notes.append(goal(f"import into {name} <= 1.5x the bare pass in every round", ratio,
                              ratio["max"] <= 1.5, "x"))
    for name, figures in big_imports.items():
        if figures:
            rows.append([f"taskserver import into {name}, {big:,} rows (CSV, 1 round)", f"{figures['wall']:.1f}", "-",
                         f"{figures['rss'] / 1e6:.0f}"])
            notes.append(f"Goal import of {big:,} rows into {name} at <= 300 MB RSS:"
                         f" {'met' if figures['rss'] <= 300e6 else 'MISSED'}, {figures['rss'] / 1e6:.0f} MB")
    report("import", f"Import: {rows_n:,} rows, {args.rounds} interleaved round(s)",
           ["step", "seconds, median (range)", "x bare pass (per round)", "peak RSS MB"], rows, notes,
           {"rows": rows_n, "imports": imports, "big_imports": big_imports})

    rows, notes = [], []
    for name in ("sqlite", "postgres"):
        for analysed in (False, True):
            if (name, "small", analysed) not in costs:
                continue
            few = [r["rate"] for r in costs[(name, "small", analysed)]]
            many = [r["rate"] for r in costs[(name, "big", analysed)]]
            ratio = ratios(many, few)
            state = "after ANALYZE" if analysed else "never analysed"
            rows.append([name, state, fmt(spread(few)), fmt(spread(many)), fmt(ratio),
                         fmt(spread([r["p99_ms"] for r in costs[(name, "big", analysed)]]))])
            notes.append(goal(f"{name}, {state}: dispatch with {big:,} queued within 10% of {small:,}", ratio,
                              ratio["median"] >= 0.9, "x"))
    big_sqlite = costs[("sqlite", "big", False)]
    rss = spread([r["rss"] / 1e6 for r in big_sqlite])
    notes.append(goal(f"coordinator RSS with {big:,} queued (SQLite) <= 300 MB", rss, rss["max"] <= 300, " MB"))
    notes.append(f"/api/status with {big:,} tasks: {fmt(spread([r['status_ms'] for r in big_sqlite]))} ms.")
    for name, runs in churns.items():
        ratio = ratios([r["last_ms"] for r in runs], [r["first_ms"] for r in runs])
        rows.append([name, f"after {churned:,} done, never vacuumed (in process, ms per task)",
                     fmt(spread([r["first_ms"] for r in runs])) + f" ms, first {window:,}",
                     fmt(spread([r["last_ms"] for r in runs])) + f" ms, last {window:,}", fmt(ratio), "-"])
        notes.append(goal(f"{name}: the last {window:,} of {churned:,} complete-and-claims cost within 10% of the"
                          " first (no VACUUM)", ratio, ratio["median"] <= 1.1, "x"))
    report("scale", f"Claim cost: {tasks:,} complete-and-claims by 2 pullers, {small:,} vs {big:,} queued over"
           f" {NVRS} NVRs, {args.rounds} interleaved round(s)",
           ["store", "statistics", f"tasks/s, {small:,} queued", f"tasks/s, {big:,} queued", "x (per round)",
            f"p99 ms, {big:,} queued"], rows, notes,
           {"small": small, "big": big, "tasks": tasks, "runs": {"|".join(map(str, k)): v for k, v in costs.items()}})


if __name__ == "__main__":
    main()
