"""The Excel report: the outcome of a run, in the tool the work was defined in.

Four sheets: one row per sheet row (chunks rolled up), one per NVR, one per
task, and one per file a task left (the manifest: where each file is and its
SHA-256); a fifth when there are dry runs: what each would export, per camera.
Written in openpyxl's write-only mode, streaming the tasks and the files, so a
report of a million tasks needs no more memory than one of ten. No passwords:
it is built from the public task views.

It is made to be printed as well as filtered: every sheet prints landscape on
A4 (or Letter, `--paper letter`), one page wide (as many pages down as it
takes) with its header row on every page, and its columns are as wide as their
longest name (long texts wrap). In the Tasks sheet, Worker and the "last
attempt" columns describe the attempt that Attempts counts to; "First attempt
started" is before any requeue.

Every value in it comes from outside (sheet cells, worker reports, NVR error
texts), so every text cell is written as a plain string cell, never a formula,
whatever it starts with, and stripped of the characters a workbook cannot
hold; a figure is written as a number only when it is one.
"""
from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.page import PageMargins
from openpyxl.worksheet.properties import PageSetupProperties
from openpyxl.worksheet.worksheet import Worksheet

from .sheet import row_label, row_name
from .store import Store
from .store.reads import NOTHING_FOUND, row_state

EMPTY_STATE = f"done, {NOTHING_FOUND}"
STATE_FILL = {
    "done": "C6EFCE", "failed": "FFC7CE", "cancelled": "D9D9D9", "leased": "FFEB9C", "waiting": "FFEB9C",
    "in progress": "FFEB9C", "partly cancelled": "D9D9D9", EMPTY_STATE: "BDD7EE",
}
# (header, width in characters); None: as wide as the column's longest text, within WIDE.
TASK_COLUMNS = [("Task", 7), ("Sheet row", None), ("Name", None), ("NVR", None), ("Cameras", None), ("From", 20),
                ("To", 20), ("State", 12), ("Attempts", 9), ("Worker", None), ("Last attempt started (UTC)", 17),
                ("Finished (UTC)", 17), ("Last attempt took", 9), ("First attempt started (UTC)", 17), ("Files", 7),
                ("Bytes", 14), ("Last error", 30)]
ROW_COLUMNS = [("Sheet row", None), ("Name", None), ("NVR", None), ("Tasks", 7), ("Done", 7), ("Nothing found", 9),
               ("Failed", 7), ("Cancelled", 10), ("Other", 7), ("Files", 8), ("Bytes", 15), ("State", 12)]
NVR_COLUMNS = [("NVR", None), ("Tasks", 8), ("Done", 8), ("Nothing found", 9), ("Failed", 8), ("Cancelled", 10),
               ("Other", 8), ("Files", 8), ("Bytes", 15)]
DRY_COLUMNS = [("Sheet row", None), ("Name", None), ("NVR", None), ("Camera", 10), ("Recordings", 11),
               ("Bytes", 15), ("Tasks not listed", 10)]
NVR_TOTAL = "NVR total"  # the Dry run sheet's label for a line that adds up an NVR's rows
FILE_COLUMNS = [("Task", 7), ("NVR", None), ("Host", None), ("Path", None), ("Size", 13), ("SHA-256", 34),
                ("Camera", 8), ("Camera name", None), ("Start", 20), ("End", 20), ("Location", 40)]
# Fitted widths: (least, most) characters; a longer text wraps, so that it shows whole and the widest
# sheet still prints one page wide at a readable size.
WIDE = {"Sheet row": (12, 24), "Name": (8, 24), "NVR": (6, 20), "Cameras": (8, 12), "Worker": (8, 18),
        "Host": (6, 20), "Path": (8, 50), "Camera name": (8, 20)}
