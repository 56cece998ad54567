"""Cells as people type them, in .xlsx and .csv: what is read, and what is refused with which words."""
from __future__ import annotations

import subprocess
from datetime import datetime

import pytest

from taskserver.errors import SheetError
from taskserver.sheet import load_sheet

from .harness import HEADER, PYTHON, T, api, start_coordinator, write_sheet

pytestmark = pytest.mark.fast  # the in-process layer: make test-fast, and first in make test

GOOD = ["10.0.0.5", "admin", "pw", "101", T, T.replace(hour=2), "lobby"]
WHERE = {"server": "A (server)", "username": "B (username)", "password": "C (password)", "cameras": "D (cameras)",
         "starttime": "E (starttime)", "endtime": "F (endtime)", "name": "G (name)"}


def row_with(**cells) -> list:
    row = list(GOOD)
    for field, value in cells.items():
        row[HEADER.index(field)] = value
    return row


def problems_of(path) -> list[str]:
    with pytest.raises(SheetError) as caught:
        load_sheet(path)
    return [str(p) for p in caught.value.problems]


def write_csv(path, text: str, bom: bool = False):
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


@pytest.mark.parametrize("field, value, expected", [
    ("cameras", 101, ("101",)),
    ("cameras", 3301, ("3301",)),  # IP channel 33, as some NVRs number them
    ("cameras", "101; 201/301 401,502", ("101", "201", "301", "401", "502")),
    ("cameras", "101\u00a0201", ("101", "201")),  # a no-break space, as Russian and French locales type it
    ("starttime", "01.03.2026 00:00", datetime(2026, 3, 1)),
    ("starttime", "1.3.2026", datetime(2026, 3, 1)),
    ("starttime", "13/3/2026 0:00", datetime(2026, 3, 13)),  # day above 12: day first, unambiguous
    ("starttime", "3/13/2026 8:30", datetime(2026, 3, 13, 8, 30)),  # month first, unambiguous
    ("starttime", "2026-03-01", datetime(2026, 3, 1)),
    ("starttime", "2026/3/1 7:05:09", datetime(2026, 3, 1, 7, 5, 9)),
    ("password", 12345, "12345"),
    ("name", "  Lobby, night \n", "Lobby, night"),  # surrounding spaces and line breaks are dropped
])
def test_cells_typed_the_local_way_are_read_unambiguously(tmp_path, field, value, expected):
    end = datetime(2026, 4, 1) if field == "starttime" else GOOD[5]
    (spec,) = load_sheet(write_sheet(tmp_path / "t.xlsx", [row_with(**{field: value}, endtime=end)], HEADER))
    got = {"cameras": spec.cameras, "starttime": spec.start, "password": spec.password, "name": spec.name}[field]
    assert got == (expected.isoformat() if isinstance(expected, datetime) else expected)


@pytest.mark.parametrize("field, value, expected", [
    ("cameras", 101.201, "the cell holds the number 101.201, not a list of tracks: the spreadsheet took the comma or"
     " dot between tracks for a decimal sign (a language setting of the spreadsheet). Format the cameras column as"
     " text before typing, or separate tracks with ';' or '/' (101;201)"),
    ("cameras", 101201, "the cell holds the number 101201, more digits than a track id (channel × 100 + stream, at"
     " most 5 digits): the spreadsheet took the space, dot or comma between tracks for a thousands separator"),
    ("cameras", 1012, "camera 1012 is not a track id (channel × 100 + stream 1-3"),
    ("cameras", "1,2", "camera '1' is not a track id (channel × 100 + stream 1-3: 101 is channel 1's main stream"),
    ("cameras", "101.201", "camera '101.201' is not a track id (channel × 100 + stream 1-3: 101 is channel 1's main"
     " stream, 102 its sub-stream; empty for all cameras); separate tracks with ';' or '/' (101;201)"),
    ("cameras", ", ;", "', ;' holds no track id (leave the cell empty for every camera)"),
    ("starttime", "1/3/2026 0:00", "'1/3/2026 0:00' could be 1 March 2026 (day first) or 3 January 2026 (month"
     " first); write it as 2026-03-01 00:00 (year-month-day) or 01.03.2026 00:00 (day.month.year)"),
    ("starttime", "31.02.2026", "'31.02.2026' is not a real date-time; accepted forms: 2026-03-01 08:00"
     " (year-month-day), 01.03.2026 08:00 (day.month.year), 13/03/2026 08:00 (with / only when the day or the month"
     " is above 12), or a date cell"),
    ("starttime", "01.03.26", "'01.03.26' is not a date-time in an accepted form: 2026-03-01 08:00"),
    ("starttime", datetime(1900, 1, 1), "year 1900 is outside 1970-2100"),
    ("name", " =HYPERLINK(\"http://x\",\"y\")", "formula cells are not read (=HYPERLINK(\"http://x\",\"y\"))"),
    ("name", "\n=1+1", "formula cells are not read (=1+1)"),
    ("name", "Lobby\x9b31m", "contains a control character (U+009B) at position 6; retype the cell as one line"),
    ("name", "Lobby\nnight", "contains a control character (U+000A) at position 6"),
    ("name", "x" * 201, "201 characters; at most 200 are accepted here"),
    ("username", "u" * 65, "65 characters; at most 64 are accepted here"),
    ("server", "h" * 256, "256 characters; at most 255 are accepted here"),
    ("password", 12.5, "the cell holds the number, not text: format the column as text and retype it"),
    ("password", 10**16, "the cell holds the number, too many digits to be exact"),
    ("username", True, "expected text, found TRUE/FALSE"),
])
def test_cells_that_cannot_be_what_was_meant_are_refused_with_the_cause(tmp_path, field, value, expected):
    found = problems_of(write_sheet(tmp_path / "t.xlsx", [row_with(**{field: value})], HEADER))
    assert f"t.xlsx, sheet 'tasks', row 2, column {WHERE[field]}: {expected}" in "\n".join(found), found
    if field == "password":
        assert str(value) not in "\n".join(found)  # a password is never repeated in a message


