"""HTTP endpoints: the worker protocol and the JSON status. Thin: the store holds the rules.

    GET  /api/claim?worker=W[&wait=S]        -> {"status": "task"|"wait"|"drained", ...}
    POST /api/tasks/<id>/heartbeat           {"lease", "progress"}
    POST /api/tasks/<id>/complete            {"lease", "result", "next": bool, "worker": W}
    POST /api/tasks/<id>/fail                {"lease", "error", "permanent": bool,
                                              "device": "busy"|"unreachable"|"auth", "locked_for": seconds}
    POST /api/tasks/<id>/release             {"lease", "reason": text}
    POST /api/batch                          {"worker", "done": [{"id", "lease", "result"}], "claim": N}
                                             -> {"done": [{"id", "ok"}], "status", "tasks": [{"task", "lease"}]}
    POST /api/workers/state                  {"worker", "state": "ok"|"full"|"fault"|"stopped", "detail": text}
    GET  /api/tasks/<id>                     public view of one task (no password)
    GET  /api/status                         counts per state, totals, workers
"""
from __future__ import annotations

import hmac
import logging

from flask import Blueprint, current_app, g, jsonify, request

from . import validate
from .errors import BadRequest, Unauthorized
from .store import Store

log = logging.getLogger("taskserver")
bp = Blueprint("api", __name__, url_prefix="/api")


def store() -> Store:
    """The app's store."""
    return current_app.extensions["taskserver.store"]


# Views that change nothing and carry no password: open on a loopback-bound coordinator,
# or with the read-only token. Everything else (the worker protocol, which hands out
# credentials, and admin actions) needs the full token when one is set.
READ_VIEWS = {"api.status", "api.task", "rest.tasks", "rest.done", "rest.result", "rest.rows", "rest.progress",
              "rest.report", "events.events", "metrics.metrics", "openapi.description", "files.task_files",
              "files.find_files", "rest.schedules"}


@bp.before_request
def check_token():
    """Bearer token check for every API call, by what the call may see or change."""
    config = current_app.config["TASKSERVER"]
    if not config.token:
        return
    given = request.headers.get("Authorization", "")
    given = given[7:].strip() if given.startswith("Bearer ") else ""
    reading = request.endpoint in READ_VIEWS
    if given:  # a wrong token is refused even where none is needed: it means a misconfigured client
        if _same(given, config.token) or (reading and config.read_token and _same(given, config.read_token)):
            return
        raise Unauthorized("wrong bearer token")
    if reading and config.loopback:
        return
    raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")


def _same(given: str, token: str) -> bool:
    """Constant-time comparison that any header text survives (headers arrive as latin-1 text)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


@bp.after_request
def no_store(response):
    """Claims carry credentials and every answer is live state: never cache."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/claim")
def claim():
    """Hand out one task with a lease, or 'ask again after N s', or the drained sentinel.

    With `wait=S`, a claim that would be told to wait is held for up to S seconds
    (see holds.py); the answer then says `"held": true`.
    """
    worker = validate.worker(request.args.get("worker"))
    hold = validate.hold(request.args.get("wait"))
    holds = current_app.extensions["taskserver.holds"]
    seen = holds.generation  # read first: a write answered meanwhile is not missed
    answer = store().claim(worker)
    held = False
    if answer.status == "wait" and hold:
        store().release_connection()  # a held claim keeps no database connection while it waits

        def again():
            try:
                return store().claim(worker)
            finally:
                store().release_connection()
        # waitress says when the worker hung up meanwhile (killed, its network gone): nothing is leased to it then.
        gone = request.environ.get("waitress.client_disconnected", lambda: False)
        taken = holds.claim(again, seen, min(hold, answer.retry_after), gone)
        if taken is not None and taken.status == "task" and gone():  # hung up as the task came: give it back
            store().release(taken.task["id"], taken.lease["id"], "its worker hung up while the claim was held")
            holds.notify()  # free again: another held claim may take it
            taken = None
        if taken is not None:  # None: no thread may hold now, or nobody is listening; answered at once
            answer, held = taken, True
    if answer.status == "task":
        log.info("task %s leased to %s (attempt %s)", answer.task["id"], worker, answer.task["attempt"])
    body = answer.to_dict()
    if held and answer.status == "wait":
        body["held"] = True
    response = jsonify(body)
    if answer.status == "wait":
        response.headers["Retry-After"] = str(max(1, round(answer.retry_after)))
    return response


@bp.post("/tasks/<id:task_id>/heartbeat")
def heartbeat(task_id: int):
    """Extend the lease; carries the worker's progress."""
    body = validate.json_body()
    lease, progress = validate.lease(body), validate.progress(body.get("progress"))
    seconds = store().heartbeat(task_id, lease, progress)
    return jsonify({"ok": True, "lease_seconds": seconds})


