"""Task sheets: `tasks.xlsx` rows in, validated task specs out.

The whole sheet is read and checked before anything is queued, and every
problem is reported with file, sheet, row and column, so a bad sheet never
leaves half an import behind.
"""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from openpyxl.utils import get_column_letter

from .errors import SheetError, SheetProblem
from .store.base import TaskSpec

# Header names, normalised (lower case, no spaces or underscores), and the field each one fills.
ALIASES = {
    "server": "server", "nvr": "server", "host": "server", "address": "server",
    "username": "username", "user": "username", "login": "username",
    "password": "password", "pass": "password",
    "cameras": "cameras", "camera": "cameras", "channels": "cameras", "tracks": "cameras",
    "starttime": "starttime", "start": "starttime", "from": "starttime",
    "endtime": "endtime", "end": "endtime", "to": "endtime",
    "id": "id", "name": "name", "priority": "priority",
    "chunk": "chunk", "maxparallel": "max_parallel", "parallel": "max_parallel",
    "timezone": "timezone", "tz": "timezone",
}
REQUIRED = ("server", "username", "password", "starttime", "endtime")
# The header-less layout of sheets made for the original blog-post task server.
HEADERLESS = ("username", "password", "server", "cameras", "starttime", "endtime")
SERVER = re.compile(r"^(?:(https?)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(\d{1,5}))?/?$")


def load_sheet(path: str | Path, chunk: str | None = None, timezone: str | None = None) -> list[TaskSpec]:
    """Read and validate a task sheet; raise SheetError listing every problem found.

    `chunk` ("1h") splits every row per camera and per that much time unless the row
    has its own `chunk`; `timezone` is the NVRs' zone unless a row names its own.
    """
    path = Path(path)
    fname = path.name
    defaults = _defaults(fname, chunk, timezone)
    if not path.is_file():
        raise SheetError([SheetProblem(str(path), "file not found")])
    try:
        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException

        workbook = load_workbook(path, read_only=True, data_only=False)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise SheetError([SheetProblem(fname, f"not an Excel .xlsx workbook ({type(exc).__name__})")]) from None
    try:
        sheet = next((ws for ws in workbook.worksheets if ws.title.strip().lower() == "tasks"),
                     workbook.worksheets[0])
        return _read_rows(fname, sheet, defaults)
    finally:
        workbook.close()


def load_rows(rows, chunk: str | None = None, timezone: str | None = None, origin: str = "request") -> list[TaskSpec]:
    """Validate tasks given as JSON objects (the REST API) exactly as sheet rows are validated.

    Field names are the sheet's column names and aliases; every problem is reported
    with the task's position, and nothing is returned unless every task is valid.
    """
    defaults = _defaults(origin, chunk, timezone)
    if not isinstance(rows, list) or not rows:
        raise SheetError([SheetProblem(origin, "'tasks' must be a non-empty list of objects")])
    problems: list[SheetProblem] = []

    def problem(message: str, row: int | None = None, column: str | None = None) -> None:
        problems.append(SheetProblem(origin, message, None, row, column))

    accept = _Acceptor(problem)
    for number, raw in enumerate(rows, start=1):
        if not isinstance(raw, dict):
            problem("each task must be an object", number)
            continue
        cells = {}
        for name, value in raw.items():
            field = ALIASES.get(re.sub(r"[\s_-]", "", str(name)).lower())
            if field is None:
                problem(f"unknown field (known: {', '.join(sorted(set(ALIASES.values())))})", number, str(name))
            elif isinstance(value, (dict, list, bool)):
                problem("expected text, a number or an ISO date-time", number, str(name))
            else:
                cells[field] = (0, _Value(value))
        if cells:
            accept(number, _row_spec(f"{origin}, task {number}", number, cells, {f: f for f in cells}, False,
                                     defaults, problem))
    if problems:
        raise SheetError(problems)
    return accept.specs


class _Value:
    """A JSON value dressed as a read-only cell, so API tasks pass the sheet's own checks."""

    data_type = "s"

    def __init__(self, value):
        self.value = value


class _Acceptor:
    """Collects valid rows: refuses duplicates and contradictory NVR caps, splits chunked rows."""

    def __init__(self, problem):
        self.problem = problem
        self.specs: list[TaskSpec] = []
        self.seen: dict[str, int] = {}
        self.caps: dict[str, tuple[int, int]] = {}

    def __call__(self, rownum: int, row: tuple[TaskSpec, timedelta | None] | None) -> None:
        if row is None:
            return
        spec, step = row
        if spec.key in self.seen:
            what = "id" if spec.key.startswith("id:") else "NVR, cameras and time range"
            self.problem(f"same {what} as row {self.seen[spec.key]}: each task must appear once", rownum)
            return
        self.seen[spec.key] = rownum
        if spec.max_parallel is not None:
            cap, first = self.caps.setdefault(spec.server, (spec.max_parallel, rownum))
            if cap != spec.max_parallel:
                self.problem(f"max_parallel {spec.max_parallel} for {spec.server} differs from {cap} on row"
                             f" {first}", rownum)
                return
        self.specs.extend(split(spec, step) if step else [spec])


