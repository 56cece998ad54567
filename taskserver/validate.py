"""Reading what clients send: JSON bodies, query values and the values workers report.

Everything here comes from outside and is checked by type and size before it
reaches the store, so a malformed request is answered 400 with the field it is
about, never 500, and nothing a worker reports can later break a page, a log
line or the report. Texts from NVRs (a failed attempt's error) are cleaned
rather than refused, so that a hostile NVR cannot make a worker's report fail.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime

from flask import request
from werkzeug.routing import IntegerConverter

from .errors import BadRequest
from .holds import MAX_HOLD

MAX_DEPTH = 32  # nesting of any JSON body; real bodies need 4
MAX_ID = 2**63 - 1  # task and event ids are 64-bit integers in both databases
MAX_RESULT = 4 * 1024 * 1024  # a result's JSON, e.g. with a manifest of the files a task wrote
MAX_PROGRESS = 16 * 1024  # a heartbeat's progress JSON
MAX_PROGRESS_KEYS = 32
MAX_TEXT = 300  # a string in a progress report (e.g. the recording being downloaded)
MAX_ERROR = 4000  # a failed attempt's error text is cut here
MAX_FILES = 10**9
MAX_BYTES = 2**53  # exact in JavaScript too, so the dashboard shows what was reported
PROGRESS_COUNTS = ("done", "total", "bytes", "cameras", "rate")  # non-negative whole numbers, or null
PROGRESS_KEY = re.compile(r"[a-z][a-z0-9_]{0,39}")
LEASE = re.compile(r"[A-Za-z0-9_-]{1,64}")
WORKER_NAME = re.compile(r"[\w.:@/+-]{1,200}")  # fullmatch: no trailing newline either
HOLD = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?")  # seconds, as a claim's `wait` gives them
UNSAFE_TEXT = re.compile(r"[\x00\ud800-\udfff]")  # no database keeps a NUL or half a surrogate pair
UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")  # controls: a path in a log or a terminal shows as it is
MAX_MANIFEST = 100_000  # files one task may report (a camera-day in one-minute pictures is 1,440)


class TaskId(IntegerConverter):
    """`<id:...>` in a route: a task id that fits the databases; a larger number names no task (404)."""

    def __init__(self, url_map):
        super().__init__(url_map, min=0, max=MAX_ID)


def json_body(optional: bool = False) -> dict:
    """The request's JSON object; `optional`: an empty body is {}.

    The body was already bounded by the app's MAX_CONTENT_LENGTH (413 above it).
    Numbers too large for a float, NaN, and nesting deeper than MAX_DEPTH are refused.
    """
    data = request.get_data(cache=True)
    if not data.strip() and optional:
        return {}
    try:
        body = json.loads(data, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(f"the JSON body is nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON (Content-Type: application/json): {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object body (Content-Type: application/json)")
    _check_depth(body)
    return body


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _check_depth(value) -> None:
    """Refuse deep nesting and numbers that would overflow later (1e400 is read as infinity)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"the JSON body is nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, float) and item in (float("inf"), float("-inf")):
            raise BadRequest("a number in the body is too large")


def clean(value):
    """A copy of a JSON value whose strings (keys too) hold no NUL and no lone surrogate."""
    if isinstance(value, str):
        return UNSAFE_TEXT.sub("\ufffd", value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def whole(value, field: str, low: int, high: int, optional: bool = False) -> int | None:
    """A whole number in [low, high] (not a bool, not a float), or None when optional and absent."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"'{field}' must be a whole number from {low} to {high}")
    return value


def flag(body: dict, field: str) -> bool:
    """An optional true/false field."""
    value = body.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"'{field}' must be true or false")
    return value


def text(value, field: str, limit: int, optional: bool = False) -> str | None:
    """A string of at most `limit` characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"'{field}' must be a string of at most {limit} characters")
    return value


def lease(body: dict) -> str:
    """The lease id a worker reports on."""
    value = body.get("lease")
    if not isinstance(value, str) or not LEASE.fullmatch(value):
        raise BadRequest("'lease' (the lease id from the claim) is required")
    return value


def worker(name) -> str:
    """A worker's name: it is shown on the dashboard and written to logs."""
    if name is None:
        name = request.remote_addr or "unknown"
    if not isinstance(name, str) or not WORKER_NAME.fullmatch(name):
        raise BadRequest("'worker' must be 1-200 characters of letters, digits and . : @ / + - _")
    return name


def hold(value) -> float:
    """A claim's `wait` (seconds to hold it while there is nothing to take); 0 when not asked."""
    if value is None:
        return 0.0
    seconds = float(value) if HOLD.fullmatch(value) else math.nan  # plain ASCII digits: no 5_0, no ५
    if not 0 <= seconds <= MAX_HOLD:  # NaN fails this too
        raise BadRequest(f"'wait' must be a number of seconds from 0 to {MAX_HOLD:g}")
    return seconds


