"""Sheets made by LibreOffice in a Russian and a German locale, as CCTV engineers make them.

A camera list is typed as a CSV, opened in Calc with the language of the person's
desktop, and saved as .xlsx. Calc turns some cells into numbers with that
language's decimal and thousands separators, and may turn dates into date cells:
each kind of mangled cell must be refused with its cause, never imported as
something else, and every cell Calc kept as typed must be read as meant.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from taskserver.errors import SheetError
from taskserver.sheet import load_sheet

from .harness import PYTHON

HEADER = "server,username,password,cameras,starttime,endtime,name\n"
GOOD = HEADER + (
    "10.0.0.5,viewer,12345,101;201,01.03.2026 00:00,01.03.2026 02:00,dotted dates\n"
    "10.0.0.5,admin,pw,101/201,13/3/2026 0:00,14/3/2026 0:00,slashed dates with the day above 12\n"
    "10.0.0.5,admin,pw,101,2026-03-01,2026-03-02,ISO dates\n"
    "10.0.0.5,admin,pw,1201,01.03.2026,02.03.2026,dotted dates without a time\n"
)
BAD = HEADER + (
    '10.0.0.5,admin,pw,"101,201",2026-03-01,2026-03-02,a comma between tracks\n'
    "10.0.0.5,admin,pw,101 201,2026-03-01,2026-03-02,a space between tracks\n"
    "10.0.0.5,admin,pw,101.201,2026-03-01,2026-03-02,a dot between tracks\n"
    "10.0.0.5,admin,pw,101,1/3/2026 0:00,2026-03-02,day or month first?\n"
    "10.0.0.5,admin,pw,101,01.03.2026 00:00,31.02.2026,no such day\n"
)
# Calc's CSV filter options: separator ',', quote '"', UTF-8, from line 1, standard columns, the language
# (a Windows language id: 1049 Russian, 1031 German), quoted fields as text, detect special numbers
# (dates and times written the language's way become date cells).
LOCALES = {"ru": "44,34,76,1,,1049,false,false", "de": "44,34,76,1,,1031,false,true"}

DECIMAL = ("the cell holds the number 101.201, not a list of tracks: the spreadsheet took the comma or dot between"
           " tracks for a decimal sign")
THOUSANDS = ("the cell holds the number 101201, more digits than a track id (channel × 100 + stream, at most 5"
             " digits): the spreadsheet took the space, dot or comma between tracks for a thousands separator")
HINT = "Format the cameras column as text before typing, or separate tracks with ';' or '/' (101;201)"
AMBIGUOUS = ("'1/3/2026 0:00' could be 1 March 2026 (day first) or 3 January 2026 (month first); write it as"
             " 2026-03-01 00:00 (year-month-day) or 01.03.2026 00:00 (day.month.year)")
NOT_REAL = "'31.02.2026' is not a real date-time; accepted forms: 2026-03-01 08:00 (year-month-day)"


@pytest.fixture(scope="module")
def calc(tmp_path_factory):
    """good.xlsx and bad.xlsx as Calc saves them, one folder per locale: one Calc run per locale."""
    office = shutil.which("soffice") or shutil.which("libreoffice")
    if office is None:
        pytest.skip("LibreOffice is not installed (apt-get install libreoffice-calc-nogui)")
    base = tmp_path_factory.mktemp("calc")
    (base / "good.csv").write_text(GOOD)
    (base / "bad.csv").write_text(BAD)
    folders = {}
    for locale, options in LOCALES.items():
        out = base / locale
        made = subprocess.run(
            [office, f"-env:UserInstallation=file://{base / ('profile-' + locale)}", "--headless",
             f"--infilter=CSV:{options}", "--convert-to", "xlsx", "--outdir", str(out),
             str(base / "good.csv"), str(base / "bad.csv")], capture_output=True, text=True, timeout=180)
        assert made.returncode == 0 and (out / "bad.xlsx").exists(), made.stderr
        folders[locale] = out
    return folders


@pytest.mark.parametrize("locale", LOCALES)
def test_cells_calc_kept_as_typed_are_read_as_meant(calc, locale):
    specs = load_sheet(calc[locale] / "good.xlsx")
    assert [(s.password, s.cameras, s.start, s.end) for s in specs] == [
        ("12345", ("101", "201"), "2026-03-01T00:00:00", "2026-03-01T02:00:00"),
        ("pw", ("101", "201"), "2026-03-13T00:00:00", "2026-03-14T00:00:00"),
        ("pw", ("101",), "2026-03-01T00:00:00", "2026-03-02T00:00:00"),
        ("pw", ("1201",), "2026-03-01T00:00:00", "2026-03-02T00:00:00"),
    ]


EXPECTED = {
    "ru": [  # ',' is the decimal sign, a space separates thousands, '.' means nothing to a number
        ("row 2, column D (cameras)", f"{DECIMAL} (a language setting of the spreadsheet). {HINT}"),
        ("row 3, column D (cameras)", f"{THOUSANDS} (a language setting of the spreadsheet). {HINT}"),
        ("row 4, column D (cameras)", "camera '101.201' is not a track id (channel × 100 + stream 1-3: 101 is"
         " channel 1's main stream, 102 its sub-stream; empty for all cameras); separate tracks with ';' or '/'"
         " (101;201)"),
        ("row 5, column E (starttime)", AMBIGUOUS),
        ("row 6, column F (endtime)", NOT_REAL),
    ],
    "de": [  # ',' is the decimal sign, '.' separates thousands; the space-separated list stays text
        ("row 2, column D (cameras)", f"{DECIMAL} (a language setting of the spreadsheet). {HINT}"),
        ("row 4, column D (cameras)", f"{THOUSANDS} (a language setting of the spreadsheet). {HINT}"),
        ("row 5, column E (starttime)", AMBIGUOUS),
        ("row 6, column F (endtime)", NOT_REAL),
    ],
}


@pytest.mark.parametrize("locale", LOCALES)
def test_cells_calc_mangled_are_refused_with_the_cause_and_the_remedy(calc, locale):
    with pytest.raises(SheetError) as caught:
        load_sheet(calc[locale] / "bad.xlsx")
    found = [str(p) for p in caught.value.problems]
    assert len(found) == len(EXPECTED[locale]), found
    for problem, (where, message) in zip(found, EXPECTED[locale], strict=True):
        assert problem.startswith(f"bad.xlsx, sheet 'bad', {where}: {message}"), problem


def test_import_of_a_mangled_sheet_queues_nothing_and_says_why(calc, tmp_path):
    result = subprocess.run([PYTHON, "-m", "taskserver", "import", str(calc["ru"] / "bad.xlsx"), "--db",
                             str(tmp_path / "ts.db")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "5 problem(s) in the task sheet; nothing was imported:" in result.stderr
    assert f"bad.xlsx, sheet 'bad', row 3, column D (cameras): {THOUSANDS}" in result.stderr
    assert "Traceback" not in result.stderr