def _defaults(origin: str, chunk: str | None, timezone: str | None) -> dict:
    defaults = {}
    try:
        if chunk:
            defaults["chunk"] = _chunk(chunk)
        if timezone:
            defaults["timezone"] = _zone(timezone)
    except ValueError as exc:
        raise SheetError([SheetProblem(origin, f"default setting: {exc}")]) from None
    return defaults


def _read_rows(fname: str, sheet, defaults: dict) -> list[TaskSpec]:
    problems: list[SheetProblem] = []

    def problem(message: str, row: int | None = None, column: str | None = None) -> None:
        problems.append(SheetProblem(fname, message, sheet.title, row, column))

    rows = enumerate(sheet.iter_rows(), start=1)
    first = next(rows, None)
    if first is None:
        raise SheetError([SheetProblem(fname, "the sheet is empty", sheet.title)])
    columns = _columns(first[0], first[1], problem)
    headerless = columns is None
    if headerless:  # the first row is data too
        columns = {i: HEADERLESS[i] for i in range(min(len(first[1]), len(HEADERLESS)))}
        rows = _chain([first], rows)
    elif any(field not in columns.values() for field in REQUIRED):
        raise SheetError(problems)  # rows cannot be checked without their required columns

    accept = _Acceptor(problem)
    where_of = {field: f"{_letter(i)} ({field})" for i, field in columns.items()}
    for rownum, cells in rows:
        values = {columns[i]: (i, cell) for i, cell in enumerate(cells) if i in columns}
        if all(_blank(cell.value) for _, cell in values.values()):
            continue
        accept(rownum, _row_spec(f"{fname}, sheet {sheet.title!r}, row {rownum}", rownum, values, where_of,
                                 headerless, defaults, problem))
    if not accept.specs and not problems:
        problem("no task rows below the header")
    if problems:
        raise SheetError(problems)
    return accept.specs


def _columns(rownum: int, header_row, problem) -> dict[int, str] | None:
    """Map column index to field from the header row; None if the row is not a header."""
    names = {}
    unknown = []
    for i, cell in enumerate(header_row):
        text = cell.value
        if _blank(text):
            continue
        key = re.sub(r"[\s_-]", "", str(text)).lower()
        if key in ALIASES:
            names[i] = ALIASES[key]
        elif not str(text).strip().startswith("#"):
            unknown.append((i, text))
    if not names:
        return None
    columns: dict[int, str] = {}
    for i, field in names.items():
        if field in columns.values():
            problem(f"two columns give {field!r}", rownum, _letter(i))
        columns[i] = field
    for i, text in unknown:
        problem(f"unknown column {str(text)!r} (known: {', '.join(sorted(set(ALIASES.values())))};"
                " start a header with # to keep a notes column)", rownum, _letter(i))
    for field in REQUIRED:
        if field not in columns.values():
            problem(f"missing column {field!r}", rownum)
    return columns


def _row_spec(source, rownum, cells, where_of, headerless, defaults,
              problem) -> tuple[TaskSpec, timedelta | None] | None:
    """Validate one row; report its problems and return None if it has any."""
    errors: list[tuple[str, str]] = []
    values = {}
    for field, (_, cell) in cells.items():
        where = where_of[field]
        if cell.data_type == "f" or (isinstance(cell.value, str) and cell.value.startswith("=")):
            errors.append((where, f"formula cells are not read ({cell.value}); paste the values instead"))
            continue
        try:
            values[field] = _PARSERS.get(field, _text)(cell.value)
        except ValueError as exc:
            errors.append((where, str(exc)))
    for field in REQUIRED if not headerless else ("server", "username", "password"):
        where = where_of.get(field, field)
        if values.get(field) is None and not any(w == where for w, _ in errors):
            errors.append((where, "empty; this column is required"))
    zone = values.get("timezone") or defaults.get("timezone")
    for field in ("starttime", "endtime"):
        moment = values.get(field)
        if moment is None or moment.tzinfo is None:
            continue
        if zone is not None:  # the sheet gives real offsets: convert to the NVR's local clock
            values[field] = moment.astimezone(zone).replace(tzinfo=None)
        elif moment.utcoffset().total_seconds() == 0:
            values[field] = moment.replace(tzinfo=None)  # "Z": NVR firmwares mark local time that way
        else:
            errors.append((where_of[field], f"{cells[field][1].value!r} has a time zone offset; add a timezone"
                           " column (the NVR's zone, e.g. Europe/Bucharest) or give the NVR's local time"))
            values[field] = None
    start, end = values.get("starttime"), values.get("endtime")
    step = values.get("chunk") or defaults.get("chunk")
    if step and (start is None or end is None):
        errors.append((where_of.get("chunk", "chunk"), "chunking needs a start and an end time"))
    if (start is None) != (end is None) and headerless:
        errors.append(("starttime/endtime", "give both start and end time, or neither"))
    if start is not None and end is not None and end <= start:
        errors.append((where_of["endtime"], f"end time {end:%Y-%m-%d %H:%M:%S} is not after start time {start:%Y-%m-%d %H:%M:%S}"))
    for column, message in errors:
        problem(message, rownum, column)
    if errors:
        return None
    cameras = values.get("cameras") or ()
    start_s = start.isoformat(timespec="seconds") if start else None
    end_s = end.isoformat(timespec="seconds") if end else None
    if values.get("id"):
        key = f"id:{values['id']}"
    else:
        identity = [values["server"], values["username"], sorted(cameras, key=int), start_s, end_s]
        key = "row:" + hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]
    spec = TaskSpec(
        key=key, server=values["server"], username=values["username"], password=values["password"],
        cameras=tuple(cameras), start=start_s, end=end_s, name=values.get("name") or "",
        priority=values.get("priority") or 0, source=source, group=key,
        max_parallel=values.get("max_parallel"),
    )
    return spec, step


