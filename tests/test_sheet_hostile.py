"""Sheets and task batches made by an attacker: small files and bodies that ask for unbounded memory or time.

Each must be refused with a clear message while the process stays small, and
nothing of it may be queued. Workbooks openpyxl cannot make are zipped by hand.
"""
from __future__ import annotations

import json
import math
import subprocess
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskserver.errors import SheetError
from taskserver.sheet import MAX_REQUEST_TASKS, load_rows, load_sheet
from taskserver.store.base import TaskSpec

from .harness import HEADER, PYTHON, api, start_coordinator, write_sheet

MiB = 2**20
NS = b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PARTS = {
    "[Content_Types].xml": (
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml"'
        ' ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml"'
        ' ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/sharedStrings.xml"'
        ' ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'),
    "_rels/.rels": (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'),
    "xl/workbook.xml": (
        f'<workbook {NS.decode()} xmlns:r="{REL}"><sheets><sheet name="tasks" sheetId="1" r:id="rId1"/></sheets>'
        '</workbook>'),
    "xl/_rels/workbook.xml.rels": (
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        f'<Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/>'
        f'<Relationship Id="rId2" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'),
}
GOOD = ["10.0.0.5", "admin", "pw", "101", "2026-01-01 00:00", "2026-01-01 01:00", "lobby"]


def xml_row(number: int, values: list[str]) -> bytes:
    cells = "".join(f'<c r="{chr(65 + i)}{number}" t="inlineStr"><is><t>{v}</t></is></c>' for i, v in enumerate(values))
    return f'<row r="{number}">{cells}</row>'.encode()


def workbook(path: Path, rows=(), shared=(b"<sst " + NS + b"/>",), parts: int = 0) -> Path:
    """A workbook zipped by hand: a header and a good row, then `rows` (chunks of sheet XML)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in PARTS.items():
            archive.writestr(name, text)
        with archive.open("xl/worksheets/sheet1.xml", "w") as sheet:
            sheet.write(b"<worksheet " + NS + b"><sheetData>" + xml_row(1, HEADER) + xml_row(2, GOOD))
            for chunk in rows:
                sheet.write(chunk)
            sheet.write(b"</sheetData></worksheet>")
        with archive.open("xl/sharedStrings.xml", "w") as strings:
            for chunk in shared:
                strings.write(chunk)
        for i in range(parts):
            archive.writestr(f"xl/media/image{i}.png", b"")
    return path


def blank_rows(first: int, count: int):
    for start in range(first, first + count, 100_000):
        yield b"".join(b'<row r="%d"/>' % n for n in range(start, min(first + count, start + 100_000)))


HOSTILE = {
    "one huge shared string": (
        lambda p: workbook(p, shared=[b"<sst " + NS + b"><si><t>", *[b"A" * MiB] * 100, b"</t></si></sst>"]),
        "part 'xl/sharedStrings.xml' would unpack to 100 MiB, more than the 32 MiB accepted"),
    "a shared strings bomb": (
        lambda p: workbook(p, shared=[b"<sst " + NS + b">", *[b"<si><t>x</t></si>" * 60_000] * 30, b"</sst>"]),
        "part 'xl/sharedStrings.xml' unpacks 411 times larger than it is stored (a decompression bomb?)"),
    "a million blank rows": (
        lambda p: workbook(p, rows=blank_rows(3, 1_100_000)),
        "sheet 'tasks': the sheet goes on past row 1,048,576 (the most a spreadsheet holds)"),
    "a row fifty million rows down": (
        lambda p: workbook(p, rows=[xml_row(50_000_000, ["x"])]),
        "sheet 'tasks': the sheet goes on past row 1,048,576"),
    "thousands of parts": (lambda p: workbook(p, parts=1001), "the workbook holds more than 1000 parts"),
    "a megabyte in one cell": (
        lambda p: workbook(p, rows=[xml_row(3, [*GOOD[:6], "n" * 1_000_000])]),
        "sheet 'tasks', row 3, column G (name): 1,000,000 characters; at most 200 are accepted here"),
    "a reference to a missing shared string": (
        lambda p: workbook(p, rows=[b'<row r="3"><c r="A3" t="s"><v>99</v></c></row>']),
        "sheet 'tasks': the workbook is damaged (IndexError); open it in Excel or LibreOffice and save it again"),
    "a priority of 1e20": (
        lambda p: write_sheet(p, [[*GOOD, 1e20]], [*HEADER, "priority"]),
        "sheet 'tasks', row 2, column H (priority): 1e+20 is outside -1,000,000 to 1,000,000"),
}
# Runs a command and reports its exit code and the peak memory of the command's process.
MEASURED = ("import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.stderr.write(done.stderr)\n")


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_workbooks_are_refused_clearly_in_bounded_memory(tmp_path, case):
    make, expected = HOSTILE[case]
    sheet = make(tmp_path / "tasks.xlsx")
    db = tmp_path / "ts.db"
    run = subprocess.run([PYTHON, "-c", MEASURED, PYTHON, "-m", "taskserver", "import", str(sheet), "--db", str(db)],
                         capture_output=True, text=True, timeout=120)
    code, peak_kib = map(int, run.stdout.split())
    assert code == 1 and expected in run.stderr and run.stderr.startswith("taskserver: tasks.xlsx"), run.stderr
    assert "Traceback" not in run.stderr
    assert peak_kib < 300 * 1024, f"{case}: peak RSS {peak_kib // 1024} MB"
    assert not db.exists()  # refused before the database was opened: nothing queued


def test_a_csv_of_endless_blank_lines_stops_at_the_row_limit(tmp_path):
    sheet = tmp_path / "tasks.csv"
    sheet.write_bytes(",".join(HEADER).encode() + b"\n" + b",,,,,,\n" * 1_100_000)
    with pytest.raises(SheetError) as caught:
        load_sheet(sheet)
    assert str(caught.value) == ("tasks.csv: the sheet goes on past row 1,048,576 (the most a spreadsheet holds);"
                                 " delete the rows below your tasks, or split the sheet")


THIRTY_CAMERAS = ",".join(f"{c}01" for c in range(1, 33))


def test_tasks_are_counted_before_a_row_is_split(tmp_path):
    header = [*HEADER, "chunk"]
    rows = [[*GOOD[:3], THIRTY_CAMERAS, datetime(2016, 1, 1), datetime(2026, 1, 1), "decade", "1m"]]
    with pytest.raises(SheetError) as caught:
        load_sheet(write_sheet(tmp_path / "t.xlsx", rows, header))
    assert str(caught.value) == (
        "t.xlsx, sheet 'tasks', row 2: this row makes 168,330,240 tasks (32 camera(s) x 5,260,320 chunk(s) of"
        " 0:01:00); one sheet may add at most 1,000,000: use a longer chunk, or split the work")
    # Rows below the limit are fine one by one; the row that crosses it is named, once.
    day = {"server": "10.0.0.5", "user": "admin", "password": "pw", "cameras": "101,201",
           "start": "2026-01-01", "end": "2026-01-02"}
    batch = [{**day, "name": f"r{i}", "start": f"2026-01-0{i}", "end": f"2026-01-0{i + 1}"} for i in range(1, 6)]
    assert len(load_rows(batch[:2], chunk="1h", max_tasks=96)) == 96
    with pytest.raises(SheetError) as caught:
        load_rows(batch, chunk="1h", max_tasks=100)
    assert [str(p) for p in caught.value.problems] == [
        "request, row 3: this row makes 48 tasks (2 camera(s) x 24 chunk(s) of 1:00:00), 144 with the rows above;"
        " one request may add at most 100: use a longer chunk, or split the work"]


def test_a_sheet_with_thousands_of_bad_rows_reports_the_first_thousand(tmp_path):
    sheet = tmp_path / "tasks.csv"
    sheet.write_text(",".join(HEADER) + "\n" + "10.0.0.5,admin,pw,101,never,never,x\n" * 5000)
    with pytest.raises(SheetError) as caught:
        load_sheet(sheet)
    problems = [str(p) for p in caught.value.problems]
    assert len(problems) == 1001 and problems[-1] == "tasks.csv: stopped reading after 1000 problems"
    assert str(caught.value).splitlines()[-1] == "... and 951 more"


def test_hostile_task_batches_get_a_clear_400_on_every_store(procs, db):
    coordinator = start_coordinator(procs, None, db)
    task = {"server": "10.0.0.5", "user": "admin", "password": "pw", "cameras": "101"}
    flood = {"tasks": [{**task, "cameras": THIRTY_CAMERAS, "start": "1996-01-01", "end": "2026-01-01"}],
             "chunk": "1m"}
    assert len(json.dumps(flood)) < 320  # the reported 313-byte request
    refused = api(coordinator.url, "POST", "/api/tasks", json=flood)
    assert refused.status_code == 400 and refused.json()["message"] == (
        "request, row 1: this row makes 504,944,640 tasks (32 camera(s) x 15,779,520 chunk(s) of 0:01:00); one"
        " request may add at most 10,000: use a longer chunk, or split the work")
    timed = {**task, "start": "2026-01-01", "end": "2026-01-02"}
    for body, message in [
        ({"tasks": [{**timed, "priority": 2**31}]}, "column priority: 2147483648 is outside -1,000,000 to 1,000,000"),
        ({"tasks": [{**timed, "priority": 2**64}]}, "column priority: 1.84e+19 is outside"),
        ({"tasks": [{**timed, "priority": 1e308}]}, "column priority: 1e+308 is outside"),
        ({"tasks": [{**timed, "priority": 10**400}]}, "column priority: a number of more than 300 digits is outside"),
        ({"tasks": [{**timed, "name": "lobby\u0000"}]}, "column name: contains a control character (U+0000)"),
        ({"tasks": [{**timed, "name": "x" * 100_000}]}, "column name: 100,000 characters; at most 200"),
        ({"tasks": [{**timed, "cameras": [[[101]]]}]}, "column cameras: expected text, a number or an ISO date-time"),
        ({"tasks": [{}] * 10_001}, "request: 10,001 tasks; one request adds at most 10,000"),
    ]:
        answer = api(coordinator.url, "POST", "/api/tasks", json=body)
        assert answer.status_code == 400 and message in answer.json()["message"], (message, answer.text[:300])
    assert api(coordinator.url).json()["tasks"] == 0
    assert psutil.Process(coordinator.pid).memory_info().rss < 300 * MiB


FIELDS = ["server", "user", "password", "cameras", "start", "end", "id", "name", "priority", "chunk",
          "max_parallel", "timezone", "fingerprint", "colour"]
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
           | st.sampled_from(["10.0.0.5", "https://nvr:8443", "101,201", "2026-01-01", "2026-01-01T05:00:00Z",
                              "01.03.2026 00:00", "1/3/2026", "auto", "Europe/Bucharest", "1m", "1h", "=1+1",
                              "a" * 64, "\x00", "1e20"]))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
any_task = st.dictionaries(st.sampled_from(FIELDS), scalars | json_values, max_size=12)
printable = st.characters(exclude_categories=("Cc", "Cs", "Zs"))
LOCAL_FORMS = ["%Y-%m-%d %H:%M", "%d.%m.%Y %H:%M", "%Y-%m-%dT%H:%M:%SZ", "%d/%m/%Y %H:%M", "%m/%d/%Y"]


@st.composite
def plausible_task(draw):
    """A task a person would post; one time in eight, one field replaced by anything at all."""
    https = draw(st.booleans())
    task = {"server": "https://nvr:8443" if https else draw(st.sampled_from(["10.0.0.5", "NVR.example.com:8000"])),
            "user": draw(st.sampled_from(["admin", "op"])),
            "password": draw(st.text(printable, min_size=1, max_size=20) | st.integers(0, 10**6))}
    zone = draw(st.sampled_from([None, "auto", "UTC", "Europe/Bucharest"]))
    start = datetime(2026, 1, 1) + timedelta(hours=draw(st.integers(0, 24 * 60)))
    end = start + timedelta(minutes=draw(st.integers(1, 24 * 60 * 3)))
    if zone and draw(st.booleans()):  # times from a report that gives its offset
        offset = timezone(timedelta(minutes=draw(st.sampled_from([0, 120, -300, 330]))))
        task["start"], task["end"] = (t.replace(tzinfo=offset).isoformat() for t in (start, end))
    else:
        form = draw(st.sampled_from(LOCAL_FORMS))
        task["start"], task["end"] = start.strftime(form), end.strftime(form)
    if zone:
        task["timezone"] = zone
    for field, values in [("cameras", st.sampled_from(["101", "101,201", "101;201/301", 101, 3301, ""])),
                          ("priority", st.integers(-10**6, 10**6)), ("chunk", st.sampled_from(["1h", "90m", "1d"])),
                          ("max_parallel", st.integers(1, 1000)), ("name", st.text(printable, max_size=50)),
                          ("id", st.text(printable, max_size=10)), ("fingerprint", st.just("AB:" * 31 + "AB") if https
                                                         else st.none())]:
        if draw(st.booleans()):
            task[field] = draw(values)
    if draw(st.integers(0, 7)) == 0:
        task[draw(st.sampled_from(FIELDS))] = draw(json_values)
    return task


person_rows = st.lists(plausible_task(), min_size=1, max_size=2)
# Hypothesis picks among alternatives evenly: repeating one makes it likelier.
requests = st.one_of(person_rows, person_rows, person_rows, st.lists(plausible_task() | any_task, max_size=4),
                     json_values)
chunks = st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["1h", "1d", "4h"]), scalars)
zones = st.one_of(st.none(), st.none(), st.none(), st.sampled_from(["auto", "UTC", "Asia/Tokyo"]), scalars)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=requests, chunk=chunks, timezone=zones)
def test_any_json_gives_valid_task_specs_or_a_sheet_error(rows, chunk, timezone):
    try:
        specs = load_rows(rows, chunk=chunk, timezone=timezone)
    except SheetError as exc:
        assert exc.problems and all(len(str(p)) < 2000 for p in exc.problems)
        return
    assert 0 < len(specs) <= MAX_REQUEST_TASKS
    for spec in specs:
        assert isinstance(spec, TaskSpec) and spec.server and spec.username and spec.password
        assert -1_000_000 <= spec.priority <= 1_000_000 and len(spec.name) <= 300
        assert all(c.isdigit() for camera in spec.cameras for c in camera)
        if spec.start is not None:
            start, end = datetime.fromisoformat(spec.start), datetime.fromisoformat(spec.end)
            assert start < end and (start.tzinfo is None) == (spec.timezone is None)
        assert spec.tls_fingerprint is None or len(spec.tls_fingerprint) == 64
        assert spec.max_parallel is None or 1 <= spec.max_parallel <= 1000


def test_chunk_counts_match_the_chunks_made():
    """The count made before splitting is the number of tasks the split makes."""
    row = {"server": "10.0.0.5", "user": "admin", "password": "pw", "cameras": "101,201,301",
           "start": "2026-01-01 00:00", "end": "2026-01-01 10:20"}
    for chunk, minutes in [("7m", 7), ("1h", 60), ("90m", 90), ("1d", 1440)]:
        assert len(load_rows([row], chunk=chunk)) == 3 * math.ceil(620 / minutes)
