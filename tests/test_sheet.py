"""A user writes tasks.xlsx by hand: good sheets import, bad ones say exactly where and why."""
from __future__ import annotations

import sqlite3
import subprocess
from datetime import datetime

import pytest

from taskserver.errors import SheetError
from taskserver.sheet import load_sheet

from .harness import HEADER, PYTHON, T, write_sheet

GOOD = ["10.0.0.5", "admin", "pw", "101,201", T, T.replace(hour=2), "lobby"]


def import_sheet(sheet, db):
    return subprocess.run([PYTHON, "-m", "taskserver", "import", str(sheet), "--db", str(db), "--create"],
                          capture_output=True, text=True, timeout=60)


def queued(db) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM tasks").fetchone()[0]


def test_import_adds_rows_once_however_often_the_sheet_is_imported(tmp_path):
    sheet = write_sheet(tmp_path / "tasks.xlsx", [GOOD, [*GOOD[:4], T.replace(hour=2), T.replace(hour=4), "x"]],
                        HEADER)
    first = import_sheet(sheet, tmp_path / "ts.db")
    assert first.returncode == 0 and "2 task(s) added, 0 already" in first.stdout
    again = import_sheet(sheet, tmp_path / "ts.db")
    assert again.returncode == 0 and "0 task(s) added, 2 already" in again.stdout
    assert queued(tmp_path / "ts.db") == 2


def test_a_bad_row_queues_nothing_of_the_sheet(tmp_path):
    rows = [GOOD, [*GOOD[:4], "not a date", T, "bad"], [*GOOD[:4], T.replace(hour=5), T.replace(hour=6), "ok"]]
    result = import_sheet(write_sheet(tmp_path / "tasks.xlsx", rows, HEADER), tmp_path / "ts.db")
    assert result.returncode == 1
    assert ("tasks.xlsx, sheet 'tasks', row 3, column E (starttime): 'not a date' is not a date-time"
            in result.stderr)
    assert queued(tmp_path / "ts.db") == 0


def problems_of(path) -> list[str]:
    with pytest.raises(SheetError) as caught:
        load_sheet(path)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("row, expected", [
    ([*GOOD[:4], T.replace(hour=3), T.replace(hour=1)],
     "row 2, column F (endtime): end time 2026-01-01 01:00:00 is not after start time 2026-01-01 03:00:00"),
    (["", *GOOD[1:]], "row 2, column A (server): empty; this column is required"),
    ([GOOD[0], "admin", None, *GOOD[3:]], "row 2, column C (password): empty; this column is required"),
    ([*GOOD[:4], "31/01/2026", *GOOD[5:]], "row 2, column E (starttime): '31/01/2026' is not a date-time"),
    ([*GOOD[:4], 45000, *GOOD[5:]], "row 2, column E (starttime): 45000 is a number, not a date-time"),
    (["nvr one", *GOOD[1:]], "row 2, column A (server): 'nvr one' is not host[:port]"),
    (["10.0.0.5:99999", *GOOD[1:]], "row 2, column A (server): '10.0.0.5:99999' is not host[:port]"),
    ([*GOOD[:3], "101,lobby", *GOOD[4:]], "row 2, column D (cameras): camera 'lobby' is not a channel number"),
    ([*GOOD[:4], "2026-01-01T00:00:00+02:00", *GOOD[5:]], "row 2, column E (starttime): '2026-01-01T00:00:00+02:00'"
     " has a time zone offset"),
    ([GOOD[0], "=A1", *GOOD[2:]], "row 2, column B (username): formula cells are not read (=A1)"),
])
def test_each_bad_cell_is_named_by_file_sheet_row_and_column(tmp_path, row, expected):
    found = problems_of(write_sheet(tmp_path / "tasks.xlsx", [row], HEADER))
    assert any(p.startswith("tasks.xlsx, sheet 'tasks', ") and expected in p for p in found), found


def test_missing_and_unknown_columns(tmp_path):
    header = ["server", "user", "cameras", "starttime", "endtime", "colour"]
    found = problems_of(write_sheet(tmp_path / "tasks.xlsx", [["h", "u", 101, T, T]], header))
    assert "tasks.xlsx, sheet 'tasks', row 1: missing column 'password'" in found
    assert any(p.startswith("tasks.xlsx, sheet 'tasks', row 1, column F: unknown column 'colour'") for p in found)


def test_every_problem_is_reported_at_once(tmp_path):
    rows = [["", *GOOD[1:]], GOOD, [*GOOD[:4], "never", *GOOD[5:]], GOOD]
    found = problems_of(write_sheet(tmp_path / "tasks.xlsx", rows, HEADER))
    assert [p.split(":")[0] for p in found] == [
        "tasks.xlsx, sheet 'tasks', row 2, column A (server)",
        "tasks.xlsx, sheet 'tasks', row 4, column E (starttime)",
        "tasks.xlsx, sheet 'tasks', row 5",  # the same row twice
    ]


