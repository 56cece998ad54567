"""What the benchmarks share: options, timing statistics, result tables, the coordinator."""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tests.harness import Processes

RESULTS = Path(__file__).resolve().parent / "results"


def options(description: str) -> argparse.Namespace:
    """`--quick`: a small run that proves the benchmark still works (CI smoke)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    return p.parse_args()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


class Workspace:
    """A temporary folder and the processes started in it; everything is stopped on exit."""

    def __enter__(self) -> Workspace:
        self._tmp = tempfile.TemporaryDirectory(prefix="taskserver-bench-")
        self.path = Path(self._tmp.name)
        self.procs = Processes(self.path)
        return self

    def __exit__(self, *exc) -> None:
        self.procs.cleanup()
        self._tmp.cleanup()


def report(name: str, title: str, headers: list[str], rows: list[list], notes: list[str], data: dict) -> None:
    """Print one Markdown table and write the figures to bench/results/<name>.json."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(_cell(v) for v in row) + " |")
    for note in notes:
        print(f"\n{note}")
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
               "argv": sys.argv[1:], "rows": rows, "headers": headers, "data": data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    sys.stdout.flush()


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def store_at(db) -> object:
    """The store of a benchmark's database, opened as the coordinator would (the tests' key seals passwords)."""
    from taskserver.config import Config

    return Config.from_env(db=str(db)).open_store()


def run_parallel(target, args_list) -> tuple[float, list]:
    """Run `target(*args)` in one process per args tuple (clients may have pools of their own)."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_call, args=(results, target, args)) for args in args_list]
    t = time.perf_counter()
    for p in procs:
        p.start()
    collected = [results.get(timeout=1800) for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    return wall, collected


def _call(results, target, args) -> None:
    results.put(target(*args))
