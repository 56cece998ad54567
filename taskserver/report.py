"""The Excel report: the outcome of a run, in the tool the work was defined in.

Three sheets: one row per sheet row (chunks rolled up), one per NVR, and one
per task. Written in openpyxl's write-only mode, streaming the tasks, so a
report of a million tasks needs no more memory than one of ten. No passwords:
it is built from the public task views.

Every value in it comes from outside (sheet cells, worker reports, NVR error
texts), so every text cell is written as a plain string cell, never a formula,
whatever it starts with, and stripped of the characters a workbook cannot
hold; a figure is written as a number only when it is one.
"""
from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter

from .sheet import row_label
from .store import Store

STATE_FILL = {
    "done": "C6EFCE", "failed": "FFC7CE", "cancelled": "D9D9D9", "leased": "FFEB9C", "waiting": "FFEB9C",
}
TASK_COLUMNS = [("Task", 8), ("Sheet row", 40), ("Name", 28), ("NVR", 20), ("Cameras", 10), ("From", 19),
                ("To", 19), ("State", 10), ("Attempts", 9), ("Worker", 22), ("Started (UTC)", 19),
                ("Finished (UTC)", 19), ("Duration s", 11), ("Files", 8), ("Bytes", 14), ("Last error", 60)]
ROW_COLUMNS = [("Sheet row", 40), ("NVR", 20), ("Tasks", 8), ("Done", 8), ("Failed", 8), ("Other", 8),
               ("Files", 8), ("Bytes", 14), ("State", 12)]
NVR_COLUMNS = [("NVR", 20), ("Tasks", 8), ("Done", 8), ("Failed", 8), ("Cancelled", 10), ("Other", 8),
               ("Files", 8), ("Bytes", 14)]
DATE = "yyyy-mm-dd hh:mm:ss"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")  # terminal colours and cursor moves in stderr
UNFIT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")  # not allowed in the XML
MAX_CELL = 32767  # Excel's limit on the characters in one cell


def export(store: Store, path: str | Path) -> Path:
    """Write the report to `path` atomically (a temporary name, then a rename)."""
    path = Path(path)
    part = path.with_name(f".{path.name}.part")
    try:
        with open(part, "wb") as out:
            write_report(store, out)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def write_report(store: Store, out: BinaryIO) -> None:
    """Write the whole report as .xlsx to a binary stream."""
    workbook = Workbook(write_only=True)
    rows_sheet = _sheet(workbook, "Rows", ROW_COLUMNS)
    nvr_sheet = _sheet(workbook, "NVRs", NVR_COLUMNS)
    task_sheet = _sheet(workbook, "Tasks", TASK_COLUMNS)
    groups: dict[str, dict] = {}
    nvrs: dict[str, dict] = {}
    count = 0
    for task in store.all_tasks():
        count += 1
        task_sheet.append(_task_row(task_sheet, task))
        row = groups.setdefault(task["group"], {"source": row_label(task["source"]),
                                                "nvr": task["server"], "tasks": 0, "done": 0, "failed": 0,
                                                "files": 0, "bytes": 0})
        nvr = nvrs.setdefault(task["server"], {"tasks": 0, "done": 0, "failed": 0, "cancelled": 0, "files": 0,
                                               "bytes": 0})
        result = _result(task)
        for totals in (row, nvr):
            totals["tasks"] += 1
            totals["files"] += _number(result.get("files")) or 0
            totals["bytes"] += _number(result.get("bytes")) or 0
            if task["state"] in totals:
                totals[task["state"]] += 1
    for row in groups.values():
        other = row["tasks"] - row["done"] - row["failed"]
        state = "done" if row["done"] == row["tasks"] else "failed" if row["failed"] else "in progress"
        rows_sheet.append([_text(rows_sheet, row["source"]), _text(rows_sheet, row["nvr"]), row["tasks"], row["done"],
                           row["failed"], other, row["files"], row["bytes"], _state_cell(rows_sheet, state)])
    for server in sorted(nvrs):
        n = nvrs[server]
        nvr_sheet.append([_text(nvr_sheet, server), n["tasks"], n["done"], n["failed"], n["cancelled"],
                          n["tasks"] - n["done"] - n["failed"] - n["cancelled"], n["files"], n["bytes"]])
    for sheet, columns, rows in ((rows_sheet, ROW_COLUMNS, len(groups)), (nvr_sheet, NVR_COLUMNS, len(nvrs)),
                                 (task_sheet, TASK_COLUMNS, count)):
        sheet.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{rows + 1}"
    workbook.save(out)


def _sheet(workbook: Workbook, title: str, columns: list[tuple[str, int]]):
    sheet = workbook.create_sheet(title)
    for i, (_, width) in enumerate(columns, start=1):
        sheet.column_dimensions[get_column_letter(i)].width = width
    sheet.freeze_panes = "A2"
    header = []
    for name, _ in columns:
        cell = WriteOnlyCell(sheet, value=name)
        cell.font = Font(bold=True)
        header.append(cell)
    sheet.append(header)
    return sheet


def _task_row(sheet, task: dict) -> list:
    result = _result(task)
    started, finished = _when(task["started"]), _when(task["finished"])
    duration = round(task["finished"] - task["started"], 1) if task["started"] and task["finished"] else None
    text = [_text(sheet, task[k]) for k in ("source", "name", "server")]
    return [task["id"], *text, _text(sheet, ",".join(task["cameras"]) or "all"),
            _text(sheet, task["start"]), _text(sheet, task["end"]), _state_cell(sheet, task["state"]), task["attempts"],
            _text(sheet, task["worker"]), _date_cell(sheet, started), _date_cell(sheet, finished), duration,
            _number(result.get("files")), _number(result.get("bytes")), _text(sheet, task["last_error"])]


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


def _text(sheet, value) -> WriteOnlyCell | None:
    """A string cell, never a formula: `=1+1` is shown as the text =1+1."""
    if value is None:
        return None
    cell = WriteOnlyCell(sheet, value=inert(value))
    cell.data_type = "s"
    return cell


def _state_cell(sheet, state: str) -> WriteOnlyCell:
    cell = _text(sheet, state)
    if state in STATE_FILL:
        cell.fill = PatternFill("solid", start_color=STATE_FILL[state], end_color=STATE_FILL[state])
    return cell


def _date_cell(sheet, value: datetime | None) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=value)
    cell.number_format = DATE
    return cell


def _when(timestamp: float | None) -> datetime | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None, microsecond=0)
