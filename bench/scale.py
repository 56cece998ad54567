"""Import and scale: a 100,000-row sheet, and the coordinator with 1,000,000 tasks queued.

Import time is compared with a bare openpyxl read-only pass over the same file;
with the big queue, the coordinator's memory and the latency of a worker's
claim-and-complete round trip and of /api/status. Run: python -m bench.scale [--quick]
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta

import psutil
import requests

from bench.common import Workspace, options, percentile, report, store_at
from tests.harness import start_coordinator

T = datetime(2026, 1, 1)


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


def bare_pass(path) -> int:
    from openpyxl import load_workbook

    workbook = load_workbook(path, read_only=True)
    count = sum(1 for _ in workbook.worksheets[0].iter_rows(values_only=True))
    workbook.close()
    return count


def import_sheet(path, db) -> int:
    from taskserver.sheet import load_sheet

    store = store_at(str(db))
    added = store.add(load_sheet(path)).added
    store.close()
    return added


def fill(db, n: int) -> None:
    from taskserver.store import TaskSpec

    store = store_at(str(db))
    for first in range(0, n, 100_000):
        store.add([TaskSpec(key=f"t{i}", server=f"nvr-{i % 200}", username="u", password="p", cameras=("101",),
                            start=T.isoformat(), end=(T + timedelta(hours=1 + i % 3)).isoformat())
                   for i in range(first, min(n, first + 100_000))])
    store.close()


def main() -> None:
    args = options(__doc__)
    rows = 10_000 if args.quick else 100_000
    queued = 100_000 if args.quick else 1_000_000
    with Workspace() as ws:
        sheet = ws.path / "big.xlsx"
        make_sheet(sheet, rows)
        t = time.perf_counter()
        assert bare_pass(sheet) == rows + 1
        bare = time.perf_counter() - t
        t = time.perf_counter()
        assert import_sheet(sheet, ws.path / "import.db") == rows
        ours = time.perf_counter() - t

        t = time.perf_counter()
        fill(ws.path / "big.db", queued)
        filled = time.perf_counter() - t
        coordinator = start_coordinator(ws.procs, None, ws.path / "big.db", "--lease-seconds", "60")
        from taskclient.client import Coordinator

        api = Coordinator([coordinator.url], "bench/w0")
        latencies = []
        answer = api.claim()
        for _ in range(300 if args.quick else 1000):
            t = time.perf_counter()
            answer = api.complete(answer["task"]["id"], answer["lease"]["id"], {}, True)
            latencies.append(time.perf_counter() - t)
        status_times = []
        for _ in range(5):
            t = time.perf_counter()
            requests.get(coordinator.url + "/api/status", timeout=60).raise_for_status()
            status_times.append(time.perf_counter() - t)
        rss = psutil.Process(coordinator.pid).memory_info().rss
    p99 = percentile(latencies, 99) * 1e3
    rows_out = [
        [f"import {rows:,} rows (validate + one transaction)", ours, ours / bare],
        [f"bare openpyxl read-only pass, {rows:,} rows", bare, 1.0],
        [f"fill {queued:,} tasks (store.add)", filled, "-"],
    ]
    report("scale", f"Import and scale ({queued:,} tasks queued)", ["step", "seconds", "x bare read"], rows_out,
           [f"With {queued:,} queued: coordinator RSS {rss / 1e6:.0f} MB (goal <= 300: "
            f"{'met' if rss <= 300e6 else 'MISSED'}); complete+claim p50 {percentile(latencies, 50) * 1e3:.1f} ms,"
            f" p99 {p99:.1f} ms (goal <= 20: {'met' if p99 <= 20 else 'MISSED'}); /api/status"
            f" {percentile(status_times, 50) * 1e3:.0f} ms.",
            f"Import goal <= 1.5x the bare pass: {ours / bare:.2f}x ({'met' if ours <= 1.5 * bare else 'MISSED'})."],
           {"import": ours, "bare": bare, "rss": rss, "latencies_ms": [x * 1e3 for x in latencies],
            "status_ms": [x * 1e3 for x in status_times]})


if __name__ == "__main__":
    main()