DATE = "yyyy-mm-dd hh:mm:ss"  # a range, as the sheet gave it
DATE_UTC = 'yyyy-mm-dd hh:mm "UTC"'  # a range given as UTC instants (timezone auto), as wide as DATE
MINUTE = "yyyy-mm-dd hh:mm"  # when an attempt ran (its duration has the seconds)
DURATION = "[h]:mm:ss"
BYTES = "#,##0"
PAPER = {"a4": Worksheet.PAPERSIZE_A4, "letter": Worksheet.PAPERSIZE_LETTER}
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")  # terminal colours and cursor moves in stderr
UNFIT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")  # not allowed in the XML
MAX_CELL = 32767  # Excel's limit on the characters in one cell
FILES_PAGE = 1000  # manifest rows read at a time
WRAP = Alignment(wrap_text=True, vertical="top")
TOP = Alignment(vertical="top")


def export(store: Store, path: str | Path, paper: str = "a4") -> Path:
    """Write the report to `path` atomically (a temporary name, then a rename)."""
    path = Path(path)
    part = path.with_name(f".{path.name}.part")
    try:
        with open(part, "wb") as out:
            write_report(store, out, paper)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def write_report(store: Store, out: BinaryIO, paper: str = "a4") -> None:
    """Write the whole report as .xlsx to a binary stream, set up to print on `paper` (a4 or letter)."""
    workbook = Workbook(write_only=True)
    size = PAPER[paper]
    longest = store.text_widths()
    task_sheet = _sheet(workbook, "Tasks", TASK_COLUMNS, {
        "Sheet row": longest["source"], "Name": longest["name"], "NVR": longest["server"],
        "Cameras": longest["cameras"], "Worker": longest["worker"]}, size)
    groups: dict[str, dict] = {}
    nvrs: dict[str, dict] = {}
    dry = DryRuns()
    count = 0
    for task in store.all_tasks():
        count += 1
        task_sheet.append(_task_row(task_sheet, task))
        row = groups.setdefault(task["group"], {
            "source": row_label(task["source"]), "name": row_name(task["name"], task["source"], task["server"]),
            "nvr": task["server"], **_zero()})
        nvr = nvrs.setdefault(task["server"], _zero())
        result = _result(task)
        if task["mode"] == "list":
            dry.add(task, row, result)
        for totals in (row, nvr):
            totals["tasks"] += 1
            totals["files"] += _number(result.get("files")) or 0
            totals["bytes"] += _number(result.get("bytes")) or 0
            totals["nothing_found"] += task["nothing_found"]
            totals["active" if task["state"] in ("queued", "leased", "waiting") else task["state"]] += 1
    rows_sheet = _sheet(workbook, "Rows", ROW_COLUMNS, {
        "Sheet row": max((len(r["source"]) for r in groups.values()), default=0),
        "Name": max((len(r["name"]) for r in groups.values()), default=0),
        "NVR": max((len(r["nvr"]) for r in groups.values()), default=0)}, size, index=0)
    for row in groups.values():
        rows_sheet.append([_text(rows_sheet, row["source"], WRAP), _text(rows_sheet, row["name"], WRAP),
                           _text(rows_sheet, row["nvr"]), *_figures(row), _state_cell(rows_sheet, row_state(row))])
    nvr_sheet = _sheet(workbook, "NVRs", NVR_COLUMNS, {"NVR": max(map(len, nvrs), default=0)}, size, index=1)
    for server in sorted(nvrs):
        nvr_sheet.append([_text(nvr_sheet, server), *_figures(nvrs[server])])
    file_sheet = _sheet(workbook, "Files", FILE_COLUMNS, {
        "NVR": longest["server"], "Host": longest["file_host"], "Path": longest["file_path"],
        "Camera name": longest["file_camera_name"]}, size)
    files = _write_files(store, file_sheet)
    sheets = [(rows_sheet, ROW_COLUMNS, len(groups)), (nvr_sheet, NVR_COLUMNS, len(nvrs)),
              (task_sheet, TASK_COLUMNS, count), (file_sheet, FILE_COLUMNS, files)]
    if dry.rows:
        sheets.append(dry.write(workbook, size))
    for sheet, columns, rows in sheets:
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{rows + 1}"
    workbook.save(out)