@bp.post("/tasks/<id:task_id>/complete")
def complete(task_id: int):
    """Record a finished task; with "next": true, the answer also carries the next claim."""
    body = validate.json_body()
    lease, result = validate.lease(body), validate.result(body.get("result"))
    worker = validate.worker(body.get("worker")) if validate.flag(body, "next") else None
    following = store().complete(task_id, lease, result, next_for=worker)
    answer = {"ok": True}
    if following is not None:
        answer["next"] = following.to_dict()
    if following is not None and following.status == "task":  # one line for both: logging is a cost per task
        log.info("task %s done: %s file(s), %s byte(s); task %s leased to %s (attempt %s)", task_id,
                 result.get("files"), result.get("bytes"), following.task["id"], worker, following.task["attempt"])
        g.refilled = True  # the worker took the next task itself: no held claim need look (holds.py)
    else:
        log.info("task %s done: %s file(s), %s byte(s)", task_id, result.get("files"), result.get("bytes"))
    return jsonify(answer)


@bp.post("/tasks/<id:task_id>/fail")
def fail(task_id: int):
    """Record a failed attempt: the task backs off and retries, or fails for good."""
    body = validate.json_body()
    lease, error, permanent = validate.lease(body), validate.error(body.get("error")), validate.flag(body, "permanent")
    device = body.get("device")
    if device not in (None, "busy", "unreachable", "auth"):
        raise BadRequest("'device' must be \"busy\", \"unreachable\", \"auth\" or absent")
    locked_for = body.get("locked_for")
    if locked_for is not None and (isinstance(locked_for, bool) or not isinstance(locked_for, (int, float))
                                   or not 0 <= locked_for <= 86400):
        raise BadRequest("'locked_for' must be a number of seconds from 0 to 86400, or absent")
    state = store().fail(task_id, lease, error, permanent, device, locked_for)
    log.info("task %s attempt failed (%s): %s", task_id, state, error[:200])
    return jsonify({"ok": True, "state": state})


@bp.post("/tasks/<id:task_id>/release")
def release(task_id: int):
    """Give a task back unrun (no attempt charged): a worker host shutting down, or a fault of the host's own."""
    body = validate.json_body()
    reason = validate.text(body.get("reason"), "reason", 100_000, optional=True)
    reason = validate.clean(reason[:1000]) if reason else None
    store().release(task_id, validate.lease(body), reason)
    log.info("task %s released%s", task_id, f": {reason[:200]}" if reason else "")
    return jsonify({"ok": True})


BATCH = 100  # tasks completed or leased by one batch request, at most


@bp.post("/batch")
def batch():
    """Opt-in batches for short tasks: complete several and lease up to N more, each with its own lease.

    One task per claim stays the protocol's default; a worker that runs many short
    tasks may save round trips this way. Each completion is fenced by its lease, and
    each task leased counts against its NVR's cap, exactly as single requests do.
    """
    body = validate.json_body()
    worker = validate.worker(body.get("worker"))
    count = validate.whole(body.get("claim", 0), "claim", 0, BATCH)
    done = body.get("done", [])
    if not isinstance(done, list) or len(done) > BATCH or not all(isinstance(d, dict) for d in done):
        raise BadRequest(f"'done' must be a list of at most {BATCH} objects with \"id\", \"lease\" and \"result\"")
    reports = [(validate.whole(d.get("id"), "done.id", 0, validate.MAX_ID), validate.lease(d), validate.result(d.get("result")))
               for d in done]
    outcomes, claims = store().exchange(worker, reports, count)
    answer: dict = {"ok": True, "done": [{"id": d["id"], "ok": error is None, **({"error": str(error)} if error else {})}
                                         for d, error in zip(done, outcomes, strict=True)]}
    if claims:  # the leased tasks, or one "wait" / "drained" answer
        answer["status"] = claims[0].status
        answer["tasks"] = [{"task": c.task, "lease": c.lease} for c in claims if c.status == "task"]
        if claims[0].status == "wait":
            answer["retry_after"] = claims[0].retry_after
    log.info("batch from %s: %d done, %d leased", worker, sum(e is None for e in outcomes), len(answer.get("tasks", [])))
    return jsonify(answer)


@bp.post("/workers/state")
def worker_state():
    """What a worker host says of itself: full (below its free-space floor), ok again, fault, or stopped."""
    body = validate.json_body()
    state = body.get("state")
    if state not in ("ok", "full", "fault", "stopped"):
        raise BadRequest("'state' must be \"ok\", \"full\", \"fault\" or \"stopped\"")
    detail = validate.text(body.get("detail"), "detail", 100_000, optional=True)
    detail = validate.clean(detail[:1000]) if detail else None
    worker = validate.worker(body.get("worker"))
    store().worker_state(worker, state, detail)
    log.info("worker %s: %s%s", worker, state, f" ({detail[:200]})" if detail else "")
    return jsonify({"ok": True})


@bp.get("/tasks/<id:task_id>")
def task(task_id: int):
    """One task as anyone may see it: state, attempts, progress, result, errors."""
    return jsonify(store().task(task_id))


@bp.get("/status")
def status():
    """Counts per state, files and bytes done, workers seen, drained or not."""
    return jsonify(store().status())