def progress(value) -> dict | None:
    """A heartbeat's progress: counts as whole numbers, other fields numbers or strings (cut to MAX_TEXT).

    Runners may add fields of their own (lower-case names); the known counts are
    typed, because the dashboard and the worker list compute with them.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_PROGRESS_KEYS:
        raise BadRequest(f"'progress' must be an object of at most {MAX_PROGRESS_KEYS} fields")
    checked = {}
    for key, item in value.items():
        if not isinstance(key, str) or not PROGRESS_KEY.fullmatch(key):
            raise BadRequest("'progress' field names must be lower-case words (a-z, 0-9, _), at most 40 characters")
        if key in PROGRESS_COUNTS:
            checked[key] = whole(item, f"progress.{key}", 0, MAX_BYTES, optional=True)
        elif isinstance(item, str):  # often an NVR's text (a recording's name): cut, never refused
            checked[key] = clean(item[:MAX_TEXT])
        elif item is None or isinstance(item, bool) or (isinstance(item, int) and abs(item) <= MAX_BYTES):
            checked[key] = item
        elif isinstance(item, float):
            checked[key] = round(item, 3)
        else:
            raise BadRequest(f"'progress.{key}' must be a number, true/false or a string")
    return checked


def result(value) -> dict:
    """A completion's result: `files` and `bytes` as whole numbers; the rest free, within MAX_RESULT."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest("'result' must be an object")
    whole(value.get("files"), "result.files", 0, MAX_FILES, optional=True)
    whole(value.get("bytes"), "result.bytes", 0, MAX_BYTES, optional=True)
    value = clean(value)
    if len(json.dumps(value, separators=(",", ":"))) > MAX_RESULT:
        raise BadRequest(f"'result' must be at most {MAX_RESULT // (1024 * 1024)} MB of JSON")
    if "listing" in value:
        _listing(value["listing"])
    if "manifest" in value:
        _manifest(value["manifest"])
    return value


def _listing(value) -> None:
    """A dry run's findings: recordings and bytes in all and per camera, all whole numbers."""
    if not isinstance(value, dict) or not isinstance(value.get("cameras", {}), dict):
        raise BadRequest("'result.listing' must be an object with 'recordings', 'bytes' and 'cameras'")
    for where, figures in [("result.listing", value), *((f"result.listing.cameras.{c}", f)
                                                          for c, f in value.get("cameras", {}).items())]:
        if not isinstance(figures, dict):
            raise BadRequest(f"'{where}' must be an object")
        whole(figures.get("recordings"), f"{where}.recordings", 0, MAX_FILES)
        whole(figures.get("bytes"), f"{where}.bytes", 0, MAX_BYTES)


def _manifest(value) -> None:
    """Where a task's files went: paths relative to the worker's downloads folder, checksums, times.

    Nothing on the coordinator opens these paths, but people and scripts follow them (the
    report, /api/files), so a path that climbs out or is absolute is refused, as is a
    time or a checksum that is not one.
    """
    if not isinstance(value, list) or len(value) > MAX_MANIFEST:
        raise BadRequest(f"'result.manifest' must be a list of at most {MAX_MANIFEST} files")
    for i, entry in enumerate(value):
        where = f"result.manifest[{i}]"
        if not isinstance(entry, dict):
            raise BadRequest(f"'{where}' must be an object")
        path = entry.get("path")
        if (not isinstance(path, str) or not 0 < len(path) <= 1024 or "\\" in path or UNSAFE_PATH.search(path)
                or re.match(r"[A-Za-z]:", path) or any(p in ("", ".", "..") for p in path.split("/"))):
            raise BadRequest(f"'{where}.path' must be a relative path inside the downloads folder, without '..'")
        whole(entry.get("size"), f"{where}.size", 0, MAX_BYTES)
        if entry.get("sha256") is not None and not (isinstance(entry["sha256"], str)
                                                    and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])):
            raise BadRequest(f"'{where}.sha256' must be 64 hexadecimal digits")
        for key in ("start", "end"):
            if entry.get(key) is not None and not _iso(entry[key]):
                raise BadRequest(f"'{where}.{key}' must be an ISO 8601 time")
        for key in ("host", "camera", "camera_name", "kind", "location"):
            if entry.get(key) is not None and not (isinstance(entry[key], str) and len(entry[key]) <= 4096):
                raise BadRequest(f"'{where}.{key}' must be a string of at most 4096 characters")


def _iso(value) -> bool:
    if not isinstance(value, str) or len(value) > 40:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def error(value) -> str:
    """A failed attempt's error text: required; cut to MAX_ERROR characters and cleaned, never refused."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("'error' must be a non-empty string")
    return clean(value[:MAX_ERROR])


def query_text(name: str, limit: int = 500) -> str | None:
    """A query parameter as text (no NUL), or None."""
    value = request.args.get(name)
    if value is None:
        return None
    if len(value) > limit or "\x00" in value:
        raise BadRequest(f"{name} must be at most {limit} characters, without NUL")
    return value