class DryRuns:
    """The Dry run sheet: what each dry-run row would export, per camera, and each NVR's total.

    Only written when the store holds dry runs. Chunks of a row add up; a task not listed
    yet (queued, running, failed) is counted apart, so that a partial figure says so.
    """

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}  # group -> the row's label, name, NVR, cameras and unlisted tasks
        self.nvrs: dict[str, list[int]] = {}  # NVR -> [recordings, bytes, tasks not listed]

    def add(self, task: dict, row: dict, result: dict) -> None:
        entry = self.rows.setdefault(task["group"], {"source": row["source"], "name": row["name"],
                                                     "nvr": task["server"], "cameras": {}, "unlisted": 0})
        nvr = self.nvrs.setdefault(task["server"], [0, 0, 0])
        listing = result.get("listing") if task["state"] == "done" else None
        if not isinstance(listing, dict) or not isinstance(listing.get("cameras"), dict):
            entry["unlisted"] += 1
            nvr[2] += 1
            return
        for camera, figures in listing["cameras"].items():
            if not isinstance(figures, dict):
                continue
            sums = entry["cameras"].setdefault(str(camera), [0, 0])
            for i, key in enumerate(("recordings", "bytes")):
                value = _number(figures.get(key)) or 0
                sums[i] += value
                nvr[i] += value

    def write(self, workbook: Workbook, paper: int) -> tuple:
        sheet = _sheet(workbook, "Dry run", DRY_COLUMNS, {
            "Sheet row": max([len(NVR_TOTAL), *(len(r["source"]) for r in self.rows.values())]),
            "Name": max((len(r["name"]) for r in self.rows.values()), default=0),
            "NVR": max(map(len, self.nvrs), default=0)}, paper)
        count = 0
        for row in self.rows.values():
            cameras = sorted(row["cameras"].items(), key=lambda item: _camera_order(item[0])) or [("", [None, None])]
            for i, (camera, (recordings, size)) in enumerate(cameras):
                sheet.append([_text(sheet, row["source"], WRAP), _text(sheet, row["name"], WRAP),
                              _text(sheet, row["nvr"]), _text(sheet, camera), recordings, _cell(sheet, size, BYTES),
                              row["unlisted"] if i == 0 else None])
                count += 1
        for server in sorted(self.nvrs):
            recordings, size, unlisted = self.nvrs[server]
            total = [_text(sheet, NVR_TOTAL), None, _text(sheet, server), _text(sheet, "all"), recordings,
                     _cell(sheet, size, BYTES), unlisted]
            for cell in (total[0], total[2], total[3]):
                cell.font = Font(bold=True)
            sheet.append(total)
            count += 1
        return sheet, DRY_COLUMNS, count


def _camera_order(camera: str) -> tuple:
    """Track ids in numeric order (101 before 1001), anything else after them as text."""
    return (0, int(camera), "") if camera.isascii() and camera.isdigit() else (1, 0, camera)


def _zero() -> dict:
    return {"tasks": 0, "done": 0, "nothing_found": 0, "failed": 0, "cancelled": 0, "active": 0, "files": 0,
            "bytes": 0}


def _figures(totals: dict) -> list:
    """Tasks, done, nothing found, failed, cancelled, other (queued or running), files, bytes."""
    return [totals["tasks"], totals["done"], totals["nothing_found"], totals["failed"], totals["cancelled"],
            totals["active"], totals["files"], totals["bytes"]]


def _write_files(store: Store, sheet) -> int:
    """The manifest, a page at a time: which host holds each file, where, its checksum, and where it was uploaded."""
    count, after = 0, 0
    while page := store.files(after=after, limit=FILES_PAGE):
        for f in page:
            sheet.append([f["task_id"], _text(sheet, f["server"]), _text(sheet, f["host"]),
                          _text(sheet, f["path"], WRAP), _number(f["size"]), _text(sheet, f["sha256"], WRAP),
                          _text(sheet, f["camera"]), _text(sheet, f["camera_name"]), *_range_cells(sheet, f),
                          _text(sheet, f["location"], WRAP)])
            count += 1
        after = page[-1]["id"]
    return count


