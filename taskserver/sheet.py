"""Task sheets: `tasks.xlsx` or `tasks.csv` rows in, validated task specs out.

The whole sheet is read and checked before anything is queued, and every
problem is reported with file, sheet, row and column, so a bad sheet never
leaves half an import behind. Tasks posted to the API go through the same
checks. How many tasks one sheet or request may make is counted before any row
is expanded into its chunks, so a few bytes cannot ask for millions of tasks.
"""
from __future__ import annotations

import hashlib
import json
import math
import operator
import pickle
import re
import tempfile
import time
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from openpyxl.utils import get_column_letter

from . import cells as parse
from .cells import AUTO, Cell
from .errors import SheetError, SheetProblem
from .sheetfiles import open_table
from .store.base import ImportResult, Schedule, TaskSpec
from .windows import RELATIVE, local_zone, relative_window

MAX_IMPORT_TASKS = 1_000_000  # tasks one sheet import may add (after chunking)
MAX_REQUEST_TASKS = 10_000  # tasks one POST /api/tasks may add (after chunking)
MAX_PROBLEMS = 1000  # a sheet with more problems stops being read: the first ones tell what is wrong

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
    "tlsfingerprint": "tls_fingerprint", "fingerprint": "tls_fingerprint", "sha256": "tls_fingerprint",
    "schedule": "schedule", "repeat": "schedule",
    "window": "window", "content": "content", "recordtype": "record_type", "recordtypes": "record_type",
}
FOOTAGE = ("window", "content", "record_type")  # what a row asks of its export, carried in the task's options
REQUIRED = ("server", "username", "password", "starttime", "endtime")
TIMES = ("starttime", "endtime")  # not required of a sheet whose rows all run on a schedule


class Imported(list):
    """A sheet's tasks, and its scheduled rows in `schedules` (they become tasks run after run)."""

    def __init__(self, tasks=(), schedules: list[Schedule] | None = None):
        super().__init__(tasks)
        self.schedules = schedules or []

    def into(self, store) -> ImportResult:
        """Add the tasks and the schedules to a store; one result counting both (a spooled sheet's too)."""
        result = store.add(self) if self else ImportResult()
        if self.schedules:
            scheduled = store.add_schedules(self.schedules)
            result.added += scheduled.added
            result.existing += scheduled.existing
            result.updated += scheduled.updated
        return result
def as_dry_run(spec: TaskSpec) -> TaskSpec:
    """The same row as a dry run (list, download nothing): its own key, so the real export can be added afterwards."""
    return replace(spec, key=f"list:{spec.key}", group=f"list:{spec.group or spec.key}", mode="list",
                   name=f"dry run: {spec.name}" if spec.name else "dry run")


class Spooled(Imported):
    """A big sheet's tasks, spooled to a temporary file in batches as the rows are checked.

    A million rows checked and queued in memory would take gigabytes; spooled, the
    import holds one batch at a time, and the store still adds them all in one
    transaction once every row has passed (all or nothing). Reading it gives the
    tasks in sheet order, as often as needed; `convert` changes each on the way out.
    """

    BATCH = 10_000

    def __init__(self):
        super().__init__()
        self._file = tempfile.TemporaryFile(prefix="taskserver-import-")
        self._batch: list[TaskSpec] = []
        self._count = 0
        self.convert = None

    def append(self, spec: TaskSpec) -> None:
        self._batch.append(spec)
        self._count += 1
        if len(self._batch) >= self.BATCH:
            self._spill()

    def extend(self, specs) -> None:
        for spec in specs:
            self.append(spec)

    def _spill(self) -> None:
        # Our own values, read back here; as plain tuples, pickled in half the time of the objects.
        pickle.dump([_spec_fields(spec) for spec in self._batch], self._file, protocol=pickle.HIGHEST_PROTOCOL)
        self._batch = []

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self):
        if self._batch:
            self._spill()
        self._file.seek(0)
        while True:
            try:
                batch = [TaskSpec(*values) for values in pickle.load(self._file)]
            except EOFError:
                return
            yield from (map(self.convert, batch) if self.convert else batch)

    def close(self) -> None:
        self._file.close()


_spec_fields = operator.attrgetter(*(field.name for field in fields(TaskSpec)))

# The header-less layout of sheets made for the original blog-post task server.
HEADERLESS = ("username", "password", "server", "cameras", "starttime", "endtime")


