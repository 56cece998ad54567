"""The manifest over HTTP: where every exported file went, its size and SHA-256, what it holds.

    GET /api/tasks/<id>/files                 one task's files
    GET /api/files?nvr=&camera=&from=&to=&after=&limit=
                                              files of a camera overlapping a time range (NVR-local
                                              times, as in the sheet), in pages by id

With many worker hosts, this is how anyone finds which host holds a given
camera-hour, and proves a copy unaltered (`sha256sum -c` on the host's
checksum file, or against these digests).
"""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, jsonify, request

from . import api, validate
from .errors import BadRequest

bp = Blueprint("files", __name__, url_prefix="/api")
bp.before_request(api.check_token)
bp.after_request(api.no_store)


@bp.get("/tasks/<id:task_id>/files")
def task_files(task_id: int):
    """A task's files (404 for a task that does not exist)."""
    api.store().task(task_id)
    return jsonify({"task": task_id, "files": api.store().files(task_id=task_id, limit=100_000)})


@bp.get("/files")
def find_files():
    """Files of one camera (of one NVR) overlapping [from, to), a page at a time."""
    args = request.args
    unknown = set(args) - {"nvr", "camera", "from", "to", "after", "limit"}
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    start, end = _time(validate.query_text("from"), "from"), _time(validate.query_text("to"), "to")
    after = _whole(args.get("after"), "after", 0, 0, 2**62)
    limit = _whole(args.get("limit"), "limit", 1000, 1, 10_000)
    found = api.store().files(camera=validate.query_text("camera"), nvr=validate.query_text("nvr"), start=start,
                              end=end, after=after, limit=limit)
    return jsonify({"files": found, "next_after": found[-1]["id"] if len(found) == limit else None})


def _time(raw: str | None, name: str) -> str | None:
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=None).isoformat(timespec="seconds")
    except ValueError:
        raise BadRequest(f"{name} must be a date-time such as 2026-01-31T08:00") from None


def _whole(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20) or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(raw)