def _sheet(workbook: Workbook, title: str, columns: list[tuple[str, int | None]], longest: dict[str, int],
           paper: int, index: int | None = None):
    """A sheet with its header, column widths and print setup (all of which must come before its rows)."""
    sheet = workbook.create_sheet(title, index)
    for i, (name, width) in enumerate(columns, start=1):
        if width is None:
            least, most = WIDE[name]
            width = min(most, max(least, len(name) + 2, longest.get(name, 0) + 2))
        sheet.column_dimensions[get_column_letter(i)].width = width
    sheet.freeze_panes = "A2"
    _print_setup(sheet, paper)
    header = []
    for name, _ in columns:
        cell = WriteOnlyCell(sheet, value=name)
        cell.font = Font(bold=True)
        cell.alignment = WRAP
        header.append(cell)
    sheet.append(header)
    return sheet


def _print_setup(sheet, paper: int) -> None:
    """Landscape A4 (or Letter), one page wide however many pages down, the header row on every page."""
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.paperSize = paper
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    sheet.page_margins = PageMargins(left=0.4, right=0.4, top=0.5, bottom=0.5, header=0.2, footer=0.2)
    sheet.print_options.gridLines = True
    sheet.print_title_rows = "1:1"
    sheet.oddFooter.center.text = "&A, page &P of &N"


def _task_row(sheet, task: dict) -> list:
    result = _result(task)
    last = task.get("last_attempt") or {}
    started, ended = last.get("started"), last.get("ended")
    duration = timedelta(seconds=round(ended - started)) if started is not None and ended is not None else None
    state = EMPTY_STATE if task["nothing_found"] else task["state"]
    return [task["id"], _text(sheet, task["source"], WRAP), _text(sheet, task["name"], WRAP),
            _text(sheet, task["server"]), _text(sheet, ",".join(task["cameras"]) or "all", WRAP),
            *_range_cells(sheet, task), _state_cell(sheet, state), task["attempts"], _text(sheet, task["worker"]),
            _cell(sheet, _when(started), MINUTE), _cell(sheet, _when(task["finished"]), MINUTE),
            _cell(sheet, duration, DURATION), _cell(sheet, _when(task["started"]), MINUTE),
            _number(result.get("files")), _number(result.get("bytes")), _text(sheet, task["last_error"], WRAP)]


def _range_cells(sheet, item: dict) -> list:
    """From and To as date cells: NVR-local times as they are, UTC instants (timezone auto) marked UTC."""
    cells = []
    for value in (item["start"], item["end"]):
        moment = _parse(value)
        if moment is None:
            cells.append(_text(sheet, value))  # not a time a workbook can hold as one: shown as written
        elif moment.tzinfo is not None:
            cells.append(_cell(sheet, moment.astimezone(UTC).replace(tzinfo=None), DATE_UTC))
        else:
            cells.append(_cell(sheet, moment, DATE))
    return cells


def _parse(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if 1900 <= moment.year <= 9999 else None


def _result(task: dict) -> dict:
    """A task's result as reported; anything but an object counts as none."""
    return task["result"] if isinstance(task["result"], dict) else {}


def _number(value) -> int | float | None:
    """A figure for a number cell, or None when the value is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def inert(value) -> str:
    """Text a workbook holds as it is: terminal escapes and characters XML cannot carry removed, length capped."""
    text = ANSI.sub("", str(value))
    return UNFIT.sub("", text)[:MAX_CELL]


def _text(sheet, value, alignment: Alignment = TOP) -> WriteOnlyCell | None:
    """A string cell, never a formula: `=1+1` is shown as the text =1+1."""
    if value is None:
        return None
    cell = WriteOnlyCell(sheet, value=inert(value))
    cell.data_type = "s"
    cell.alignment = alignment
    return cell


def _state_cell(sheet, state: str) -> WriteOnlyCell:
    cell = _text(sheet, state, WRAP)
    if state in STATE_FILL:
        cell.fill = PatternFill("solid", start_color=STATE_FILL[state], end_color=STATE_FILL[state])
    return cell


def _cell(sheet, value, number_format: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=value)
    cell.number_format = number_format
    cell.alignment = TOP
    return cell


def _when(timestamp: float | None) -> datetime | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None, microsecond=0)
