"""REST endpoints for people and scripts: find tasks, fetch results, steer the run, get the report.

    GET  /api/tasks?state=&nvr=&worker=&q=&order=id|newest|priority&page=1&per_page=50
    GET  /api/tasks/done?after=ID            ids of done tasks, for scripts that poll
    GET  /api/tasks/<id>/result              404 until the task is done
    GET  /api/tasks/<id>/lease?lease=L       is the lease still current, and if not, why (a running worker asks)
    POST /api/tasks/<id>/requeue             a failed or cancelled task, with fresh attempts
    POST /api/tasks/<id>/cancel              a queued, waiting or running task
    POST /api/requeue                        every failed task ({"nvr": H}: one NVR's; {"cancelled": true}: those too)
    POST /api/nvrs/login                     {"nvr": H, "username": U}: try a refused password again
    POST /api/pause, /api/resume             stop or resume handing out work
    GET  /api/rows                           sheet rows with their chunks rolled up
    GET  /api/progress                       completions per minute, rate, ETA
    GET  /api/report.xlsx                    the Excel report

Passwords are in no answer here; every call needs the token when one is set.
"""
from __future__ import annotations

import io
import logging
from dataclasses import replace
from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify, request, send_file

from . import api, validate
from .errors import BadRequest, Conflict, SheetError
from .sheet import row_label, row_name
from .store import State
from .store.reads import schedule_view

log = logging.getLogger("taskserver")
bp = Blueprint("rest", __name__, url_prefix="/api")
bp.before_request(api.check_token)
bp.after_request(api.no_store)


@bp.get("/tasks")
def tasks():
    """A filtered, paginated page of tasks."""
    args = request.args
    unknown = set(args) - {"state", "nvr", "worker", "q", "order", "page", "per_page"}
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    state = args.get("state")
    if state and state not in {s.value for s in State}:
        raise BadRequest(f"state must be one of {', '.join(s.value for s in State)}")
    order = args.get("order", "id")
    if order not in api.store().ORDERS:
        raise BadRequest(f"order must be one of {', '.join(api.store().ORDERS)}")
    page, per_page = _int_arg("page", 1, 1, 10**9), _int_arg("per_page", 50, 1, 500)
    rows, total = api.store().tasks(state=state, nvr=validate.query_text("nvr"), worker=validate.query_text("worker"),
                                    text=validate.query_text("q"), order=order, offset=(page - 1) * per_page,
                                    limit=per_page)
    return jsonify({"tasks": rows, "total": total, "page": page, "per_page": per_page})


@bp.post("/tasks")
def add_tasks():
    """Add tasks: the sheet's fields, validation and messages; all of the batch or nothing."""
    from .sheet import Imported, as_dry_run, load_rows

    body = validate.json_body()
    if "tasks" not in body or set(body) - {"tasks", "chunk", "timezone", "dry_run"}:
        raise BadRequest('expected {"tasks": [{...}, ...]} with optional "chunk", "timezone" and "dry_run"')
    dry = validate.flag(body, "dry_run")
    config = current_app.config["TASKSERVER"]
    chunk = validate.text(body.get("chunk"), "chunk", 100, optional=True)
    timezone = validate.text(body.get("timezone"), "timezone", 100, optional=True)
    now = api.store().clock()
    try:
        imported = load_rows(body["tasks"], chunk=chunk or config.chunk, timezone=timezone or config.timezone,
                             now=now)
    except SheetError as exc:
        raise SheetError(exc.problems, what="the request") from None
    imported = _stamped(imported, f"request of {datetime.fromtimestamp(now, UTC):%Y-%m-%d %H:%M:%S} UTC")
    if dry:
        if imported.schedules:
            raise BadRequest(f"a dry run lists once: leave out the {len(imported.schedules)} task(s) with a schedule")
        imported = Imported([as_dry_run(spec) for spec in imported])
    result = imported.into(api.store())
    new = set(result.ids)
    existing = [i for i in api.store().task_ids([spec.key for spec in imported]) if i not in new]
    log.info("API: %d %s added, %d already queued%s, by an admin from %s", result.added,
             "dry run(s)" if dry else "task(s)", result.existing,
             f" ({_id_list(existing)})" if existing else "", request.remote_addr)
    return jsonify({"added": result.added, "existing": result.existing, "updated": result.updated,
                    "ids": result.ids, "existing_ids": existing}), 201 if result.added else 200


def _stamped(imported, origin: str):
    """The request's tasks, each row named by the request it came in ("request of 2026-01-31 08:00:00 UTC, task 2").

    Every batch numbers its tasks from 1, so without the request's time the rows of
    different requests would all read "request, task 1" on the dashboard and in the report.
    """
    from .sheet import Imported

    def stamp(source: str) -> str:
        return origin + source[len("request"):] if source.startswith("request") else source

    return Imported([replace(s, source=stamp(s.source)) for s in imported],
                    [replace(s, template=replace(s.template, source=stamp(s.template.source)))
                     for s in imported.schedules])


@bp.get("/tasks/done")
def done():
    """Ids of done tasks above `after`."""
    return jsonify({"ids": api.store().done_ids(_int_arg("after", 0, 0, validate.MAX_ID))})


@bp.get("/tasks/<id:task_id>/result")
def result(task_id: int):
    """A done task's result; 404 until then."""
    task = api.store().task(task_id)
    if task["state"] != State.DONE:
        return jsonify({"error": "NotDone", "message": f"task {task_id} is {task['state']}, not done"}), 404
    return jsonify({"id": task_id, "result": task["result"]})


