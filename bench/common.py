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
    """`--quick`: a small run that proves the benchmark still works (CI smoke); `--rounds`: interleaved rounds."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes and one round, for a smoke run")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per system (default 3; --quick: 1)")
    args = p.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    return args


def interleaved(systems: dict, rounds: int) -> dict[str, list]:
    """Run each system once per round, in the same order every round; every system's results by name.

    Interleaving spreads the machine's changing load (other work, caches, the disk)
    over all systems alike, so that the ratios between them can be trusted even when
    the absolute figures cannot. A system that returns None (not available here) is
    dropped.
    """
    results: dict[str, list] = {name: [] for name in systems}
    for number in range(rounds):
        for name, run in systems.items():
            if name in results:
                print(f"round {number + 1}/{rounds}: {name}", file=sys.stderr, flush=True)
                outcome = run()
                if outcome is None:
                    del results[name]
                else:
                    results[name].append(outcome)
    return results


def spread(values: list[float]) -> dict:
    """Median and range of a figure over rounds."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": list(values)}


def ratios(values: list[float], baseline: list[float]) -> dict:
    """Ratios computed round by round (each system against the baseline of the same round), then spread."""
    return spread([v / b for v, b in zip(values, baseline, strict=True)])


def fmt(figure: dict, digits: int = 3) -> str:
    """'median (min–max)' for a table cell."""
    if len(figure["rounds"]) == 1:
        return _cell(figure["median"], digits)
    return f"{_cell(figure['median'], digits)} ({_cell(figure['min'], digits)}–{_cell(figure['max'], digits)})"


def goal(label: str, figure: dict, met: bool, unit: str = "") -> str:
    """One goal's line: met or missed, with the median and the range over rounds."""
    return f"Goal {label}: {'met' if met else 'MISSED'}, median {fmt(figure)}{unit} over {len(figure['rounds'])} round(s)"


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
               "load": os.getloadavg(), "versions": versions(), "argv": sys.argv[1:], "rows": rows,
               "headers": headers, "notes": notes, "data": data}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    sys.stdout.flush()


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}"


def versions() -> dict[str, str]:
    """Versions of what the figures depend on: Python, the libraries, SQLite, PostgreSQL and Redis servers."""
    import sqlite3
    from importlib import metadata

    found = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for name in ("taskserver", "flask", "werkzeug", "waitress", "requests", "urllib3", "psycopg", "psycopg-pool",
                 "openpyxl", "hikload", "rq", "redis", "celery", "kombu"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    try:
        import psycopg

        from tests.harness import POSTGRES

        with psycopg.connect(POSTGRES, connect_timeout=3) as conn:
            found["postgresql server"] = conn.execute("SHOW server_version").fetchone()[0]
            found["postgresql autovacuum"] = conn.execute("SHOW autovacuum").fetchone()[0]
    except Exception as exc:  # no server: say so in the results
        found["postgresql server"] = f"unavailable ({type(exc).__name__})"
    try:
        import redis

        found["redis server"] = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=3).info("server")["redis_version"]
    except Exception as exc:
        found["redis server"] = f"unavailable ({type(exc).__name__})"
    return found


def _cell(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


class CPUShare:
    """A cgroup (v1 cpu controller) that holds its processes to a share of one core, for scale-out figures.

    On a 2-core machine several coordinators cannot show their gain unless each is
    held to a share; needs root and /sys/fs/cgroup/cpu. `available()` says why not.
    """

    ROOT = Path("/sys/fs/cgroup/cpu")

    def __init__(self, name: str, share: float):
        self.path = self.ROOT / f"taskserver-bench-{os.getpid()}-{name}"
        self.path.mkdir(exist_ok=True)
        period = int((self.path / "cpu.cfs_period_us").read_text())
        (self.path / "cpu.cfs_quota_us").write_text(str(int(period * share)))

    @classmethod
    def available(cls) -> str | None:
        if not (cls.ROOT / "cgroup.procs").exists():
            return "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu"
        if not os.access(cls.ROOT, os.W_OK):
            return "cgroups need root"
        return None

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (self.ROOT / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # it ended meanwhile
        self.path.rmdir()


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
