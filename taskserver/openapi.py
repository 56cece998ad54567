"""`GET /api/openapi.json`: an OpenAPI 3 description of every route, its parameters, bodies and answers.

Written here, next to the limits it quotes, rather than generated: it is the
contract workers and scripts are written against, and the test suite fuzzes
the running coordinator with it (no 5xx, no answer outside it).
"""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from . import __version__, api, validate
from .holds import MAX_HOLD
from .store import State

bp = Blueprint("openapi", __name__, url_prefix="/api")
bp.before_request(api.check_token)
bp.after_request(api.no_store)

NULL_INT = {"type": "integer", "nullable": True}
NULL_NUMBER = {"type": "number", "nullable": True}
NULL_STRING = {"type": "string", "nullable": True}
ISO = {"type": "string", "nullable": True, "description": "the time beside it, as ISO 8601 in UTC"}
TASK_ID = {"name": "task_id", "in": "path", "required": True,
           "schema": {"type": "integer", "minimum": 0, "maximum": validate.MAX_ID}}
WORKER = {"type": "string", "pattern": r"^[\w.:@/+-]{1,200}$", "maxLength": 200,
          "description": "the worker's name, shown on the dashboard (default: its address)"}
LEASE = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$", "description": "the lease id from the claim"}
ERRORS = {
    400: "malformed request: the message names the parameter or field",
    401: "bearer token missing or wrong",
    403: "refused: a web page of another origin asked to change state or claim a task",
    404: "no such task or route",
    409: "the lease is no longer current, or the action does not fit the task's state; nothing changed",
    413: f"request body larger than --max-body (default {8 * 1024 * 1024} bytes)",
    415: "request body is not JSON (Content-Type: application/json)",
    421: "the Host header names no host this coordinator serves (see --public-host)",
    503: "the database is unavailable, or too many event streams are open; retry shortly",
}
READ = (400, 401, 421, 503)
WRITE = (400, 401, 403, 413, 415, 421, 503)


