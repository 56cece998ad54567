"""The Excel report as the person who ran the export reads it and prints it: what came of each sheet row, the
last attempt's times beside Attempts and Worker, real dates, the files and where they are, one page wide on paper.
"""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from openpyxl import load_workbook

from taskserver.config import Config
from taskserver.report import export, write_report
from taskserver.store import TaskSpec, open_store
from taskserver.vault import Vault

from .harness import TEST_KEY, FakeClock

T0 = datetime(2026, 1, 1)
NAME = "Entrée principale, caméra du quai de chargement nord " * 3  # long, accented: must show whole
HEADERS = {"Rows": ("Sheet row", "State"), "NVRs": ("NVR", "Bytes"), "Tasks": ("Task", "Last error"),
           "Files": ("Task", "Location")}


def spec(n: int, group: str, name: str, chunk: str = "", **extra) -> TaskSpec:
    start = T0 + timedelta(hours=n)
    fields = {"server": "10.0.0.5:8000", "username": "admin", "password": "pw", "cameras": ("101",),
              "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat(), **extra}
    return TaskSpec(key=f"k{n}", name=name, group=group, source=f"t.xlsx, sheet 'tasks', row {group.removeprefix('list:')[1:]}{chunk}",
                    **fields)


@pytest.fixture
def clock():
    return FakeClock(datetime(2027, 3, 1, 8, 0, tzinfo=UTC).timestamp())


@pytest.fixture
def store(db, clock):
    opened = open_store(db, replace(Config().policy(), lease_seconds=600, max_attempts=3, per_nvr=10, login_trials=10), Vault([TEST_KEY], "test"),
                        clock=clock)
    yield opened
    opened.close()


def manifest(task: int) -> list[dict]:
    return [{"path": f"{task:06d}-lobby/2026010100{m:02d}00-101.mp4", "size": 1000 + m, "sha256": f"{m:x}" * 64,
             "camera": "101", "camera_name": "Lobby", "start": f"2026-01-01T00:{m:02d}:00",
             "end": f"2026-01-01T00:{m + 10:02d}:00",
             "location": f"nas:cctv/{task:06d}-lobby/2026010100{m:02d}00-101.mp4" if m else None} for m in (0, 10)]


def run_story(store, clock) -> None:
    """Row 2: three chunks, one cancelled; row 3: done, nothing found; row 4: failed, requeued, then done; row 5: UTC."""
    store.add([spec(0, "r2", "lobby 2026-01-01 00:00", " (chunk 1/3)"), spec(1, "r2", "lobby 2026-01-01 01:00",
               " (chunk 2/3)"), spec(2, "r2", "lobby 2026-01-01 02:00", " (chunk 3/3)"), spec(3, "r3", "empty range"),
               spec(4, "r4", NAME), spec(5, "r5", "utc", start="2026-01-10T06:00:00+00:00",
                                          end="2026-01-10T07:00:00+00:00", timezone="auto")])
    leases = {}
    for _ in range(6):
        answer = store.claim("host-a/w0")
        leases[answer.task["id"]] = answer.lease["id"]
    clock.advance(10)
    store.fail(5, leases[5], "NVR 10.0.0.5:8000: download cut after 100 of 1000 bytes", permanent=True)
    store.complete(1, leases[1], {"files": 2, "bytes": 2021, "manifest": manifest(1)})
    store.complete(2, leases[2], {"files": 1, "bytes": 500})
    store.cancel(3, by="by an admin from 10.0.0.9")
    store.complete(4, leases[4], {"files": 0, "bytes": 0, "note": "the NVR lists no recordings"})
    clock.advance(3600)
    assert store.requeue([5]) == [5]
    clock.advance(60)
    again = store.claim("host-b/w1")
    assert again.task["id"] == 5
    clock.advance(45)
    store.complete(5, again.lease["id"], {"files": 3, "bytes": 3_000_000})


@pytest.mark.fast
def test_the_report_says_what_came_of_each_row_and_times_the_last_attempt(store, clock):
    run_story(store, clock)
    out = io.BytesIO()
    write_report(store, out)
    book = load_workbook(io.BytesIO(out.getvalue()))
    assert book.sheetnames == ["Rows", "NVRs", "Tasks", "Files"]

    rows = {line[0]: line for line in book["Rows"].iter_rows(min_row=2, values_only=True)}
    # Sheet row, name, NVR, tasks, done, nothing found, failed, cancelled, other, files, bytes, state
    assert rows["t.xlsx, sheet 'tasks', row 2"][1:] == ("lobby", "10.0.0.5:8000", 3, 2, 0, 0, 1, 0, 3, 2521,
                                                       "partly cancelled")
    assert rows["t.xlsx, sheet 'tasks', row 3"][1:] == ("empty range", "10.0.0.5:8000", 1, 1, 1, 0, 0, 0, 0, 0,
                                                       "done, nothing found")
    assert rows["t.xlsx, sheet 'tasks', row 4"][1] == NAME and rows["t.xlsx, sheet 'tasks', row 4"][-1] == "done"
    assert rows["t.xlsx, sheet 'tasks', row 5"][-1] == "in progress"
    fills = {row[0].value: row[-1].fill.start_color.rgb for row in book["Rows"].iter_rows(min_row=2)}
    assert fills["t.xlsx, sheet 'tasks', row 3"].endswith("BDD7EE")  # its own colour, not done's green
    assert fills["t.xlsx, sheet 'tasks', row 2"] != fills["t.xlsx, sheet 'tasks', row 5"]

    tasks = {line[0]: line for line in book["Tasks"].iter_rows(min_row=2, values_only=True)}
    header = [c.value for c in book["Tasks"][1]]
    column = {name: header.index(name) for name in header}
    assert tasks[4][column["State"]] == "done, nothing found"
    requeued = tasks[5]
    start = datetime(2027, 3, 1, 8, 0)
    # Attempts and Worker describe the attempt after the requeue, and so do its start and the time it took.
    assert (requeued[column["Attempts"]], requeued[column["Worker"]]) == (1, "host-b/w1")
    assert requeued[column["Last attempt started (UTC)"]] == start + timedelta(seconds=3670)
    assert requeued[column["Last attempt took"]] == timedelta(seconds=45)
    assert requeued[column["First attempt started (UTC)"]] == start
    assert requeued[column["From"]] == T0 + timedelta(hours=4)  # a date cell, not text
    utc = book["Tasks"].cell(row=7, column=column["From"] + 1)
    assert utc.value == datetime(2026, 1, 10, 6, 0) and utc.number_format.endswith('"UTC"')

    files = list(book["Files"].iter_rows(min_row=2, values_only=True))
    assert files == [(1, "10.0.0.5:8000", "host-a", f["path"], f["size"], f["sha256"], "101", "Lobby",
                      datetime.fromisoformat(f["start"]), datetime.fromisoformat(f["end"]), f["location"])
                     for f in manifest(1)]  # where an upload put it, if it was uploaded
    widths = {name: book["Tasks"].column_dimensions[chr(ord("A") + i)].width for name, i in column.items()}
    assert widths["NVR"] == len("10.0.0.5:8000") + 2  # as wide as the longest name in it ...
    assert widths["Name"] == 24 and book["Tasks"]["C6"].alignment.wrap_text  # ... within a cap; longer ones wrap
    for sheet in book:
        assert sheet.page_setup.orientation == "landscape" and sheet.page_setup.fitToWidth == 1
        assert sheet.print_title_rows == "$1:$1" and sheet.sheet_properties.pageSetUpPr.fitToPage


def test_every_sheet_prints_one_page_wide_on_landscape_a4_or_letter(store, clock, tmp_path):
    from pypdf import PdfReader

    office = shutil.which("soffice") or shutil.which("libreoffice")
    if office is None:
        pytest.skip("LibreOffice is not installed (apt-get install libreoffice-calc-nogui)")
    run_story(store, clock)
    store.add([spec(10 + n, f"r{10 + n}", f"{NAME} {n}") for n in range(40)])
    export(store, tmp_path / "report.xlsx")
    export(store, tmp_path / "letter.xlsx", "letter")  # --paper letter, for sites that print on US Letter
    converted = subprocess.run(
        [office, f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}", "--headless", "--convert-to", "pdf",
         "--outdir", str(tmp_path), str(tmp_path / "report.xlsx"), str(tmp_path / "letter.xlsx")],
        capture_output=True, text=True, timeout=180)
    assert converted.returncode == 0, converted.stderr
    letter = PdfReader(tmp_path / "letter.pdf").pages
    assert {(round(float(p.mediabox.width)), round(float(p.mediabox.height))) for p in letter} == {(792, 612)}
    pages = PdfReader(tmp_path / "report.pdf").pages
    seen = set()
    for page in pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        assert (round(width), round(height)) == (842, 595)  # A4, landscape
        text = page.extract_text()
        sheet = next(name for name in HEADERS if f"{name}, page " in text)
        seen.add(sheet)
        # A page printed "across" would lack the first or the last column: every page has both headers.
        first, last = HEADERS[sheet]
        assert first in text and last in text, (sheet, text[:300])
    assert seen == set(HEADERS)
    assert len(pages) < 12  # 4 sheets, one page wide each; the 46 tasks take a few pages down


