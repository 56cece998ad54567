"""The Excel report: the outcome of a run, in the tool the work was defined in.

Three sheets: one row per sheet row (chunks rolled up), one per NVR, and one
per task. Written in openpyxl's write-only mode, streaming the tasks, so a
report of a million tasks needs no more memory than one of ten. No passwords:
it is built from the public task views.
"""
from __future__ import annotations

import os
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
        for totals in (row, nvr):
            totals["tasks"] += 1
            totals["files"] += (task["result"] or {}).get("files", 0) or 0
            totals["bytes"] += (task["result"] or {}).get("bytes", 0) or 0
            if task["state"] in totals:
                totals[task["state"]] += 1
    for row in groups.values():
        other = row["tasks"] - row["done"] - row["failed"]
        state = "done" if row["done"] == row["tasks"] else "failed" if row["failed"] else "in progress"
        rows_sheet.append([row["source"], row["nvr"], row["tasks"], row["done"], row["failed"], other,
                           row["files"], row["bytes"], _state_cell(rows_sheet, state)])
    for server in sorted(nvrs):
        n = nvrs[server]
        nvr_sheet.append([server, n["tasks"], n["done"], n["failed"], n["cancelled"],
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
    result = task["result"] or {}
    started, finished = _when(task["started"]), _when(task["finished"])
    duration = round(task["finished"] - task["started"], 1) if task["started"] and task["finished"] else None
    return [task["id"], task["source"], task["name"], task["server"], ",".join(task["cameras"]) or "all",
            task["start"], task["end"], _state_cell(sheet, task["state"]), task["attempts"], task["worker"],
            _date_cell(sheet, started), _date_cell(sheet, finished), duration, result.get("files"),
            result.get("bytes"), task["last_error"]]


def _state_cell(sheet, state: str) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=state)
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