@bp.get("/tasks/<id:task_id>/lease")
def lease_state(task_id: int):
    """Is this lease still the task's current one, and if not, why? A read, polled by the task's worker.

    Kept apart from the heartbeat (a write, every third of the lease) so that a worker
    learns of a cancel within seconds without writing any more often; idle workers
    never ask.
    """
    lease = request.args.get("lease")
    if lease is None or not validate.LEASE.fullmatch(lease):
        raise BadRequest("lease must be the lease id from the claim (1-64 letters, digits, - or _)")
    return jsonify(api.store().lease_state(task_id, lease))


@bp.post("/tasks/<id:task_id>/requeue")
def requeue_one(task_id: int):
    """Queue a failed or cancelled task again with fresh attempts."""
    state = api.store().task(task_id)["state"]
    if not api.store().requeue([task_id], cancelled=True, by=_admin()):
        raise Conflict(f"task {task_id} is {state}; only failed or cancelled tasks can be requeued")
    log.info("task %s requeued %s", task_id, _admin())
    return jsonify({"ok": True, "state": State.QUEUED.value})


@bp.post("/tasks/<id:task_id>/cancel")
def cancel(task_id: int):
    """Cancel a task; a running one's worker learns it within seconds (it polls its lease) and stops."""
    state = api.store().cancel(task_id, by=_admin())
    log.info("task %s cancelled %s", task_id, _admin())
    return jsonify({"ok": True, "state": state})


def _admin() -> str:
    """Who asked, as far as the coordinator knows: a token holder, from this address."""
    return f"by an admin from {request.remote_addr}"


@bp.post("/requeue")
def requeue_failed():
    """Requeue every failed task (cancelled ones too when asked), or one NVR's; the answer lists them."""
    body = validate.json_body(optional=True)
    nvr = body.get("nvr")
    if (set(body) - {"nvr", "cancelled"}
            or not (nvr is None or isinstance(nvr, str) and 0 < len(nvr) <= 300 and nvr.isprintable())):
        raise BadRequest('body must be empty or {"nvr": "host[:port]", "cancelled": true|false}')
    ids = api.store().requeue(server=nvr.lower() if nvr else None, cancelled=validate.flag(body, "cancelled"),
                              by=_admin())
    log.info("%d task(s) requeued %s: %s", len(ids), _admin(), _id_list(ids))
    return jsonify({"ok": True, "requeued": len(ids), "ids": ids})


@bp.post("/nvrs/login")
def retry_login():
    """Release tasks held for a refused password without changing it (the account was unlocked on the NVR)."""
    body = validate.json_body()
    nvr = validate.text(body.get("nvr"), "nvr", 300)
    username = validate.text(body.get("username"), "username", 200, optional=True)
    if set(body) - {"nvr", "username"}:
        raise BadRequest('expected {"nvr": "host[:port]", "username": "..."} (username optional: every user)')
    count = api.store().retry_login(nvr.lower(), username)
    log.info("login of %s on %s retried by an admin: %d task(s) released", username or "every user", nvr, count)
    return jsonify({"ok": True, "released": count})


@bp.post("/pause")
def pause():
    """Stop handing out work; running tasks carry on."""
    api.store().set_paused(True)
    log.info("handing out work paused")
    return jsonify({"ok": True, "paused": True})


@bp.post("/resume")
def resume():
    """Hand out work again."""
    api.store().set_paused(False)
    log.info("handing out work resumed")
    return jsonify({"ok": True, "paused": False})


@bp.get("/rows")
def rows():
    """Sheet rows with their chunks rolled up, a page at a time."""
    page, per_page = _int_arg("page", 1, 1, 10**9), _int_arg("per_page", 100, 1, 500)
    found, total = api.store().rows(offset=(page - 1) * per_page, limit=per_page)
    for row in found:
        row["name"] = row_name(row["name"], row["source"], row["server"])
        row["row"] = row_label(row.pop("source"))
    return jsonify({"rows": found, "total": total, "page": page, "per_page": per_page})


@bp.get("/progress")
def progress():
    """Completions per minute (last hour), the recent rate and the ETA."""
    return jsonify(api.store().progress())


@bp.get("/report.xlsx")
def report():
    """The Excel report of every task, per sheet row and per NVR."""
    from .report import write_report

    buffer = io.BytesIO()
    write_report(api.store(), buffer, current_app.config["TASKSERVER"].paper)
    buffer.seek(0)
    return send_file(buffer, as_attachment=True, download_name="report.xlsx",
                     mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@bp.post("/workers/forget")
def forget_workers():
    """Drop a worker, or a host's workers, from the list (a host retired for good)."""
    body = validate.json_body()
    name = validate.text(body.get("worker"), "worker", 200)
    if set(body) - {"worker"} or not name or not validate.WORKER_NAME.fullmatch(name):
        raise BadRequest('expected {"worker": "<worker name or host name>"}')
    count = api.store().forget_workers(name)
    log.info("%d worker(s) of %s forgotten", count, name)
    return jsonify({"ok": True, "forgotten": count})


@bp.get("/schedules")
def schedules():
    """Active schedules: cadence, next run, the row they repeat (no password)."""
    return jsonify({"schedules": [schedule_view(s) for s in api.store().schedules()]})


@bp.post("/schedules/<id:schedule_id>/cancel")
def cancel_schedule(schedule_id: int):
    """Stop a schedule; the tasks its runs added stay."""
    if not api.store().cancel_schedule(schedule_id):
        raise Conflict(f"no active schedule {schedule_id}")
    log.info("schedule %s cancelled", schedule_id)
    return jsonify({"ok": True})


def _id_list(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:20]))
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.strip().lstrip("+-").isdigit()) or len(raw) > 30:
        raise BadRequest(f"{name} must be a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value