def load_sheet(path: str | Path, chunk: str | None = None, timezone: str | None = None,
               now: float | None = None) -> Imported:
    """Read and validate a task sheet (.xlsx or .csv); raise SheetError listing every problem found.

    `chunk` ("1h") splits every row per camera and per that much time unless the row
    has its own `chunk`; `timezone` is the NVRs' zone unless a row names its own;
    `now` is the moment relative times ("yesterday") and schedules count from.
    """
    path = Path(path)
    defaults = _defaults(path.name, chunk, timezone, now)
    with open_table(path) as table:
        return _read_rows(path.name, table, defaults, Imported())


def spool_sheet(path: str | Path, chunk: str | None = None, timezone: str | None = None,
                now: float | None = None) -> Spooled:
    """`load_sheet` for sheets of any size: the checked tasks wait in a temporary file, not in memory."""
    path = Path(path)
    defaults = _defaults(path.name, chunk, timezone, now)
    spooled = Spooled()
    try:
        with open_table(path) as table:
            return _read_rows(path.name, table, defaults, spooled)
    except BaseException:
        spooled.close()
        raise


def load_rows(rows, chunk=None, timezone=None, origin: str = "request",
              max_tasks: int = MAX_REQUEST_TASKS, now: float | None = None) -> Imported:
    """Validate tasks given as JSON objects (the REST API) exactly as sheet rows are validated.

    Field names are the sheet's column names and aliases; every value must be text,
    a number or null. Every problem is reported with the task's position, and
    nothing is returned unless every task is valid. Any JSON at all gives either
    task specs or a SheetError.
    """
    defaults = _defaults(origin, chunk, timezone, now)
    if not isinstance(rows, list) or not rows:
        raise SheetError([SheetProblem(origin, "'tasks' must be a non-empty list of objects")])
    if len(rows) > max_tasks:
        raise SheetError([SheetProblem(origin, f"{len(rows):,} tasks; one request adds at most {max_tasks:,}")])
    problem = _Problems(origin, None)
    accept = _Acceptor(problem, max_tasks, "request")
    for number, raw in enumerate(rows, start=1):
        if not isinstance(raw, dict) or not raw:
            problem("each task must be an object" if not isinstance(raw, dict) else "an empty task: give at least"
                    " server, username and password", number)
            continue
        fields: dict = {}
        for name, value in raw.items():
            field = ALIASES.get(_header_key(name))
            if field is None:
                problem(f"unknown field (known: {', '.join(sorted(set(ALIASES.values())))})", number, _label(name))
            elif field in fields:
                problem(f"two fields give {field!r}", number, _label(name))
            elif isinstance(value, bool) or not isinstance(value, (str, int, float, type(None))):
                problem("expected text, a number or an ISO date-time", number, _label(name))
            else:
                fields[field] = (0, Cell(value))
        if fields:  # else every field was reported
            accept(number, _row_spec(f"{origin}, task {number}", number, fields, {f: f for f in fields}, False,
                                     defaults, problem))
    if problem.found:
        raise SheetError(problem.found)
    return Imported(accept.specs, accept.schedules)


class _Problems:
    """Collects a sheet's problems, each with where it is; gives up after MAX_PROBLEMS."""

    def __init__(self, file: str, sheet: str | None):
        self.file, self.sheet = file, sheet
        self.found: list[SheetProblem] = []

    def __call__(self, message: str, row: int | None = None, column: str | None = None) -> None:
        self.found.append(SheetProblem(self.file, message, self.sheet, row, column))
        if len(self.found) >= MAX_PROBLEMS:
            self.found.append(SheetProblem(self.file, f"stopped reading after {MAX_PROBLEMS} problems", self.sheet))
            raise SheetError(self.found)


