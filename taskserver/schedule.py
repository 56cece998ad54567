"""Scheduled rows: a sheet row with a `schedule` becomes runs, window after window.

Each run adds the tasks of every period that has ended since the last run (one
window per period; a coordinator that was down catches up), and tries the
schedule's failed tasks of earlier runs once more. Windows follow each other
exactly, so over days of runs every moment is exported once: no gap, no
overlap. Every coordinator checks for due schedules now and then; a run fires
once however many coordinators share the database (see `Store.fire_schedule`).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime, timedelta, tzinfo

from .loops import repeat
from .store import Schedule, Store, TaskSpec
from .windows import parse_cadence, zone_named

log = logging.getLogger("taskserver")
RETRIES = 3  # later runs that try a schedule's failed task again
MAX_WINDOWS = 400  # windows one run adds at most; a longer catch-up continues at the next check


def make_schedule(spec: TaskSpec, cadence_text: str, zone: str | None, chunk: timedelta | None,
                  now: float) -> Schedule:
    """A scheduled row: its first window starts at the row's start (on a period boundary) or at the latest boundary."""
    cadence = parse_cadence(cadence_text)
    here = zone_named(zone)
    due_end = cadence.due_end(_local(now, here))
    cursor = cadence.boundary(datetime.fromisoformat(spec.start)) if spec.start else due_end
    next_fire = now if cursor < due_end else _epoch(cadence.fire_time(cursor + cadence.step), here)
    template = replace(spec, start=None, end=None, password=None, source=f"{spec.source} ({cadence.text})")
    return Schedule(key=f"schedule:{spec.key}", cadence=cadence.text, zone=zone, template=template,
                    password=spec.password, cursor=_iso(cursor), next_fire=next_fire,
                    chunk=chunk.total_seconds() if chunk else None, first=_iso(cursor))


def fire_due(store: Store, retries: int = RETRIES) -> int:
    """Run every schedule that is due; return how many runs this coordinator made."""
    now = store.clock()
    fired = 0
    for schedule in store.schedules(due_by=now):
        cadence = parse_cadence(schedule["cadence"])
        here = zone_named(schedule["zone"])
        end = cadence.due_end(_local(now, here))
        start = window = datetime.fromisoformat(schedule["cursor"])
        specs: list[TaskSpec] = []
        while window + cadence.step <= end and window - start < cadence.step * MAX_WINDOWS:
            specs += run_specs(schedule, window, window + cadence.step)
            window += cadence.step
        next_fire = now if window < end else _epoch(cadence.fire_time(window + cadence.step), here)
        result = store.fire_schedule(schedule["id"], schedule["next_fire"], _iso(window), next_fire, specs, retries)
        if result is not None:
            fired += 1
            log.info("schedule %s (%s): %d task(s) added for %s to %s, %d failed one(s) tried again",
                     schedule["id"], schedule["cadence"], result.added, _iso(start), _iso(window), result.updated)
    return fired


def run_specs(schedule: dict, start: datetime, end: datetime) -> list[TaskSpec]:
    """The tasks of one window of a schedule: the row's own, chunked as the row says."""
    from .sheet import split

    template = dict(schedule["template"])
    chunk, first, name, source = (template.pop(k) for k in ("chunk", "first", "name", "source"))
    key = f"{schedule['key']}@{start:%Y%m%dT%H%M%S}"
    spec = TaskSpec(**{**template, "cameras": tuple(template["cameras"]),
                       "options": tuple(tuple(pair) for pair in template.get("options", ()))}, key=key, password=None,
                    start=_iso(start), end=_iso(end), group=key, source=f"{source}, run {start:%Y-%m-%d %H:%M}",
                    name=f"{name or template['server']} {start:%Y-%m-%d %H:%M}")
    # Only the very first window takes a recording that began before it; later ones leave it
    # to the window it began in, so that two runs never export it twice.
    spec = replace(spec, takes_earlier=_iso(start) == first)
    return split(spec, timedelta(seconds=chunk)) if chunk else [spec]


def start_ticker(store: Store, every: float, stop: threading.Event) -> threading.Thread:
    """Check for due schedules every `every` seconds until `stop` is set."""
    return repeat(store, every, lambda: fire_due(store), stop, "schedules", "checking schedules")


def _local(now: float, zone: tzinfo) -> datetime:
    return datetime.fromtimestamp(now, zone).replace(tzinfo=None, microsecond=0)


def _epoch(local: datetime, zone: tzinfo) -> float:
    return local.replace(tzinfo=zone).timestamp()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")
