"""A user writes tasks.xlsx by hand: good sheets import, bad ones say exactly where and why."""
from __future__ import annotations

import sqlite3
import subprocess
import zipfile
from datetime import datetime

import pytest

from taskserver.errors import SheetError
from taskserver.sheet import load_sheet

from .harness import HEADER, PYTHON, T, write_sheet

pytestmark = pytest.mark.fast  # the in-process layer: make test-fast, and first in make test

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
    ([*GOOD[:4], "1/3/2026", *GOOD[5:]], "row 2, column E (starttime): '1/3/2026' could be 1 March 2026 (day"
     " first) or 3 January 2026 (month first)"),
    ([*GOOD[:4], 45000, *GOOD[5:]], "row 2, column E (starttime): 45000 is a number, not a date-time"),
    (["nvr one", *GOOD[1:]], "row 2, column A (server): 'nvr one' is not host[:port]"),
    (["10.0.0.5:99999", *GOOD[1:]], "row 2, column A (server): '10.0.0.5:99999' is not host[:port]"),
    ([*GOOD[:3], "101,lobby", *GOOD[4:]], "row 2, column D (cameras): camera 'lobby' is not a track id"),
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


def test_files_that_are_not_task_sheets_say_what_to_do(tmp_path):
    (tmp_path / "tasks.xlsx").write_text("server,username\n10.0.0.5,admin\n")
    assert problems_of(tmp_path / "tasks.xlsx") == ["tasks.xlsx: not an Excel .xlsx workbook (BadZipFile)"]
    save_as = "save it as an Excel workbook (.xlsx) or as CSV UTF-8 (.csv) and import that"
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    assert problems_of(tmp_path / "old.xls") == [f"old.xls: an Excel 97-2003 workbook (.xls) is not read: {save_as}"]
    (tmp_path / "renamed.xlsx").write_bytes((tmp_path / "old.xls").read_bytes())
    assert problems_of(tmp_path / "renamed.xlsx") == [
        f"renamed.xlsx: this is an Excel 97-2003 (.xls) workbook, whatever its name says: {save_as}"]
    with zipfile.ZipFile(tmp_path / "calc.xlsx", "w") as ods:  # an OpenDocument file given the wrong name
        ods.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet")
        ods.writestr("content.xml", "<office:document-content/>")
    assert problems_of(tmp_path / "calc.xlsx") == [
        f"calc.xlsx: this is an OpenDocument spreadsheet (.ods), whatever its name says: {save_as}"]
    (tmp_path / "calc.ods").write_bytes((tmp_path / "calc.xlsx").read_bytes())
    assert problems_of(tmp_path / "calc.ods") == [f"calc.ods: an OpenDocument spreadsheet (.ods) is not read: {save_as}"]
    (tmp_path / "tasks.txt").write_text("server,username\n")
    assert problems_of(tmp_path / "tasks.txt") == [
        "tasks.txt: not a task sheet: give an Excel workbook (.xlsx) or a CSV file (.csv)"]
    assert problems_of(tmp_path / "nope.xlsx")[0].endswith("nope.xlsx: file not found")
    write_sheet(tmp_path / "empty.xlsx", [], HEADER)
    assert problems_of(tmp_path / "empty.xlsx") == ["empty.xlsx, sheet 'tasks': no task rows below the header"]
    (tmp_path / "empty.csv").write_bytes(b"")
    assert problems_of(tmp_path / "empty.csv") == ["empty.csv: the sheet is empty"]


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
    assert "row 3, column I (max_parallel): 0 is outside 1 to 1,000" in found[1]