class _Acceptor:
    """Collects valid rows: refuses duplicates and contradictory NVR caps, counts and splits chunked rows."""

    def __init__(self, problem: _Problems, max_tasks: int, what: str, into: list | None = None):
        self.problem, self.max_tasks, self.what = problem, max_tasks, what
        self.specs: list[TaskSpec] = [] if into is None else into
        self.schedules: list[Schedule] = []
        self.seen: dict[bytes, int] = {}  # a digest of each task key: a million keys in tens of MB, not hundreds
        self.caps: dict[str, tuple[int, int]] = {}
        self.passwords: dict[tuple[str, str], tuple[str, int]] = {}
        self.total = 0

    def __call__(self, rownum: int, row: tuple[TaskSpec, timedelta | None, Schedule | None] | None) -> None:
        if row is None:
            return
        spec, step, schedule = row
        digest = hashlib.blake2b(spec.key.encode(), digest_size=16).digest()
        if digest in self.seen:
            what = "id" if spec.key.startswith("id:") else "NVR, cameras and time range"
            self.problem(f"same {what} as row {self.seen[digest]}: each task must appear once", rownum)
            return
        self.seen[digest] = rownum
        if spec.max_parallel is not None:
            cap, first = self.caps.setdefault(spec.server, (spec.max_parallel, rownum))
            if cap != spec.max_parallel:
                self.problem(f"max_parallel {spec.max_parallel} for {spec.server} differs from {cap} on row"
                             f" {first}", rownum)
                return
        password, first = self.passwords.setdefault((spec.server, spec.username), (spec.password, rownum))
        if password != spec.password:  # never shown: say only where they differ
            self.problem(f"the password of user {spec.username!r} on {spec.server} differs from the one on row"
                         f" {first}: an NVR user has one password", rownum)
            return
        if schedule is not None:
            self.schedules.append(schedule)
            return
        cameras = max(1, len(spec.cameras))
        chunks = math.ceil(spec.span / step.total_seconds()) if step else 1
        count = cameras * chunks
        self.total += count
        if self.total > self.max_tasks:
            if self.total - count <= self.max_tasks:  # report the row that crosses the limit, once
                above = f", {self.total:,} with the rows above" if self.total > count else ""
                self.problem(f"this row makes {count:,} tasks ({cameras} camera(s) x {chunks:,} chunk(s) of {step})"
                             f"{above}; one {self.what} may add at most {self.max_tasks:,}: use a longer chunk, or"
                             " split the work", rownum)
            return
        self.specs.extend(split(spec, step) if step else [spec])


def _defaults(origin: str, chunk, timezone, now: float | None) -> dict:
    defaults: dict = {"now": time.time() if now is None else now}
    try:
        if chunk:
            defaults["chunk"] = parse.parse("chunk", Cell(chunk))
        if timezone:
            defaults["timezone"] = parse.parse("timezone", Cell(timezone))
    except ValueError as exc:
        raise SheetError([SheetProblem(origin, f"default setting: {exc}")]) from None
    return defaults


def _read_rows(fname: str, table, defaults: dict, into: Imported) -> Imported:
    problem = _Problems(fname, table.title)
    first = table.first_row()
    if first is None:
        raise SheetError([SheetProblem(fname, "the sheet is empty", table.title)])
    columns = _columns(1, first, problem)
    headerless = columns is None
    if headerless:  # the first row is data too
        columns = dict(enumerate(HEADERLESS))
    elif any(field not in columns.values() for field in _required(columns.values())):
        raise SheetError(problem.found)  # rows cannot be checked without their required columns

    accept = _Acceptor(problem, MAX_IMPORT_TASKS, "sheet", into)
    where_of = {field: f"{_letter(i)} ({field})" for i, field in columns.items()}
    source = f"{fname}, sheet {table.title!r}" if table.title is not None else fname
    for rownum, cells in table.rows(1 if headerless else 2, max(columns) + 1):
        values = {columns[i]: (i, cell) for i, cell in enumerate(cells) if i in columns}
        if all(parse.blank(cell.value) for _, cell in values.values()):
            continue
        accept(rownum, _row_spec(f"{source}, row {rownum}", rownum, values, where_of, headerless, defaults, problem))
    if not accept.specs and not accept.schedules and not problem.found:
        problem("no task rows below the header")
    if problem.found:
        raise SheetError(problem.found)
    into.schedules = accept.schedules
    return into


def _required(fields) -> tuple[str, ...]:
    """The columns a sheet must have: times may be left out when every row runs on a schedule."""
    fields = set(fields)
    return tuple(f for f in REQUIRED if f not in TIMES or "schedule" not in fields)


def _header_key(name) -> str:
    return re.sub(r"[\s_-]", "", str(name)[:100]).lower()


def _letter(index: int) -> str:
    return get_column_letter(index + 1)


def _label(name) -> str:
    """A header or field name as it may appear in a message: one short line."""
    text = parse.CONTROL.sub("?", str(name))
    return text if len(text) <= 40 else text[:37] + "..."