@pytest.mark.parametrize("column, value, expected", [
    ("priority", 1e20, "1e+20 is outside -1,000,000 to 1,000,000"),
    ("priority", 2**31, "2147483648 is outside -1,000,000 to 1,000,000"),
    ("priority", "1e20", "'1e20' is not a whole number"),
    ("priority", 2.5, "2.5 is not a whole number"),
    ("max_parallel", 1001, "1001 is outside 1 to 1,000"),
    ("chunk", "99999999d", "'99999999d' is not a chunk length (e.g. 30m, 1h, 1d)"),
    ("chunk", "3661d", "chunk '3661d' is longer than 3660 days"),
])
def test_numbers_are_bounded_to_what_every_store_holds(tmp_path, column, value, expected):
    found = problems_of(write_sheet(tmp_path / "t.xlsx", [[*GOOD, value]], [*HEADER, column]))
    assert found == [f"t.xlsx, sheet 'tasks', row 2, column H ({column}): {expected}"]


def test_a_csv_list_reads_like_the_sheet_whatever_its_separator(tmp_path):
    header = "server;username;password;cameras;starttime;endtime;name;priority\r\n"
    semicolons = write_csv(tmp_path / "excel-ru.csv", header + (  # Excel's "CSV UTF-8" where ',' is the decimal sign
        "10.0.0.5;admin;=Secret1;101,201;01.03.2026 00:00;01.03.2026 02:00;Лобби;5\r\n"
        '10.0.0.6;admin;"pw;x";101 201;2026-03-01 00:00;2026-03-01 01:00;"Двор, ночь";\r\n'), bom=True)
    specs = load_sheet(semicolons)
    assert [(s.server, s.password, s.cameras, s.start, s.end, s.name, s.priority) for s in specs] == [
        ("10.0.0.5", "=Secret1", ("101", "201"), "2026-03-01T00:00:00", "2026-03-01T02:00:00", "Лобби", 5),
        ("10.0.0.6", "pw;x", ("101", "201"), "2026-03-01T00:00:00", "2026-03-01T01:00:00", "Двор, ночь", 0)]
    assert specs[0].source == "excel-ru.csv, row 2"
    commas = write_csv(tmp_path / "plain.csv", header.replace(";", ",") + (
        '10.0.0.5,admin,pw,"101,201",1/3/2026 0:00,2026-03-01 02:00,lobby,\n'
        '10.0.0.5,admin,pw,101,2026-03-01,2026-03-02,"\x00lobby",\n'
        '10.0.0.5,ad\x1bmin,pw,101,2026-03-01,2026-03-02,lobby,\n'))
    assert problems_of(commas) == [
        "plain.csv, row 2, column E (starttime):"
        " '1/3/2026 0:00' could be 1 March 2026 (day first) or 3 January 2026 (month first); write it as"
        " 2026-03-01 00:00 (year-month-day) or 01.03.2026 00:00 (day.month.year)",
        "plain.csv, row 3, column G (name): contains a control character (U+0000) at position 1; retype the cell as"
        " one line of plain text",
        "plain.csv, row 4, column B (username): contains a control character (U+001B) at position 3; retype the cell"
        " as one line of plain text"]


def test_csv_files_not_in_utf8_or_with_endless_lines_are_named_by_line(tmp_path):
    cp1251 = tmp_path / "excel.csv"  # Excel's plain "CSV" on a Russian Windows is not UTF-8
    cp1251.write_bytes("server;username;password;starttime;endtime;name\n10.0.0.5;admin;pw;2026-03-01;2026-03-02;"
                       "Лобби\n".encode("cp1251"))
    assert problems_of(cp1251) == ["excel.csv: line 2 is not UTF-8 text (byte 0xcb): save the file as 'CSV UTF-8'"
                                   " (Excel) or with the character set Unicode (UTF-8) (LibreOffice)"]
    long_line = write_csv(tmp_path / "long.csv", ",".join(HEADER) + "\n" + "x" * 70_000 + "\n")
    assert problems_of(long_line) == ["long.csv: line 2 is longer than 65,536 bytes"]


def test_import_and_serve_take_a_csv_file(procs, tmp_path):
    sheet = write_csv(tmp_path / "tasks.csv", "server,username,password,cameras,starttime,endtime\n"
                      "10.0.0.5,admin,pw,101;201,01.03.2026 00:00,01.03.2026 01:00\n", bom=True)
    imported = subprocess.run([PYTHON, "-m", "taskserver", "import", str(sheet), "--db", str(tmp_path / "a.db"),
                               "--create", "--chunk", "30m"], capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0 and "4 task(s) added, 0 already" in imported.stdout, imported.stderr
    coordinator = start_coordinator(procs, sheet, tmp_path / "b.db")
    assert api(coordinator.url).json()["tasks"] == 1
