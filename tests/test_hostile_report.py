"""Names from the sheet and texts from workers and NVRs end up in the Excel report: whatever they hold, the
report is written, opens, and shows them as text; nothing in it is a formula."""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
import sqlite3
import subprocess
import zipfile

import pytest

from .harness import HEADER, PYTHON, T, api, start_coordinator, write_sheet

NAMES = [" =HYPERLINK(\"http://evil.example\",\"open\")", "\n=1+1", "plain"]
ERRORS = ["=1+1", "+1+1", "-1+1", "@SUM(1,1)", "\x1b[31mexport failed\x1b[0m: disk\x00 full\x07"]


def test_hostile_texts_and_figures_reach_the_report_as_inert_text(procs, tmp_path):
    # The sheet refuses formula-like names; these stand for what an older version, or a write past the
    # checks, left in the database: they are put there directly once the tasks are queued.
    rows = [[f"10.5.0.{n}", "admin", "Rep-pw-1", 101, T, T.replace(hour=1), f"name {n}"] for n in range(len(NAMES))]
    rows += [[f"10.5.1.{n}", "admin", "Rep-pw-1", 101, T, T.replace(hour=1), f"fails {n}"] for n in range(len(ERRORS))]
    db = tmp_path / "ts.db"
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db, "--max-attempts", "1")
    url = coordinator.url
    with sqlite3.connect(db) as conn:
        for n, name in enumerate(NAMES):
            conn.execute("UPDATE tasks SET name = ? WHERE id = ?", (name, n + 1))
    for n in range(len(NAMES) + len(ERRORS)):
        answer = api(url, path="/api/claim?worker=w1").json()
        task_id, lease = answer["task"]["id"], answer["lease"]["id"]
        if n < len(NAMES):
            body = {"lease": lease, "result": {"files": 3, "bytes": 3000}}
            assert api(url, "POST", f"/api/tasks/{task_id}/complete", json=body).status_code == 200
        else:
            body = {"lease": lease, "error": ERRORS[n - len(NAMES)]}
            assert api(url, "POST", f"/api/tasks/{task_id}/fail", json=body).json()["state"] == "failed"
    # A result whose figures are text, and a name full of control characters, as an older version may have stored.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tasks SET result = ?, name = ? WHERE id = 3",
                     (json.dumps({"files": "7", "bytes": [1]}), "\x1b[1mplain\x00\x1b[0m\x0b"))

    report = api(url, path="/api/report.xlsx")
    assert report.status_code == 200
    (tmp_path / "report.xlsx").write_bytes(report.content)
    exported = subprocess.run([PYTHON, "-m", "taskserver", "export", str(tmp_path / "cli.xlsx"), "--db", str(db)],
                              capture_output=True, text=True, timeout=60)
    assert exported.returncode == 0, exported.stderr

    with zipfile.ZipFile(tmp_path / "report.xlsx") as book:
        sheets = {name: book.read(name).decode() for name in book.namelist() if name.startswith("xl/worksheets/")}
    assert sheets and not any(re.search(r"<f[ >]", xml) for xml in sheets.values())  # no formula anywhere
    tasks_xml = max(sheets.values(), key=len)
    for text in ("=1+1", "+1+1", "-1+1", "@SUM(1,1)", "export failed: disk\ufffd full", "=HYPERLINK("):
        assert text in html.unescape(tasks_xml), text
    assert "\x1b" not in tasks_xml and "\x00" not in tasks_xml and "\x07" not in tasks_xml

    office = shutil.which("soffice") or shutil.which("libreoffice")
    if office is None:
        pytest.skip("LibreOffice is not installed (apt-get install libreoffice-calc-nogui)")
    # Every sheet to CSV, showing values as LibreOffice computed them: a live formula would show its result.
    every_sheet = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,-1"
    converted = subprocess.run(
        [office, f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}", "--headless", "--convert-to", every_sheet,
         "--outdir", str(tmp_path / "csv"), str(tmp_path / "report.xlsx")], capture_output=True, text=True,
        timeout=120)
    assert converted.returncode == 0, converted.stderr
    with open(tmp_path / "csv" / "report-Tasks.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    by_id = {int(row["Task"]): row for row in table}
    assert [by_id[n]["Name"] for n in (1, 2)] == [NAMES[0], NAMES[1]]  # kept as text, as they were stored
    assert by_id[3]["Name"] == "plain" and by_id[3]["Files"] == "" and by_id[3]["Bytes"] == ""
    assert [by_id[n]["Last error"] for n in range(4, 8)] == ERRORS[:4]
    assert by_id[8]["Last error"] == "export failed: disk\ufffd full"  # the NUL was replaced on arrival
    assert by_id[1]["Files"] == "3" and by_id[1]["Bytes"] == "3000"