def _obj(properties: dict, required: tuple = (), extra: bool = True, **more) -> dict:
    schema = {"type": "object", "properties": properties, **more}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    return schema


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, answers: dict, errors: tuple, params: list | None = None, body: dict | None = None,
        tag: str = "tasks", body_required: bool = True) -> dict:
    """One operation: its 2xx answers (status -> response) and the error statuses it may give."""
    responses = {str(code): answer for code, answer in answers.items()}
    for code in errors:
        responses[str(code)] = _json(_ref("Error"), ERRORS[code])
    op = {"summary": summary, "tags": [tag], "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    return op


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


SCHEMAS = {
    "Error": _obj({"error": {"type": "string"}, "message": {"type": "string"},
                   "problems": {"type": "array", "description": "a refused sheet or batch: every problem, and where",
                                "items": _obj({"file": {"type": "string"}, "sheet": NULL_STRING, "row": NULL_INT,
                                               "column": NULL_STRING, "message": {"type": "string"}})},
                   "task": {"type": "integer", "description": "a lost lease: the task"},
                   "state": {"type": "string", "description": "a lost lease: the task's state"}},
                  ("error", "message")),
    "Ok": _obj({"ok": {"type": "boolean"}}, ("ok",)),
    "Progress": {"type": "object", "nullable": True, "maxProperties": validate.MAX_PROGRESS_KEYS,
                 "description": "done, total, bytes, cameras, rate: whole numbers >= 0 or null; other fields"
                                f" (lower-case names): numbers, true/false or strings (cut to {validate.MAX_TEXT}"
                                " characters)",
                 "properties": {k: {"type": "integer", "minimum": 0, "maximum": validate.MAX_BYTES, "nullable": True}
                                for k in validate.PROGRESS_COUNTS},
                 "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}},
    "Result": _obj({"files": {"type": "integer", "minimum": 0, "maximum": validate.MAX_FILES},
                    "bytes": {"type": "integer", "minimum": 0, "maximum": validate.MAX_BYTES}},
                   description=f"files and bytes as whole numbers; any other fields, at most"
                               f" {validate.MAX_RESULT // (1024 * 1024)} MB of JSON in all (e.g. a manifest)"),
    "Schedule": _obj({
        "id": {"type": "integer"}, "cadence": {"type": "string"}, "zone": NULL_STRING,
        "next_window_start": {"type": "string"}, "next_run": {"type": "number"}, "next_run_iso": ISO,
        "runs": {"type": "integer"}, "last_run": NULL_NUMBER, "last_run_iso": ISO, "source": {"type": "string"},
        "server": {"type": "string"}, "username": {"type": "string"},
        "cameras": {"type": "array", "items": {"type": "string"}}, "name": {"type": "string"}},
        description="an active schedule: it adds its row's tasks on a cadence"),
    "Task": _obj({
        "id": {"type": "integer"}, "key": {"type": "string"}, "name": {"type": "string"},
        "server": {"type": "string"}, "username": {"type": "string"},
        "cameras": {"type": "array", "items": {"type": "string"}}, "start": NULL_STRING, "end": NULL_STRING,
        "priority": {"type": "integer"}, "source": {"type": "string"}, "group": {"type": "string"},
        "state": {"type": "string", "enum": [s.value for s in State]}, "attempts": {"type": "integer"},
        "worker": NULL_STRING, "lease_expires_in": NULL_NUMBER, "progress": {"type": "object", "nullable": True},
        "result": {"type": "object", "nullable": True}, "last_error": NULL_STRING, "created": {"type": "number"},
        "started": NULL_NUMBER, "finished": NULL_NUMBER, "mode": {"type": "string", "enum": ["export", "list"]},
        "created_iso": ISO, "started_iso": ISO, "finished_iso": ISO,
        "nothing_found": {"type": "boolean", "description": "done, but the export found no recording at all"},
        "options": {"type": "object", "description": "what the row asks of its export (window, content...)"},
        "timezone": NULL_STRING, "tls_fingerprint": NULL_STRING,
        "attempt_log": {"type": "array", "items": _obj({
            "worker": NULL_STRING, "started": NULL_NUMBER, "ended": NULL_NUMBER, "outcome": NULL_STRING,
            "error": NULL_STRING, "started_iso": ISO, "ended_iso": ISO})},
    }, ("id", "name", "server", "cameras", "state", "attempts", "nothing_found"),
        description="a task; never its password. Times: seconds since the epoch, and the same as ISO 8601"),
    "Claim": _obj({
        "status": {"type": "string", "enum": ["task", "wait", "drained"]},
        "task": _obj({"id": {"type": "integer"}, "key": {"type": "string"}, "name": {"type": "string"},
                      "server": {"type": "string"}, "username": {"type": "string"}, "password": {"type": "string"},
                      "cameras": {"type": "array", "items": {"type": "string"}}, "start": NULL_STRING,
                      "end": NULL_STRING, "attempt": {"type": "integer"}, "max_attempts": {"type": "integer"},
                      "takes_earlier": {"type": "boolean"}, "timezone": NULL_STRING,
                      "tls_fingerprint": NULL_STRING, "mode": {"type": "string", "enum": ["export", "list"]},
                      "options": {"type": "object"}},
                     ("id", "server", "username", "password", "cameras", "attempt")),
        "lease": _obj({"id": {"type": "string"}, "seconds": {"type": "number"}}, ("id", "seconds")),
        "retry_after": {"type": "number", "minimum": 0},
        "held": {"type": "boolean", "description": "the claim was held (wait=) and nothing was freed meanwhile"},
    }, ("status",), description="task: a task with its password and a lease; wait: ask again after retry_after"
                                " seconds; drained: every task is finished, exit"),
    "Status": _obj({
        "counts": _obj({s.value: {"type": "integer"} for s in State}), "tasks": {"type": "integer"},
        "nothing_found": {"type": "integer", "description": "done tasks whose export found no recording"},
        "at": {"type": "number"}, "at_iso": ISO,
        "files": {"type": "integer"}, "bytes": {"type": "integer"}, "drained": {"type": "boolean"},
        "paused": {"type": "boolean"},
        "last_drain": {"type": "object", "nullable": True, "description": "the summary of the latest drain"},
        "schedules": {"type": "array", "items": _ref("Schedule"), "description": "active schedules, soonest first"},
        "workers": {"type": "array", "items": _obj({
            "name": {"type": "string"}, "task": NULL_INT, "done": {"type": "integer"}, "failed": {"type": "integer"},
            "last_seen_ago": {"type": "number"}, "lost": {"type": "boolean"}, "last_seen": {"type": "number"},
            "last_seen_iso": ISO,
            "state": {"type": "string", "enum": ["ok", "full", "fault", "stopped"]}, "detail": NULL_STRING})},
        "nvrs": {"type": "array", "items": _obj({
            "server": {"type": "string"}, "running": {"type": "integer"}, "queued": {"type": "integer"},
            "max_parallel": {"type": "integer"}, "resting_for": {"type": "number"}, "last_error": NULL_STRING,
            "done": {"type": "integer"}, "failed": {"type": "integer"}, "files": {"type": "integer"},
            "bytes": {"type": "integer"}, "clock_offset": NULL_NUMBER, "nothing_found": {"type": "integer"},
            "password_refused": {"type": "array", "items": _obj({
                "username": {"type": "string"}, "error": NULL_STRING, "locked_for": {"type": "number"}})}})},
    }, ("counts", "tasks", "files", "bytes", "drained", "workers", "nvrs", "nothing_found")),
}

HEARTBEAT = _obj({"lease": LEASE, "progress": _ref("Progress")}, ("lease",))
COMPLETE = _obj({"lease": LEASE, "result": _ref("Result"), "next": {"type": "boolean"}, "worker": WORKER},
                ("lease",))
FAIL = _obj({"lease": LEASE, "error": {"type": "string", "minLength": 1, "pattern": r"\S",
                                       "description": f"cut to {validate.MAX_ERROR} characters"},
             "permanent": {"type": "boolean"},
             "device": {"type": "string", "enum": ["busy", "unreachable", "auth"], "nullable": True,
                        "description": "blame the NVR: busy or unreachable rest it; auth holds the NVR user's tasks"},
             "locked_for": {"type": "number", "minimum": 0, "maximum": 86400, "nullable": True,
                            "description": "auth: seconds the device said the account stays locked"}},
            ("lease", "error"))
BATCH = _obj({"worker": WORKER,
              "done": {"type": "array", "maxItems": 100, "items": _obj(
                  {"id": {"type": "integer", "minimum": 0, "maximum": validate.MAX_ID}, "lease": LEASE,
                   "result": _ref("Result")}, ("id", "lease"))},
              "claim": {"type": "integer", "minimum": 0, "maximum": 100}})
BATCHED = _obj({"ok": {"type": "boolean"},
                "done": {"type": "array", "items": _obj({"id": {"type": "integer"}, "ok": {"type": "boolean"},
                                                         "error": {"type": "string"}}, ("id", "ok"))},
                "status": {"type": "string", "enum": ["task", "wait", "drained"]},
                "tasks": {"type": "array", "items": _obj({"task": {"type": "object"}, "lease": {"type": "object"}},
                                                         ("task", "lease"))},
                "retry_after": {"type": "number", "minimum": 0}}, ("ok", "done"))
FILE = _obj({"id": {"type": "integer"}, "task_id": {"type": "integer"}, "server": {"type": "string"},
             "host": {"type": "string"}, "path": {"type": "string"}, "size": {"type": "integer"},
             "sha256": NULL_STRING, "camera": NULL_STRING, "camera_name": NULL_STRING, "start": NULL_STRING,
             "end": NULL_STRING, "kind": {"type": "string"}, "location": NULL_STRING},
            ("task_id", "host", "path", "size"))
ADD = _obj({"tasks": {"type": "array", "items": {"type": "object"},
                      "description": "rows with the sheet's column names as fields (see README, the task sheet)"},
            "chunk": {"type": "string", "maxLength": 100}, "timezone": {"type": "string", "maxLength": 100},
            "dry_run": {"type": "boolean", "description": "add the rows as dry runs: list, download nothing"}},
           ("tasks",), extra=False)
ADDED = _obj({"added": {"type": "integer"}, "existing": {"type": "integer"}, "updated": {"type": "integer"},
              "ids": {"type": "array", "items": {"type": "integer"}, "description": "the tasks added"},
              "existing_ids": {"type": "array", "items": {"type": "integer"},
                               "description": "the tasks of the request that were there already"}},
             ("added", "existing", "ids", "existing_ids"))
LEASE_STATE = _obj({
    "current": {"type": "boolean"}, "state": {"type": "string", "enum": [s.value for s in State]},
    "reason": {"type": "string", "nullable": True,
               "enum": [None, "cancelled", "expired", "taken over", "released", "finished", "unknown"]},
    "detail": {"type": "string", "nullable": True, "description": "e.g. cancelled by an admin from 10.0.0.9"}},
    ("current", "state", "reason"))
STATE = _obj({"ok": {"type": "boolean"}, "state": {"type": "string"}}, ("ok", "state"))
PAGE = [_query("page", {"type": "integer", "minimum": 1, "maximum": 10**9}, "page number, from 1")]


def _paths() -> dict:
    task = [TASK_ID]
    ok = _json(_ref("Ok"), "done")
    return {
        "/": {"get": _op("the dashboard", {200: {"description": "the live page",
                                                 "content": {"text/html": {"schema": {"type": "string"}}}}},
                         (421,), tag="pages")},
        "/healthz": {"get": _op("liveness probe; no token, any Host", {200: _json(_ref("Ok"), "alive")}, (),
                                tag="pages")},
        "/metrics": {"get": _op("Prometheus metrics", {200: {"description": "text exposition format", "content": {
            "text/plain": {"schema": {"type": "string"}}}}}, READ, tag="pages")},
        "/api/openapi.json": {"get": _op("this description", {200: _json({"type": "object"}, "OpenAPI 3")}, READ,
                                         tag="pages")},
        "/api/claim": {"get": _op("claim one task (hands out the password and a lease)",
                                  {200: _json(_ref("Claim"), "a task, wait, or drained")},
                                  (400, 401, 403, 421, 503), [
                                      _query("worker", WORKER, "the worker's name"),
                                      _query("wait", {"type": "number", "minimum": 0, "maximum": MAX_HOLD},
                                             "seconds to hold the claim while nothing can be handed out")],
                                  tag="workers")},
        "/api/tasks/{task_id}/heartbeat": {"post": _op(
            "extend the lease; report progress", {200: _json(_obj({"ok": {"type": "boolean"},
                                                                   "lease_seconds": {"type": "number"}}), "extended")},
            (*WRITE, 404, 409), task, HEARTBEAT, tag="workers")},
        "/api/tasks/{task_id}/complete": {"post": _op(
            "report the task done with the lease (and claim the next)",
            {200: _json(_obj({"ok": {"type": "boolean"}, "next": _ref("Claim")}, ("ok",)), "recorded")},
            (*WRITE, 404, 409), task, COMPLETE, tag="workers")},
        "/api/tasks/{task_id}/fail": {"post": _op(
            "report a failed attempt with the lease", {200: _json(STATE, "the task's new state")},
            (*WRITE, 404, 409), task, FAIL, tag="workers")},
        "/api/tasks/{task_id}/release": {"post": _op(
            "give the task back unrun, with the lease (no attempt charged)", {200: ok}, (*WRITE, 404, 409), task,
            _obj({"lease": LEASE, "reason": {"type": "string", "nullable": True, "maxLength": 100_000,
                                             "description": "e.g. a fault of the worker host's own; cut to 1000"}},
                 ("lease",)), tag="workers")},
        "/api/batch": {"post": _op(
            "opt-in batches: report finished tasks and lease up to `claim` more, each with its own lease",
            {200: _json(BATCHED, "each report's outcome, and the tasks leased (or wait, or drained)")}, WRITE,
            body=BATCH, tag="workers")},
        "/api/workers/state": {"post": _op(
            "what a worker host says of itself", {200: ok}, WRITE, body=_obj({
                "worker": WORKER, "state": {"type": "string", "enum": ["ok", "full", "fault", "stopped"]},
                "detail": {"type": "string", "nullable": True, "maxLength": 100_000}}, ("state",)), tag="workers")},
        "/api/tasks/{task_id}/lease": {"get": _op(
            "is the lease still current, and if not, why (a running worker asks every few seconds)",
            {200: _json(LEASE_STATE, "the lease's state")}, (*READ, 404), [TASK_ID, {
                "name": "lease", "in": "query", "required": True, "schema": LEASE}], tag="workers")},
        "/favicon.ico": {"get": _op("the dashboard's icon", {200: {"description": "an SVG icon", "content": {
            "image/svg+xml": {"schema": {"type": "string"}}}}}, (421,), tag="pages")},
        "/api/tasks/{task_id}/files": {"get": _op("a task's files: host, path, size, SHA-256, camera, times",
                                                  {200: _json(_obj({"task": {"type": "integer"}, "files": {
                                                      "type": "array", "items": FILE}}, ("files",)), "files")},
                                                  (*READ, 404), task)},
        "/api/files": {"get": _op("files of a camera overlapping a time range, in pages", {200: _json(_obj({
            "files": {"type": "array", "items": FILE}, "next_after": NULL_INT}, ("files",)), "a page of files")},
            READ, [_query("nvr", {"type": "string", "maxLength": 500}, "the NVR"),
                   _query("camera", {"type": "string", "maxLength": 500}, "the camera (track id)"),
                   _query("from", {"type": "string", "format": "date-time"}, "NVR-local start"),
                   _query("to", {"type": "string", "format": "date-time"}, "NVR-local end"),
                   _query("after", {"type": "integer", "minimum": 0, "maximum": 2**62}, "the last id seen"),
                   _query("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}, "page size")])},
        "/api/schedules": {"get": _op("active schedules", {200: _json(_obj({"schedules": {
            "type": "array", "items": _ref("Schedule")}}, ("schedules",)), "schedules")}, READ)},
        "/api/schedules/{schedule_id}/cancel": {"post": _op(
            "stop a schedule (its tasks stay)", {200: ok}, (*WRITE, 404, 409),
            [{"name": "schedule_id", "in": "path", "required": True,
              "schema": {"type": "integer", "minimum": 0, "maximum": validate.MAX_ID}}])},
        "/api/workers/forget": {"post": _op(
            "drop a worker, or a host's workers, from the list",
            {200: _json(_obj({"ok": {"type": "boolean"}, "forgotten": {"type": "integer"}}, ("ok",)), "forgotten")},
            WRITE, body=_obj({"worker": WORKER}, ("worker",), extra=False), tag="workers")},
        "/api/nvrs/login": {"post": _op(
            "try a refused NVR password again (the account was unlocked on the device)",
            {200: _json(_obj({"ok": {"type": "boolean"}, "released": {"type": "integer"}}, ("ok",)), "released")},
            WRITE, body=_obj({"nvr": {"type": "string", "maxLength": 300},
                              "username": {"type": "string", "maxLength": 200}}, ("nvr",), extra=False))},
        "/api/tasks/{task_id}": {"get": _op("one task with its attempt log", {200: _json(_ref("Task"), "the task")},
                                            (*READ, 404), task)},
        "/api/status": {"get": _op("counts per state, totals, workers, NVRs", {200: _json(_ref("Status"), "status")},
                                   READ)},
        "/api/tasks": {
            "get": _op("a page of tasks", {200: _json(_obj({
                "tasks": {"type": "array", "items": _ref("Task")}, "total": {"type": "integer"},
                "page": {"type": "integer"}, "per_page": {"type": "integer"}}, ("tasks", "total")), "a page")},
                READ, [_query("state", {"type": "string", "enum": [s.value for s in State]}, "only this state"),
                       _query("nvr", {"type": "string", "maxLength": 500}, "only this NVR"),
                       _query("worker", {"type": "string", "maxLength": 500}, "only this worker's"),
                       _query("q", {"type": "string", "maxLength": 500}, "text in name, row, key or error"),
                       _query("order", {"type": "string", "enum": ["id", "newest", "priority"]}, "order"),
                       *PAGE, _query("per_page", {"type": "integer", "minimum": 1, "maximum": 500}, "page size")]),
            "post": _op("add tasks, all of the batch or nothing", {200: _json(ADDED, "all were there already"),
                                                                  201: _json(ADDED, "added")}, WRITE, body=ADD)},
        "/api/tasks/done": {"get": _op("ids of done tasks above `after`", {200: _json(_obj(
            {"ids": {"type": "array", "items": {"type": "integer"}}}, ("ids",)), "ids")}, READ,
            [_query("after", {"type": "integer", "minimum": 0, "maximum": validate.MAX_ID}, "last id seen")])},
        "/api/tasks/{task_id}/result": {"get": _op("a done task's result", {200: _json(_obj(
            {"id": {"type": "integer"}, "result": {"type": "object", "nullable": True}}, ("id", "result")),
            "the result")}, (*READ, 404), task)},
        "/api/tasks/{task_id}/requeue": {"post": _op("queue a failed or cancelled task again", {200: _json(
            STATE, "queued")}, (*WRITE, 404, 409), task)},
        "/api/tasks/{task_id}/cancel": {"post": _op("cancel a queued, waiting or running task", {200: _json(
            STATE, "cancelled")}, (*WRITE, 404, 409), task)},
        "/api/requeue": {"post": _op("requeue every failed task (cancelled ones too if asked), or one NVR's",
                                     {200: _json(_obj({"ok": {"type": "boolean"}, "requeued": {"type": "integer"},
                                                       "ids": {"type": "array", "items": {"type": "integer"}}},
                                                      ("ok", "requeued", "ids")), "requeued")}, WRITE,
                                     body=_obj({"nvr": {"type": "string", "minLength": 1, "maxLength": 300},
                                                "cancelled": {"type": "boolean"}}, extra=False),
                                     body_required=False)},
        "/api/pause": {"post": _op("stop handing out work", {200: _json(_obj(
            {"ok": {"type": "boolean"}, "paused": {"type": "boolean"}}), "paused")}, WRITE)},
        "/api/resume": {"post": _op("hand out work again", {200: _json(_obj(
            {"ok": {"type": "boolean"}, "paused": {"type": "boolean"}}), "resumed")}, WRITE)},
        "/api/rows": {"get": _op("sheet rows with their chunks rolled up", {200: _json(_obj({
            "rows": {"type": "array", "items": _obj({
                "row": {"type": "string"}, "name": {"type": "string"}, "server": {"type": "string"},
                "tasks": {"type": "integer"}, "done": {"type": "integer"}, "failed": {"type": "integer"},
                "cancelled": {"type": "integer"}, "active": {"type": "integer"},
                "nothing_found": {"type": "integer", "description": "done tasks that found no recording"},
                "files": {"type": "integer"}, "bytes": {"type": "integer"},
                "state": {"type": "string", "enum": ["in progress", "failed", "cancelled", "partly cancelled",
                                                     "done", "done, nothing found"]},
                "dry_run": {"type": "boolean", "description": "the row was imported with --dry-run"},
                "would_export": {**_obj({"recordings": {"type": "integer"}, "bytes": {"type": "integer"}},
                                        ("recordings", "bytes")), "nullable": True,
                                 "description": "a dry run's findings so far, summed over its chunks"}})},
            "total": {"type": "integer"}, "page": {"type": "integer"}, "per_page": {"type": "integer"}},
            ("rows", "total")), "a page of rows")}, READ,
            [*PAGE, _query("per_page", {"type": "integer", "minimum": 1, "maximum": 500}, "page size")])},
        "/api/progress": {"get": _op("completions per minute, rate, ETA", {200: _json(_obj({
            "per_minute": {"type": "array", "items": {"type": "integer"}}, "rate_per_minute": {"type": "number"},
            "measured": {"type": "boolean", "description": "false until enough work is done to give a rate"},
            "paused": {"type": "boolean"}, "left": {"type": "integer"},
            "eta_seconds": {**NULL_NUMBER, "description": "null while paused, or not measured yet"},
            "at": {"type": "number"}, "at_iso": ISO}, ("per_minute",)), "progress")}, READ)},
        "/api/report.xlsx": {"get": _op("the Excel report", {200: {"description": "report.xlsx", "content": {
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                "schema": {"type": "string", "format": "binary"}}}}}, READ)},
        "/api/events": {"get": _op(
            "server-sent events: one `task` event per change, a `summary` every 5 s",
            {200: {"description": "an event stream: each event's data is JSON", "content": {"text/event-stream": {
                "schema": _obj({"event": {"type": "string", "enum": ["task", "summary"]},
                                "id": {"type": "string", "pattern": "^[0-9]+$"}, "data": {"type": "string"},
                                "retry": {"type": "integer"}})}}}},
            READ, [_query("after", {"type": "integer", "minimum": 0, "maximum": validate.MAX_ID},
                          "send changes after this event id (as Last-Event-ID)"),
                   _query("follow", {"type": "string", "enum": ["true", "false"]},
                          "false: send the changes there are now, then end"),
                   {"name": "Last-Event-ID", "in": "header", "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": validate.MAX_ID}}])},
    }


def describe() -> dict:
    """The whole description, as a dict."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "taskserver", "version": __version__,
                 "description": "A pull-based task coordinator: workers claim tasks, heartbeat, and report back."
                                " Every call needs `Authorization: Bearer <token>` when the coordinator has a"
                                " token, except read views on a loopback-only coordinator and /healthz."},
        "security": [{"bearer": []}, {}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": SCHEMAS},
        "paths": _paths(),
    }


@bp.get("/openapi.json")
def description():
    """This coordinator's API, as OpenAPI 3."""
    cached = current_app.extensions.get("taskserver.openapi")
    if cached is None:
        cached = current_app.extensions["taskserver.openapi"] = describe()
    return jsonify(cached)