def test_timezone_auto_keeps_utc_instants_for_the_nvr_to_place(tmp_path):
    header = [*HEADER, "timezone", "chunk"]
    rows = [  # an incident report in UTC and in Bucharest time; the NVRs' zones are read from the devices
        [*GOOD[:4], "2026-01-10T06:00:00Z", "2026-01-10T07:30:00+00:00", "report", "auto", None],
        ["10.0.0.6", "admin", "pw", "101", "2026-01-10T08:00:00+02:00", "2026-01-10T09:00:00+02:00", "b", "AUTO", "30m"],
        ["10.0.0.7", "admin", "pw", "101", T, T.replace(hour=1), "plain cells stay NVR-local", "auto", None],
    ]
    specs = load_sheet(write_sheet(tmp_path / "t.xlsx", rows, header))
    assert [(s.server, s.start, s.end, s.timezone) for s in specs] == [
        ("10.0.0.5", "2026-01-10T06:00:00+00:00", "2026-01-10T07:30:00+00:00", "auto"),
        ("10.0.0.6", "2026-01-10T06:00:00+00:00", "2026-01-10T06:30:00+00:00", "auto"),  # chunks cut in UTC
        ("10.0.0.6", "2026-01-10T06:30:00+00:00", "2026-01-10T07:00:00+00:00", "auto"),
        ("10.0.0.7", "2026-01-01T00:00:00", "2026-01-01T01:00:00", None),
    ]
    assert specs[1].name == "b cam 101 2026-01-10 06:00 UTC"
    assert load_sheet(write_sheet(tmp_path / "d.xlsx", rows[:1], HEADER), timezone="auto")[0].timezone == "auto"
    mixed = [[*GOOD[:4], "2026-01-10T06:00:00Z", datetime(2026, 1, 10, 9), "m", "auto", None]]
    assert "row 2, column F (endtime): with timezone auto, write both times with an offset" in problems_of(
        write_sheet(tmp_path / "m.xlsx", mixed, header))[0]


def test_a_certificate_fingerprint_is_normalised_and_needs_https(tmp_path):
    header = [*HEADER, "SHA256"]
    colons = ":".join(f"{b:02X}" for b in range(32))
    rows = [["https://nvr.example.com:8443", "admin", "pw", "101", T, T.replace(hour=1), "a", colons],
            ["https://nvr2.example.com", "admin", "pw", "101", T, T.replace(hour=1), "b", f"sha256 Fingerprint={colons}"],
            ["https://nvr3.example.com", "admin", "pw", "101", T, T.replace(hour=1), "c", None]]
    specs = load_sheet(write_sheet(tmp_path / "t.xlsx", rows, header))
    assert [s.tls_fingerprint for s in specs] == [bytes(range(32)).hex()] * 2 + [None]
    bad = [["10.0.0.5", "admin", "pw", "101", T, T.replace(hour=1), "a", colons],
           ["https://nvr.example.com", "admin", "pw", "101", T, T.replace(hour=1), "b", "AB:CD"]]
    found = problems_of(write_sheet(tmp_path / "b.xlsx", bad, header))
    assert found[0].endswith("row 2, column H (tls_fingerprint): a certificate fingerprint needs an https:// server,"
                             " not '10.0.0.5'")
    assert "row 3, column H (tls_fingerprint): 'AB:CD' is not a SHA-256 fingerprint (64 hex digits" in found[1]


def test_rows_that_use_no_new_column_keep_their_task_keys(tmp_path):
    """Keys as earlier versions computed them: re-importing an old sheet must add nothing twice."""
    header = [*HEADER, "timezone"]
    rows = [["10.0.0.5", "admin", "pw", "201,101", T, T.replace(hour=2), "a", None],
            ["https://nvr.example.com:8443", "op", "pw", "101", "2026-01-10T06:00:00Z", "2026-01-10T07:00:00Z", "b",
             "Europe/Bucharest"]]
    specs = load_sheet(write_sheet(tmp_path / "t.xlsx", rows, header))
    assert [s.key for s in specs] == ["row:ad06ff6df13bfd558c087788", "row:7e43fdd127ca67527b3e473c"]
    chunked = load_sheet(write_sheet(tmp_path / "c.xlsx", rows[:1], header), chunk="1h")
    assert [s.key for s in chunked][:2] == ["row:ad06ff6df13bfd558c087788/201/20260101T000000",
                                            "row:ad06ff6df13bfd558c087788/201/20260101T010000"]


NOW = datetime(2026, 3, 10, 14, 30).replace(tzinfo=__import__("datetime").UTC).timestamp()


