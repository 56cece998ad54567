"""Scale-out: dispatch with 1, 2 and 4 PostgreSQL coordinators sharing one database, each held to a CPU share.

On a 2-core machine, coordinators, clients and PostgreSQL all compete for the same
cores, so a second coordinator cannot show its gain. Here each coordinator runs in a
cgroup of its own held to a quarter of a core (a small coordinator machine), and the
client processes share a cgroup held to one core; PostgreSQL is not limited. The
pullers are spread over the coordinators, as a load balancer would.
Run: python -m bench.scale_out [--quick] [--rounds K]
"""
from __future__ import annotations

import os
from pathlib import Path

import requests

from bench.common import CPUShare, Workspace, fmt, interleaved, options, ratios, report, run_parallel, spread
from bench.dispatch import fill, ours_loop
from tests.harness import postgres_missing, postgres_schema, start_coordinator

SHARE = 0.25  # of one core, per coordinator
CLIENTS_SHARE = 1.0
PULLERS = 8
COUNTS = (1, 2, 4)


def held_loop(share: str, url: str, worker: str) -> list[float]:
    """A client process that first joins the clients' cgroup."""
    (Path(share) / "cgroup.procs").write_text(str(os.getpid()))
    return ours_loop(url, worker)


def measure(ws: Workspace, n: int, coordinators: int, clients: CPUShare) -> dict:
    with postgres_schema() as url:
        fill(url, n)
        shares, urls = [], []
        try:
            for i in range(coordinators):
                proc = start_coordinator(ws.procs, None, url, "--per-nvr", "1000", "--lease-seconds", "60")
                share = CPUShare(f"coordinator-{coordinators}-{i}", SHARE)
                share.add(proc.pid)
                shares.append((proc, share))
                urls.append(proc.url)
            wall, _ = run_parallel(held_loop, [(str(clients.path), urls[i % coordinators], f"bench/w{i}")
                                               for i in range(PULLERS)])
            done = requests.get(urls[0] + "/api/status", timeout=30).json()["counts"]["done"]
        finally:
            for proc, share in shares:
                proc.kill()
                proc.popen.wait(10)
                share.close()
    assert done == n, f"only {done} of {n} done"
    return {"rate": n / wall}


def main() -> None:
    args = options(__doc__)
    why = postgres_missing() or CPUShare.available()
    if why:
        print(f"scale-out benchmark skipped: {why}")
        return
    n = 500 if args.quick else 4_000
    clients = CPUShare("clients", CLIENTS_SHARE)
    try:
        with Workspace() as ws:
            runs = interleaved({c: (lambda c=c: measure(ws, n, c, clients)) for c in COUNTS}, args.rounds)
    finally:
        clients.close()
    rates = {c: [r["rate"] for r in runs[c]] for c in COUNTS}
    rows = [[f"{c} coordinator{'s' if c > 1 else ''}, {SHARE:g} core each", fmt(spread(rates[c])),
             fmt(ratios(rates[c], rates[1]))] for c in COUNTS]
    growth = ratios(rates[4], rates[1])
    report("scale_out", f"Scale-out on PostgreSQL: {n:,} no-op tasks, {PULLERS} pullers held to"
           f" {CLIENTS_SHARE:g} core, {args.rounds} interleaved round(s)",
           ["coordinators", "tasks/s, median (range)", "x 1 coordinator"], rows,
           [f"Scale-out shown: 4 coordinators dispatch {fmt(growth)}x what 1 does"
            f" ({'grows' if growth['median'] > 1.5 else 'does NOT grow'} with coordinators)."],
           {"tasks": n, "share": SHARE, "clients_share": CLIENTS_SHARE, "pullers": PULLERS, "runs": runs})


if __name__ == "__main__":
    main()
