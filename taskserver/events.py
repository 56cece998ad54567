"""`GET /api/events`: server-sent events of every task change, and a summary every few seconds.

Each open stream holds one waitress thread, so streams get threads of their own:
the server runs `threads + streams` threads and at most `streams` streams are
open at once (more are answered 503), which leaves `threads` for workers' claims
however many dashboards are open. A stream ends after a few minutes and the
client reconnects with Last-Event-ID, losing nothing: the events are read from
the durable change feed in the store.
"""
from __future__ import annotations

import json
import threading
import time

from flask import Blueprint, Response, current_app, jsonify, request

from . import api
from .errors import BadRequest
from .validate import MAX_ID

bp = Blueprint("events", __name__, url_prefix="/api")
bp.before_request(api.check_token)
STREAM_SECONDS = 300.0
POLL_SECONDS = 0.5
SUMMARY_SECONDS = 5.0


def _app_wide(name: str, make):
    """One object per app, shared by every stream: made on first use."""
    value = current_app.extensions.get(name)
    if value is None:
        value = current_app.extensions[name] = make()
    return value


def stream_slots() -> threading.BoundedSemaphore:
    """The semaphore that caps open streams, sized by the config."""
    return _app_wide("taskserver.streams",
                     lambda: threading.BoundedSemaphore(current_app.config["TASKSERVER"].streams))


class Summaries:
    """The summary all open streams send, computed once per interval for all of them.

    A status counts every task; with many dashboards open on a run of a million
    tasks, one count per interval rather than one per stream keeps the coordinator
    free for its workers.
    """

    def __init__(self, store):
        self.store = store
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._summary: dict = {}

    def get(self) -> dict:
        with self._lock:
            if time.monotonic() - self._at >= SUMMARY_SECONDS / 2:
                status = self.store.status()
                self._summary = {
                    "counts": status["counts"], "nothing_found": status["nothing_found"], "files": status["files"],
                    "bytes": status["bytes"],
                    "drained": status["drained"], "paused": status["paused"], "workers": len(status["workers"]),
                    "lost_workers": sum(w["lost"] for w in status["workers"]),
                }
                self._at = time.monotonic()
            return self._summary


def summaries() -> Summaries:
    return _app_wide("taskserver.summaries", lambda: Summaries(api.store()))


@bp.get("/events")
def events():
    """Stream changes after Last-Event-ID (or `?after=`), or from now; `?follow=false` sends what is there and ends."""
    store = api.store()
    raw = request.headers.get("Last-Event-ID") or request.args.get("after")
    if raw is not None and not (raw.isascii() and raw.strip().isdigit() and int(raw) <= MAX_ID):
        raise BadRequest("Last-Event-ID / after must be an event id")
    after = int(raw) if raw is not None else store.last_event()
    follow = request.args.get("follow", "true")
    if follow not in ("true", "false"):
        raise BadRequest("follow must be true or false")
    if follow == "false":
        found = store.events(after)
        body = "".join(f"id: {e['id']}\nevent: task\ndata: {json.dumps(e)}\n\n" for e in found)
        return Response(body, mimetype="text/event-stream", headers={"Cache-Control": "no-store"})
    slots = stream_slots()
    shared = summaries()
    if not slots.acquire(blocking=False):
        return jsonify({"error": "TooManyStreams", "message": "too many open event streams; retry shortly"}), 503

    def generate(after: int):
        try:
            yield "retry: 2000\n\n"
            ends = time.monotonic() + STREAM_SECONDS
            next_summary = 0.0
            while time.monotonic() < ends:
                for event in store.events(after):
                    after = event["id"]
                    yield f"id: {after}\nevent: task\ndata: {json.dumps(event)}\n\n"
                if time.monotonic() >= next_summary:
                    yield f"event: summary\ndata: {json.dumps(shared.get())}\n\n"
                    next_summary = time.monotonic() + SUMMARY_SECONDS
                store.release_connection()  # a stream may stay open for long: hold a database connection only to read
                time.sleep(POLL_SECONDS)
        finally:
            store.release_connection()
            slots.release()

    return Response(generate(after), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