@pytest.mark.fast
def test_a_dry_run_sheet_sizes_each_rows_export_per_camera_and_each_nvr(store, clock):
    """A dry run's row (chunked), another NVR's one, and a chunk that failed: per camera, per NVR, and what is missing."""
    store.add([spec(0, "list:r2", "dry run: yard", " (chunk 1/2)", mode="list", cameras=("101", "201")),
               spec(1, "list:r2", "dry run: yard", " (chunk 2/2)", mode="list", cameras=("101", "201")),
               spec(2, "list:r3", "dry run: gate", mode="list", server="10.0.0.6"),
               spec(3, "list:r4", "dry run: dock", mode="list", server="10.0.0.6"), spec(4, "r5", "real")])
    leases = {}
    for _ in range(5):
        answer = store.claim("host-a/w0")
        leases[answer.task["id"]] = answer.lease["id"]
    found = {1: {"101": (3, 3_000_000), "201": (1, 500_000)}, 2: {"101": (2, 2_000_000), "201": (0, 0)},
             3: {"101": (4, 7_000_000)}}
    for task, cameras in found.items():
        store.complete(task, leases[task], {"files": 0, "bytes": 0, "listing": {
            "recordings": sum(n for n, _ in cameras.values()), "bytes": sum(b for _, b in cameras.values()),
            "cameras": {c: {"recordings": n, "bytes": b} for c, (n, b) in cameras.items()}}})
    store.fail(4, leases[4], "NVR 10.0.0.6: unreachable", permanent=True)
    store.complete(5, leases[5], {"files": 2, "bytes": 10})
    out = io.BytesIO()
    write_report(store, out)
    book = load_workbook(io.BytesIO(out.getvalue()))
    assert book.sheetnames == ["Rows", "NVRs", "Tasks", "Files", "Dry run"]
    assert [c.value for c in book["Dry run"][1]] == ["Sheet row", "Name", "NVR", "Camera", "Recordings", "Bytes",
                                                     "Tasks not listed"]
    lines = list(book["Dry run"].iter_rows(min_row=2, values_only=True))
    assert lines == [
        ("t.xlsx, sheet 'tasks', row 2", "dry run: yard", "10.0.0.5:8000", "101", 5, 5_000_000, 0),
        ("t.xlsx, sheet 'tasks', row 2", "dry run: yard", "10.0.0.5:8000", "201", 1, 500_000, None),
        ("t.xlsx, sheet 'tasks', row 3", "dry run: gate", "10.0.0.6", "101", 4, 7_000_000, 0),
        ("t.xlsx, sheet 'tasks', row 4", "dry run: dock", "10.0.0.6", None, None, None, 1),  # failed: not listed
        ("NVR total", None, "10.0.0.5:8000", "all", 6, 5_500_000, 0),
        ("NVR total", None, "10.0.0.6", "all", 4, 7_000_000, 1)]
    assert book["Dry run"]["F2"].number_format == "#,##0" and book["Dry run"]["A6"].font.bold
    assert book["Dry run"].auto_filter.ref == "A1:G7"


@pytest.mark.fast
def test_a_report_without_dry_runs_has_no_dry_run_sheet(store, clock):
    run_story(store, clock)
    out = io.BytesIO()
    write_report(store, out)
    assert "Dry run" not in load_workbook(io.BytesIO(out.getvalue())).sheetnames