def _columns(rownum: int, header_row, problem) -> dict[int, str] | None:
    """Map column index to field from the header row; None if the row is not a header."""
    names = {}
    unknown = []
    for i, cell in enumerate(header_row):
        text = cell.value
        if parse.blank(text):
            continue
        key = _header_key(text)
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
        problem(f"unknown column {_label(text)!r} (known: {', '.join(sorted(set(ALIASES.values())))};"
                " start a header with # to keep a notes column)", rownum, _letter(i))
    for field in _required(columns.values()):
        if field not in columns.values():
            problem(f"missing column {field!r}", rownum)
    return columns


def _row_spec(source, rownum, cells, where_of, headerless, defaults,
              problem) -> tuple[TaskSpec, timedelta | None, Schedule | None] | None:
    """Validate one row; report its problems and return None if it has any."""
    errors: list[tuple[str, str]] = []
    values = {}
    relative = _relative_start(cells)
    for field, (_, cell) in cells.items():
        if field == "starttime" and relative:
            continue  # "yesterday", "last 6h": resolved below, with the row's zone
        try:
            values[field] = parse.parse(field, cell)
        except ValueError as exc:
            errors.append((where_of[field], str(exc)))
    cadence = values.get("schedule")
    for field in REQUIRED if not headerless else ("server", "username", "password"):
        where = where_of.get(field, field)
        optional = (field == "starttime" and (relative or cadence)) or (field == "endtime" and (relative or cadence))
        if values.get(field) is None and not optional and not any(w == where for w, _ in errors):
            errors.append((where, "empty; this column is required"))
    zone = values.get("timezone") or defaults.get("timezone")
    aware = _resolve_offsets(values, cells, where_of, zone, errors)
    if relative:
        _resolve_relative(relative, values, where_of, zone, defaults["now"], cadence is not None, errors)
    if cadence is not None and values.get("endtime") is not None:
        errors.append((where_of["endtime"], "a row on a schedule has no end time: each run exports the periods that"
                       " ended since the last one"))
    if cadence is not None and (aware or zone == AUTO):
        errors.append((where_of.get("timezone", "timezone"), "a row on a schedule needs the NVR's zone by name"
                       " (e.g. Europe/Bucharest), or none for this coordinator's own zone, not auto"))
    start, end = values.get("starttime"), values.get("endtime")
    step = values.get("chunk") or defaults.get("chunk")
    if step and cadence is None and (start is None or end is None):
        errors.append((where_of.get("chunk", "chunk"), "chunking needs a start and an end time"))
    if (start is None) != (end is None) and headerless:
        errors.append(("starttime/endtime", "give both start and end time, or neither"))
    if start is not None and end is not None and end <= start:
        errors.append((where_of["endtime"], f"end time {end:%Y-%m-%d %H:%M:%S} is not after start time"
                       f" {start:%Y-%m-%d %H:%M:%S}"))
    if values.get("tls_fingerprint") and values.get("server") and not values["server"].startswith("https://"):
        errors.append((where_of["tls_fingerprint"], f"a certificate fingerprint needs an https:// server, not"
                       f" {values['server']!r}"))
    for column, message in errors:
        problem(message, rownum, column)
    if errors:
        return None
    cameras = values.get("cameras") or ()
    start_s = start.isoformat(timespec="seconds") if start else None
    end_s = end.isoformat(timespec="seconds") if end else None
    footage = tuple((f, values[f]) for f in FOOTAGE if values.get(f))
    if values.get("id"):
        key = f"id:{values['id']}"
    else:  # rows that use neither new column keep the key they always had
        identity = [values["server"], values["username"], sorted(cameras, key=int), start_s, end_s]
        if cadence is not None:  # the same row imported on another day is the same schedule
            identity = [*identity[:3], relative or start_s, cadence.text]
        if footage:  # the same footage asked differently is another task
            identity.append(dict(footage))
        key = "row:" + hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]
    # The layout's {row} and {nvr_label}: chunks and scheduled runs carry names of their own.
    context = (("row", str(rownum)),) + ((("label", values["name"]),) if values.get("name") and (step or cadence) else ())
    spec = TaskSpec(
        key=key, server=values["server"], username=values["username"], password=values["password"],
        cameras=tuple(cameras), start=start_s, end=end_s, name=values.get("name") or "",
        priority=values.get("priority") or 0, source=source, group=key,
        max_parallel=values.get("max_parallel"), timezone=AUTO if aware else None,
        tls_fingerprint=values.get("tls_fingerprint"), options=footage + context,
    )
    if cadence is None:
        return spec, step, None
    from .schedule import make_schedule

    return spec, step, make_schedule(spec, cadence.text, getattr(zone, "key", None), step, defaults["now"])