def row_label(source: str) -> str:
    """A task's sheet row without its chunk part: "t.xlsx, sheet 'tasks', row 2"."""
    return re.sub(r" \(.*chunk \d+/\d+\)$", "", source)


def split(spec: TaskSpec, step: timedelta) -> list[TaskSpec]:
    """One task per camera per `step` of the row's range.

    Each recording belongs to the chunk in which it starts; the first chunk also
    takes a recording that began before the range but runs into it. So chunks
    never share a recording and never miss one, and together they hold exactly
    what the unsplit row would.
    """
    start, end = datetime.fromisoformat(spec.start), datetime.fromisoformat(spec.end)
    windows = []
    t = start
    while t < end:
        windows.append((t, min(t + step, end)))
        t += step
    parts = []
    for camera in spec.cameras or ("",):
        for k, (a, b) in enumerate(windows):
            label = f"cam {camera} " if camera else ""
            parts.append(replace(
                spec, key=f"{spec.key}/{camera or 'all'}/{a:%Y%m%dT%H%M%S}", cameras=(camera,) if camera else (),
                start=a.isoformat(timespec="seconds"), end=b.isoformat(timespec="seconds"),
                name=f"{spec.name or spec.server} {label}{a:%Y-%m-%d %H:%M}".strip(),
                source=f"{spec.source} ({label}chunk {k + 1}/{len(windows)})", takes_earlier=k == 0,
            ))
    return parts


# --- cell parsers: each returns the value or None for a blank cell, raises ValueError with a clear message ---
def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value) -> str | None:
    """Text cell; whole numbers are accepted (Excel stores a password 12345 as a number)."""
    if _blank(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (datetime, date)):
        raise ValueError(f"expected text, found a date ({value})")
    return str(value).strip()


def _server(value) -> str | None:
    text = _text(value)
    if text is None:
        return None
    m = SERVER.match(text)
    if not m or (m.group(4) and not 0 < int(m.group(4)) < 65536):
        raise ValueError(f"{text!r} is not host[:port] (e.g. 192.168.1.64 or nvr.example.com:8000)")
    scheme, host, port = m.group(1) or "http", m.group(2).lower(), m.group(4)
    address = f"{host}:{port}" if port else host
    return address if scheme == "http" else f"https://{address}"


def _cameras(value) -> tuple[str, ...] | None:
    text = _text(value)
    if text is None:
        return None
    parts = [p for p in re.split(r"[,;\s]+", text) if p]
    bad = [p for p in parts if not p.isdigit()]
    if bad:
        raise ValueError(f"camera {bad[0]!r} is not a channel number (e.g. 101,201; empty for all)")
    return tuple(dict.fromkeys(str(int(p)) for p in parts))


def _time(value) -> datetime | None:
    if _blank(value):
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)):
        raise ValueError(f"{value!r} is a number, not a date-time: format the cell as a date")
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            raise ValueError(f"{text!r} is not a date-time (use e.g. 2026-01-31 08:00)") from None
    return parsed.replace(microsecond=0)  # an offset, if any, is resolved with the row's time zone


def _priority(value) -> int | None:
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a whole number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a whole number") from None
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def _chunk(value) -> timedelta | None:
    if _blank(value):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", str(value).lower())
    if not m:
        raise ValueError(f"{value!r} is not a chunk length (e.g. 30m, 1h, 1d)")
    length = timedelta(seconds=float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])
    if length < timedelta(minutes=1):
        raise ValueError(f"chunk {value!r} is shorter than a minute")
    return length


def _positive(value) -> int | None:
    number = _priority(value)
    if number is not None and number < 1:
        raise ValueError(f"{value!r} must be 1 or more")
    return number


def _zone(value) -> ZoneInfo | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{text!r} is not a time zone name (e.g. Europe/Bucharest, UTC)") from None


_PARSERS = {"server": _server, "cameras": _cameras, "starttime": _time, "endtime": _time, "priority": _priority,
            "chunk": _chunk, "max_parallel": _positive, "timezone": _zone}


def _letter(index: int) -> str:
    return get_column_letter(index + 1)


def _chain(*iterables):
    for it in iterables:
        yield from it