def test_relative_windows_are_the_nvrs_local_day_or_the_last_hours(tmp_path):
    header = ["server", "username", "password", "cameras", "starttime", "endtime", "timezone", "name"]
    rows = [["10.0.0.5", "admin", "pw", 101, "yesterday", None, "Europe/Bucharest", "y"],
            ["10.0.0.5", "admin", "pw", 101, "today", None, "UTC", "t"],
            ["10.0.0.5", "admin", "pw", 101, "Last 6h", None, "UTC", "6h"],
            ["10.0.0.5", "admin", "pw", 101, "last 7d", "", "UTC", "7d"]]
    specs = load_sheet(write_sheet(tmp_path / "r.xlsx", rows, header), now=NOW)
    assert [(s.name, s.start, s.end) for s in specs] == [
        ("y", "2026-03-09T00:00:00", "2026-03-10T00:00:00"),  # Bucharest is UTC+2: 16:30 on the 10th there
        ("t", "2026-03-10T00:00:00", "2026-03-10T14:30:00"),
        ("6h", "2026-03-10T08:30:00", "2026-03-10T14:30:00"),
        ("7d", "2026-03-03T14:30:00", "2026-03-10T14:30:00")]
    again = load_sheet(write_sheet(tmp_path / "r.xlsx", rows, header), now=NOW + 86400)
    assert specs[0].key != again[0].key  # "yesterday" imported the next day is the next day's task


def test_relative_windows_that_cannot_be_worked_out_are_refused(tmp_path):
    header = ["server", "username", "password", "cameras", "starttime", "endtime", "timezone"]
    rows = [["10.0.0.5", "admin", "pw", 101, "yesterday", "2026-03-10 00:00", "UTC"],
            ["10.0.0.5", "admin", "pw", 201, "yesterday", None, "auto"],
            ["10.0.0.5", "admin", "pw", 301, "last 0h", None, "UTC"]]
    found = problems_of(write_sheet(tmp_path / "r.xlsx", rows, header))
    assert "r.xlsx, sheet 'tasks', row 2, column F (endtime): leave the end time empty: 'yesterday' says where" \
           " the window ends" in found
    assert any("row 3, column E (starttime): 'yesterday' needs the NVR's zone by name" in p for p in found)
    assert any(p.startswith("r.xlsx, sheet 'tasks', row 4, column E (starttime)") for p in found)


def test_a_row_on_a_schedule_becomes_a_schedule_not_tasks(tmp_path):
    header = ["server", "username", "password", "cameras", "starttime", "schedule", "timezone", "chunk", "name"]
    rows = [["10.0.0.5", "admin", "pw", "101,201", "yesterday", "daily 01:00", "UTC", "6h", "lobby"],
            ["10.0.0.6", "admin", "pw", 101, None, "every 6h", None, None, "gate"]]
    imported = load_sheet(write_sheet(tmp_path / "s.xlsx", rows, header), now=NOW)
    assert list(imported) == []
    lobby, gate = imported.schedules
    assert (lobby.cadence, lobby.zone, lobby.cursor, lobby.chunk) == ("daily 01:00", "UTC", "2026-03-09T00:00:00",
                                                                      21600)
    assert lobby.next_fire == NOW  # the 9th is over: its run is due at once
    assert lobby.template.cameras == ("101", "201") and lobby.template.password is None and lobby.password == "pw"
    assert gate.zone is None and gate.next_fire > NOW
    same = load_sheet(write_sheet(tmp_path / "s.xlsx", rows, header), now=NOW + 86400)
    assert [s.key for s in same.schedules] == [lobby.key, gate.key]  # imported again, the same schedules


def test_schedules_and_passwords_that_contradict_themselves_are_refused(tmp_path):
    header = ["server", "username", "password", "cameras", "starttime", "endtime", "schedule", "timezone"]
    rows = [["10.0.0.5", "admin", "pw", 501, None, None, "daily", "UTC"],
            ["10.0.0.5", "admin", "pw", 101, None, "2026-03-10 00:00", "daily", "UTC"],
            ["10.0.0.5", "admin", "pw", 201, None, None, "weekly", "UTC"],
            ["10.0.0.5", "admin", "pw", 301, None, None, "daily", "auto"],
            ["10.0.0.5", "admin", "Other-Secret", 401, "2026-03-01", "2026-03-02", None, None]]
    found = problems_of(write_sheet(tmp_path / "s.xlsx", rows, header))
    assert any("row 3, column F (endtime): a row on a schedule has no end time" in p for p in found)
    assert any("row 4, column G (schedule): 'weekly' is not a schedule (use e.g. daily 01:00, every 6h, hourly)"
               in p for p in found)
    assert any("row 5, column H (timezone): a row on a schedule needs the NVR's zone by name" in p for p in found)
    assert "s.xlsx, sheet 'tasks', row 6: the password of user 'admin' on 10.0.0.5 differs from the one on row 2:" \
           " an NVR user has one password" in found
    assert not any("Other-Secret" in p for p in found)
