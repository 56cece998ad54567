"""What `taskserver status` and `taskserver watch` print: a running coordinator's state, read by people.

Sizes in kB/MB/GB and times as durations, the run's state in words (running,
paused, drained), a line per NVR and per worker. Every text that came from
outside (NVR names and errors, worker names) is shown escaped, so that it cannot
drive the terminal. A coordinator that does not answer is one clear line, not a
library's exception.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import datetime

import requests

from .logs import escape

DEFAULT_URL = "http://127.0.0.1:8080"


class Unreachable(Exception):
    """Raised when the coordinator cannot be reached or does not answer as a coordinator does."""


def coordinator_url(given: str | None) -> str:
    """--url, else $TASKSERVER_URL (as for worker hosts), else this machine's default port."""
    return (given or os.environ.get("TASKSERVER_URL") or DEFAULT_URL).rstrip("/")


def headers(token: str | None) -> dict:
    """The bearer token: --token, else $TASKSERVER_TOKEN."""
    token = token or os.environ.get("TASKSERVER_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def why_unreachable(url: str, exc: requests.RequestException) -> str:
    """One line saying what went wrong reaching `url`, and what to check."""
    if isinstance(exc, requests.exceptions.SSLError):
        return f"{url}: TLS handshake failed; check the address (http or https) and the certificate"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"{url} did not answer in time; is the coordinator overloaded, or a firewall dropping packets?"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        reason = ("connection refused" if "refused" in text.lower() else
                  "name not found" if "resolve" in text.lower() or "Name or service" in text else "cannot connect")
        return (f"no coordinator answers at {url} ({reason}); is it running? Give its address with --url or"
                " TASKSERVER_URL")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema)):
        return f"{url!r} is not a coordinator URL; write it like http://host:8080"
    return f"{url}: {type(exc).__name__}"


def fetch_status(url: str, token: str | None, timeout: float = 10.0) -> dict:
    """GET /api/status; Unreachable with a clear message when that fails."""
    try:
        response = requests.get(url + "/api/status", headers=headers(token), timeout=timeout)
    except requests.RequestException as exc:
        raise Unreachable(why_unreachable(url, exc)) from None
    if response.status_code in (401, 403):
        raise Unreachable(f"{url} refused the token (HTTP {response.status_code}); give it with --token or"
                          " TASKSERVER_TOKEN")
    if response.status_code != 200:
        raise Unreachable(f"{url} answered HTTP {response.status_code}: {escape(response.text[:300])}")
    try:
        return response.json()
    except ValueError:
        raise Unreachable(f"{url} did not answer as a taskserver coordinator does (not JSON)") from None