def test_files_that_are_not_workbooks(tmp_path):
    (tmp_path / "tasks.xlsx").write_text("server,username\n10.0.0.5,admin\n")
    assert problems_of(tmp_path / "tasks.xlsx") == ["tasks.xlsx: not an Excel .xlsx workbook (BadZipFile)"]
    (tmp_path / "tasks.csv").write_text("server\n")
    assert problems_of(tmp_path / "tasks.csv")[0].startswith("tasks.csv: not an Excel .xlsx workbook")
    assert problems_of(tmp_path / "nope.xlsx")[0].endswith("nope.xlsx: file not found")
    write_sheet(tmp_path / "empty.xlsx", [], HEADER)
    assert problems_of(tmp_path / "empty.xlsx") == ["empty.xlsx, sheet 'tasks': no task rows below the header"]


def test_header_less_sheets_of_the_original_blog_post_server_still_work(tmp_path):
    sheet = write_sheet(tmp_path / "old.xlsx", [["admin", 12345, "192.168.1.64", 101], ["admin", "pw", "nvr2", "101,201"]])
    specs = load_sheet(sheet)
    assert [(s.username, s.password, s.server, s.cameras, s.start) for s in specs] == [
        ("admin", "12345", "192.168.1.64", ("101",), None),  # a numeric password cell is text to us
        ("admin", "pw", "nvr2", ("101", "201"), None),  # no time range: every recording
    ]


def test_aliases_ids_priorities_and_notes_columns(tmp_path):
    header = ["ID", "Login", "Password", "NVR", "Cameras", "Start", "End", "Priority", "# who asked"]
    rows = [["case-17", "op", "pw", "https://nvr.example.com:8443", "101", T, T.replace(hour=1), 5, "police"]]
    (spec,) = load_sheet(write_sheet(tmp_path / "t.xlsx", rows, header))
    assert (spec.key, spec.username, spec.server, spec.priority) == ("id:case-17", "op", "https://nvr.example.com:8443", 5)
    assert spec.source == "t.xlsx, sheet 'tasks', row 2"


def test_times_with_an_offset_are_converted_to_the_nvr_clock_when_its_zone_is_known(tmp_path):
    header = [*HEADER, "timezone"]
    rows = [  # an incident report in UTC, NVRs in Bucharest (UTC+2 in winter, UTC+3 in summer)
        [*GOOD[:4], "2026-01-10T06:00:00Z", "2026-01-10T07:30:00+00:00", "winter", "Europe/Bucharest"],
        [*GOOD[:4], "2026-07-10T06:00:00Z", "2026-07-10T07:00:00Z", "summer", "Europe/Bucharest"],
        [*GOOD[:4], datetime(2026, 1, 10, 8), datetime(2026, 1, 10, 9), "plain cells are NVR-local", "Europe/Bucharest"],
    ]
    specs = load_sheet(write_sheet(tmp_path / "t.xlsx", rows, header))
    assert [(s.start, s.end) for s in specs] == [
        ("2026-01-10T08:00:00", "2026-01-10T09:30:00"),
        ("2026-07-10T09:00:00", "2026-07-10T10:00:00"),
        ("2026-01-10T08:00:00", "2026-01-10T09:00:00"),
    ]
    # Without a zone, "Z" keeps the firmware convention (NVR-local); a real offset is refused.
    plain = write_sheet(tmp_path / "p.xlsx", [[*GOOD[:4], "2026-01-10T06:00:00Z", "2026-01-10T07:00:00Z"]], HEADER)
    assert load_sheet(plain)[0].start == "2026-01-10T06:00:00"
    assert load_sheet(plain, timezone="Asia/Tokyo")[0].start == "2026-01-10T15:00:00"
    bad = write_sheet(tmp_path / "b.xlsx", [[*GOOD[:6], "x", "Mars/Olympus"]], header)
    assert "row 2, column H (timezone): 'Mars/Olympus' is not a time zone name" in problems_of(bad)[0]


def test_chunking_splits_rows_per_camera_and_per_chunk(tmp_path):
    header = [*HEADER, "chunk", "max_parallel"]
    rows = [[*GOOD[:4], T, T.replace(hour=2, minute=30), "lobby", "1h", 3],
            ["10.0.0.6", "admin", "pw", "", T, T.replace(hour=1), "all cameras", "30m", None]]
    specs = load_sheet(write_sheet(tmp_path / "t.xlsx", rows, header))
    first = [(s.cameras, s.start[11:16], s.end[11:16], s.takes_earlier) for s in specs if s.server == "10.0.0.5"]
    assert first == [(("101",), "00:00", "01:00", True), (("101",), "01:00", "02:00", False),
                     (("101",), "02:00", "02:30", False), (("201",), "00:00", "01:00", True),
                     (("201",), "01:00", "02:00", False), (("201",), "02:00", "02:30", False)]
    assert {s.group for s in specs[:6]} == {specs[0].group} and specs[0].max_parallel == 3
    assert [(s.cameras, s.start[11:16]) for s in specs[6:]] == [((), "00:00"), ((), "00:30")]
    assert specs[1].source == "t.xlsx, sheet 'tasks', row 2 (cam 101 chunk 2/3)"
    bad = [[*GOOD[:6], "x", "90"], [*GOOD[:4], T, T.replace(hour=1), "y", "1h", 0]]
    found = problems_of(write_sheet(tmp_path / "b.xlsx", bad, header))
    assert "row 2, column H (chunk): '90' is not a chunk length (e.g. 30m, 1h, 1d)" in found[0]
    assert "row 3, column I (max_parallel): 0 must be 1 or more" in found[1]