def _relative_start(cells: dict) -> str | None:
    """The starttime cell's text when it is relative ("yesterday", "today", "last 6h"), else None."""
    cell = cells.get("starttime", (0, None))[1]
    value = getattr(cell, "value", None)
    return value.strip() if isinstance(value, str) and RELATIVE.match(value) else None


def _resolve_relative(text: str, values: dict, where_of: dict, zone, now: float, scheduled: bool,
                      errors: list) -> None:
    """A relative start becomes the window it means now, in the NVR's zone (a schedule's: its first window)."""
    where = where_of.get("starttime", "starttime")
    if zone == AUTO:
        errors.append((where, f"{text!r} needs the NVR's zone by name (timezone column or --timezone, e.g."
                       " Europe/Bucharest), not auto: the coordinator works out the window before any worker"
                       " asks the NVR"))
        return
    try:
        start, end = relative_window(text, now, zone or local_zone())
    except ValueError as exc:
        errors.append((where, str(exc)))
        return
    values["starttime"] = start
    if scheduled:
        return
    if values.get("endtime") is not None:
        errors.append((where_of["endtime"], f"leave the end time empty: {text!r} says where the window ends"))
        return
    values["endtime"] = end


def _resolve_offsets(values: dict, cells: dict, where_of: dict, zone, errors: list) -> bool:
    """Turn times written with an offset into what the task carries; True if they stay aware (zone auto).

    With a known zone they become the NVR's local clock; with `auto` they are kept
    as UTC instants, for the worker to convert with the zone the NVR reports.
    Without a zone, "Z" is the firmware convention for NVR-local time.
    """
    aware = []
    for field in ("starttime", "endtime"):
        moment = values.get(field)
        if moment is None or moment.tzinfo is None:
            continue
        if zone == AUTO:
            values[field] = moment.astimezone(UTC)
            aware.append(field)
        elif zone is not None:  # the sheet gives real offsets: convert to the NVR's local clock
            values[field] = moment.astimezone(zone).replace(tzinfo=None)
        elif moment.utcoffset().total_seconds() == 0:
            values[field] = moment.replace(tzinfo=None)  # "Z": NVR firmwares mark local time that way
        else:
            errors.append((where_of[field], f"{parse.shown(cells[field][1].value)} has a time zone offset; add a"
                           " timezone column (the NVR's zone, e.g. Europe/Bucharest, or auto) or give the NVR's"
                           " local time"))
            values[field] = None
    if len(aware) == 1 and values.get("starttime") is not None and values.get("endtime") is not None:
        other = "endtime" if aware[0] == "starttime" else "starttime"
        errors.append((where_of[other], "with timezone auto, write both times with an offset (e.g. 2026-01-10T06:00Z)"
                       " or both without"))
        values[other] = None
    return bool(aware)


def row_label(source: str) -> str:
    """A task's sheet row without its chunk part: "t.xlsx, sheet 'tasks', row 2"."""
    return re.sub(r" \(.*chunk \d+/\d+\)$", "", source)


def row_name(name: str, source: str, server: str) -> str:
    """A sheet row's own name from one of its tasks: a chunk's name without what `split` added."""
    if row_label(source) == source:
        return name
    base = re.sub(r"( cam \d+)? \d{4}-\d\d-\d\d \d\d:\d\d( UTC)?$", "", name)
    return "" if base == server else base


def split(spec: TaskSpec, step: timedelta) -> list[TaskSpec]:
    """One task per camera per `step` of the row's range.

    Each recording belongs to the chunk in which it starts; the first chunk also
    takes a recording that began before the range but runs into it. So chunks
    never share a recording and never miss one, and together they hold exactly
    what the unsplit row would.
    """
    start, end = datetime.fromisoformat(spec.start), datetime.fromisoformat(spec.end)
    utc = " UTC" if start.tzinfo else ""  # a row in timezone auto: chunk boundaries are UTC instants
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
                spec, key=f"{spec.key}/{camera or 'all'}/{a:%Y%m%dT%H%M%S}{'Z' if utc else ''}",
                cameras=(camera,) if camera else (),
                start=a.isoformat(timespec="seconds"), end=b.isoformat(timespec="seconds"),
                name=f"{spec.name or spec.server} {label}{a:%Y-%m-%d %H:%M}{utc}".strip(),
                source=f"{spec.source} ({label}chunk {k + 1}/{len(windows)})", takes_earlier=k == 0,
            ))
    return parts