@contextmanager
def piped():
    """Stop quietly when the reader goes away (`taskserver status | head`): no traceback, no error at exit."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the broken pipe again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def size(count) -> str:
    """Bytes as people read them: 950 B, 12.3 kB, 45.6 MB, 1.23 GB (powers of 1000, as disks are sold)."""
    count = float(count or 0)
    for unit, scale, digits in (("TB", 1e12, 2), ("GB", 1e9, 2), ("MB", 1e6, 1), ("kB", 1e3, 1)):
        if count >= scale:
            return f"{count / scale:.{digits}f} {unit}"
    return f"{count:.0f} B"


def span(seconds) -> str:
    """A duration as people read it: 45 s, 12 min, 3 h 05 min, 2 d 4 h."""
    seconds = max(0.0, float(seconds or 0))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def run_state(status: dict) -> str:
    """The run in words: drained, paused or running."""
    if status.get("drained"):
        return "DRAINED: every task is finished"
    if status.get("paused"):
        return "PAUSED: no work is handed out (resume on the dashboard or POST /api/resume)"
    return "running"


def counts_line(status: dict) -> str:
    """Tasks per state, with the done ones that found nothing set apart."""
    counts = status["counts"]
    parts = []
    for state, count in counts.items():
        text = f"{state} {count:,}"
        if state == "done" and status.get("nothing_found"):
            text += f" ({status['nothing_found']:,} nothing found)"
        parts.append(text)
    return f"tasks {status['tasks']:,}: " + "  ".join(parts)


def status_lines(url: str, status: dict) -> list[str]:
    """The whole of `taskserver status`: the run, the NVRs, the schedules, the workers, the last drain."""
    lines = [f"coordinator {url}: {run_state(status)}", counts_line(status),
             f"files {status['files']:,}  {size(status['bytes'])}"]
    drain = status.get("last_drain")
    if isinstance(drain, dict) and drain.get("text"):
        lines.append(f"last drain{_at(drain.get('at'))}: {escape(str(drain['text']))}")
    nvrs = status.get("nvrs") or []
    if nvrs:
        lines += ["", "NVRs"]
        table = [("NVR", "running", "queued", "done", "nothing found", "failed", "size", "resting", "clock",
                  "last error")]
        for n in nvrs:
            offset = n.get("clock_offset")
            table.append((escape(str(n["server"])), f"{n['running']}/{n['max_parallel']}", f"{n['queued']:,}",
                          f"{n['done']:,}", f"{n.get('nothing_found', 0):,}", f"{n['failed']:,}", size(n["bytes"]),
                          f"for {span(n['resting_for'])}" if n["resting_for"] else "",
                          f"{offset:+.0f} s" if isinstance(offset, int | float) else "",
                          escape(str(n["last_error"] or ""))[:120]))
        lines += _columns(table)
        for n in nvrs:
            for refused in n.get("password_refused") or []:
                locked = f", device lock-out {span(refused['locked_for'])} more" if refused.get("locked_for") else ""
                lines.append(f"  {escape(str(n['server']))}: password refused for user"
                             f" '{escape(str(refused['username']))}'{locked}: tasks held until it is corrected")
    schedules = status.get("schedules") or []
    if schedules:
        lines += ["", "Schedules"]
        table = [("id", "row", "NVR", "cadence", "next run", "next window from", "runs")]
        for x in schedules:
            table.append((str(x["id"]), escape(str(x.get("name") or x.get("source") or ""))[:60],
                          escape(str(x["server"])), escape(f"{x['cadence']} {x.get('zone') or ''}".strip()),
                          _when(x.get("next_run")), escape(str(x.get("next_window_start") or "")).replace("T", " "),
                          f"{x.get('runs', 0):,}"))
        lines += _columns(table)
    workers = status.get("workers") or []
    if workers:
        lines += ["", "Workers"]
        table = [("worker", "doing", "done", "failed", "last seen", "")]
        for w in workers:
            note = "LOST" if w["lost"] else "" if w.get("state", "ok") == "ok" else str(w["state"])
            if w.get("detail") and w.get("state") != "ok":
                note += f" ({escape(str(w['detail']))[:80]})"
            table.append((escape(str(w["name"])), f"task {w['task']}" if w["task"] else "idle", f"{w['done']:,}",
                          f"{w.get('failed', 0):,}", f"{span(w['last_seen_ago'])} ago", note))
        lines += _columns(table)
    return lines


# Changes a worker made itself; in the others (a cancel, an expiry, a requeue...) the worker only held the task.
WORKER_MADE = frozenset({"leased", "done", "retry", "failed", "rested", "refused", "released"})


def event_line(event: dict) -> str:
    """One change of the event stream: `08:00:01 task 7 cancelled (was on host/w0): cancelled by an admin from ...`."""
    worker = escape(str(event["worker"])) if event.get("worker") else ""
    if not worker:
        who = ""
    elif event["kind"] in WORKER_MADE:
        who = f" by {worker}"
    elif event.get("task_id"):
        who = f" (was on {worker})"
    else:
        who = f" ({worker})"
    task = f"task {event['task_id']} " if event.get("task_id") else ""
    state = event.get("state")
    moved = f" -> {state}" if state and state != event["kind"] else ""
    detail = f": {escape(str(event['detail']))}" if event.get("detail") else ""
    return f"{datetime.fromtimestamp(event['at']):%H:%M:%S} {task}{escape(str(event['kind']))}{moved}{who}{detail}"


def summary_line(summary: dict) -> str:
    """The stream's periodic summary: counts, size, workers, and whether the run is paused or drained."""
    counts = " ".join(f"{k} {v:,}" for k, v in summary["counts"].items() if v)
    state = " DRAINED" if summary.get("drained") else " PAUSED" if summary.get("paused") else ""
    lost = f" ({summary['lost_workers']} lost)" if summary.get("lost_workers") else ""
    empty = f", {summary['nothing_found']:,} found nothing" if summary.get("nothing_found") else ""
    return (f"-- {counts or 'no tasks'}{empty}; {summary.get('files', 0):,} files, {size(summary.get('bytes'))};"
            f" {summary['workers']} worker(s){lost}{state}")


def _at(at) -> str:
    if isinstance(at, str):
        try:
            return f" {datetime.fromisoformat(at).astimezone():%Y-%m-%d %H:%M}"
        except ValueError:
            return ""
    return ""


def _when(at) -> str:
    """An epoch time in this machine's local time, to the minute."""
    if isinstance(at, int | float) and not isinstance(at, bool):
        try:
            return f"{datetime.fromtimestamp(at).astimezone():%Y-%m-%d %H:%M}"
        except (OverflowError, OSError, ValueError):
            return ""
    return ""


def _columns(rows: list[tuple]) -> list[str]:
    """Rows as aligned columns (the last one free), indented under their heading."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    return [("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + str(r[-1])).rstrip()
            for r in rows]
