"""The workbook reader gives every cell exactly as openpyxl's own reader does, and reads nothing else.

The reader takes the common cells (numbers, dates, shared and inline strings,
booleans) itself, for speed, and hands every other cell to openpyxl; workbooks
made by openpyxl in both of its modes and by hand are read both ways and must
agree cell for cell.
"""
from __future__ import annotations

import subprocess
import zipfile
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook

from taskserver.errors import SheetError
from taskserver.sheetfiles import open_table

from .harness import PYTHON
from .test_sheet_hostile import NS, PARTS

pytestmark = pytest.mark.fast


def ours(path: Path) -> dict[tuple[int, int], tuple[object, str]]:
    with open_table(path) as table:
        return {(r, c): (cell.value, cell.data_type) for r, cells in table.rows(1, None)
                for c, cell in enumerate(cells, 1) if cell.value is not None or cell.data_type != "n"}


def openpyxl_own(path: Path) -> dict[tuple[int, int], tuple[object, str]]:
    sheet = load_workbook(path, read_only=True).worksheets[0]
    sheet.reset_dimensions()  # read every row the file holds, whatever size it declares
    return {(cell.row, cell.column): (cell.value, cell.data_type) for row in sheet.iter_rows() for cell in row
            if hasattr(cell, "column") and (cell.value is not None or cell.data_type != "n")}


# Text with what trips readers: surrounding and inner spaces, line breaks, XML's special characters,
# characters outside the BMP, text that looks like a number or a date.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00\r",
                              max_codepoint=0x1F600).filter(lambda c: c == "\n" or c == "\t" or ord(c) >= 32),
                max_size=30) | st.sampled_from([" 101 ", "101,201", "01.03.2026 08:00", "&<>\"'", "1e20", ""])
values = (st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
          | texts | st.datetimes(datetime(1900, 3, 1), datetime(2100, 1, 1)).map(lambda d: d.replace(microsecond=0))
          | st.dates(date(1900, 3, 1), date(2100, 1, 1)) | st.times().map(lambda t: t.replace(microsecond=0))
          | st.timedeltas(timedelta(0), timedelta(days=3)).map(lambda d: timedelta(seconds=int(d.total_seconds()))))
sheets = st.lists(st.lists(values, max_size=8), min_size=1, max_size=6)


def write(path: Path, rows: list[list], write_only: bool) -> Path:
    workbook = Workbook(write_only=write_only)
    sheet = workbook.create_sheet("tasks") if write_only else workbook.active
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=sheets, write_only=st.booleans())
def test_every_cell_reads_as_openpyxl_reads_it(tmp_path, rows, write_only):
    path = write(tmp_path / f"t{write_only:d}.xlsx", rows, write_only)
    assert ours(path) == openpyxl_own(path)


def by_hand(path: Path, sheet_xml: bytes, strings: bytes = b"", styles: bytes | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in PARTS.items():
            archive.writestr(name, text)
        archive.writestr("xl/worksheets/sheet1.xml", sheet_xml)
        archive.writestr("xl/sharedStrings.xml", b"<sst " + NS + b">" + strings + b"</sst>")
        if styles is not None:
            archive.writestr("xl/styles.xml", styles)
    return path


DATE_STYLE = (b'<styleSheet ' + NS + b'><numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd hh:mm"/>'
              b'</numFmts><cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="164" applyNumberFormat="1"/>'
              b'<xf numFmtId="46" applyNumberFormat="1"/></cellXfs></styleSheet>')
UNUSUAL = (
    b'<row r="1"><c r="A1" t="inlineStr"><is><r><t>rich </t></r><r><rPr><b/></rPr><t>text</t></r></is></c>'
    b'<c r="B1" t="inlineStr"><is><t>base</t><rPh sb="0" eb="1"><t>reading</t></rPh></is></c>'
    b'<c r="C1"><f>1+1</f><v>2</v></c><c r="D1" t="e"><v>#N/A</v></c><c r="E1" t="d"><v>2026-03-01T08:00:00</v></c>'
    b'<c r="F1" t="str"><v>formula text</v></c><c r="G1"><v/></c><c r="H1" t="s"><v>0</v></c><c r="I1" s="2"/>'
    b'<c r="J1" t="inlineStr"/><c r="K1" t="inlineStr"><is><t xml:space="preserve">  spaced  </t></is></c>'
    b'<c r="L1" t="b"><v>1</v></c><c r="AA1"><v>1.5</v></c><c r="XFD1"><v>7</v></c></row>'
    b'<row r="3"><c r="b3"><v>3</v></c><c><v>4</v></c><c r="D3"><v>5</v></c><c><v>6</v></c></row>'
    b'<row><c r="A4" s="1"><v>46082.3333333333</v></c><c r="B4" s="2"><v>1.25</v></c>'
    b'<c r="C4" s="1"><v>99999999</v></c><c r="D4" s="1"><v>-5</v></c></row>'
    b'<row r="6" spans="1:2" ht="20" customHeight="1"><c r="A6" t="n"><v>101201</v></c>'
    b'<c r="B6" t="s"><v>1</v></c></row>'
)


def test_unusual_cells_go_through_openpyxl_and_read_the_same(tmp_path):
    sheet = b"<worksheet " + NS + b"><sheetData>" + UNUSUAL + b"</sheetData></worksheet>"
    path = by_hand(tmp_path / "t.xlsx", sheet, b"<si><t>shared</t></si><si><r><t>two </t></r><r><t>runs</t></r></si>")
    with zipfile.ZipFile(path, "a") as archive:  # a date style and a duration style
        archive.writestr("xl/styles.xml", DATE_STYLE)
    expected = openpyxl_own(path)
    assert ours(path) == expected
    # What the comparison covers: openpyxl's own readings of the unusual cells.
    assert expected[1, 1] == ("rich text", "s") and expected[1, 2] == ("base", "s")
    assert expected[1, 3] == ("=1+1", "f") and expected[1, 4] == ("#N/A", "e")
    assert expected[1, 11] == ("  spaced  ", "s") and expected[1, 16384] == (7, "n")
    assert expected[3, 2] == (3, "n") and expected[3, 4] == (5, "n")
    assert expected[4, 1] == (datetime(2026, 3, 1, 8, 0), "d") and expected[4, 2] == (timedelta(hours=30), "d")
    assert expected[4, 3][1] == "e"  # a date far beyond year 9999: an error cell, not a crash
    assert expected[6, 2] == ("two runs", "s")


def test_cells_that_rest_on_openpyxls_defaults_read_the_same(tmp_path):
    """A date format on style 0 (Excel's Normal style made a date), cells without a coordinate after one
    openpyxl must read itself, and blank formula-text cells."""
    normal_date = (b'<styleSheet ' + NS + b'><numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy-mm-dd"/>'
                   b'</numFmts><cellXfs count="1"><xf numFmtId="164" applyNumberFormat="1"/></cellXfs></styleSheet>')
    sheet = (b"<worksheet " + NS + b'><sheetData><row r="1"><c r="A1"><v>46082</v></c><c r="B1" s="0"><v>1</v></c>'
             b'</row><row r="2"><c><v>99999999</v></c><c><v>7</v></c><c t="str"/><c r="E2" t="str"><v/></c></row>'
             b"</sheetData></worksheet>")
    path = by_hand(tmp_path / "t.xlsx", sheet, styles=normal_date)
    expected = openpyxl_own(path)
    assert ours(path) == expected
    assert expected[1, 1] == (datetime(2026, 3, 1), "d") and expected[2, 2] == (datetime(1900, 1, 7), "d")
    assert expected[2, 1][1] == "e" and expected[2, 3] == (None, "str")


def test_a_damaged_shared_formula_is_a_clear_refusal(tmp_path):
    sheet = (b"<worksheet " + NS + b'><sheetData><row r="1"><c r="A1"><f t="shared" ref="A1:A2" si="0">A1+"</f>'
             b'<v>1</v></c></row><row r="2"><c r="A2"><f t="shared" si="0"/><v>1</v></c></row>'
             b"</sheetData></worksheet>")
    with pytest.raises(SheetError) as caught:
        ours(by_hand(tmp_path / "t.xlsx", sheet))
    assert "the workbook is damaged" in str(caught.value)


@pytest.mark.parametrize("part", ["xl/worksheets/sheet1.xml", "xl/styles.xml", "xl/sharedStrings.xml"])
def test_a_part_that_declares_a_dtd_is_refused_before_it_is_parsed(tmp_path, part):
    """Entities in attribute values are expanded whatever the parser is told: 3 KB would fill 2 GB."""
    dtd = f'<?xml version="1.0"?><!-- made by hand --><!DOCTYPE x [<!ENTITY a "{"a" * 100_000}">]>'.encode()
    cells = b"".join(b'<c r="A1" t="&a;"><v>1</v></c>' for _ in range(20_000))
    parts = {"xl/worksheets/sheet1.xml": b"<worksheet " + NS + b'><sheetData><row r="1"><c r="A1"><v>1</v></c>'
                                         b"</row></sheetData></worksheet>",
             "xl/sharedStrings.xml": b"<sst " + NS + b"/>"}
    root = {"xl/worksheets/sheet1.xml": b"<worksheet " + NS + b'><sheetData><row r="1">' + cells
            + b"</row></sheetData></worksheet>",
            "xl/styles.xml": b"<styleSheet " + NS + b'><cellXfs count="1"><xf numFmtId="&a;"/></cellXfs></styleSheet>',
            "xl/sharedStrings.xml": b"<sst " + NS + b'><si><t a="&a;">x</t></si></sst>'}[part]
    parts[part] = dtd + root
    path = tmp_path / "t.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in PARTS.items():
            archive.writestr(name, text)
        for name, text in parts.items():
            archive.writestr(name, text)
    assert path.stat().st_size < 5000
    with pytest.raises(SheetError) as caught:
        ours(path)
    assert f"part '{part}' declares a DTD, which spreadsheets never write" in str(caught.value)


@pytest.mark.parametrize("encoding", ["utf-32", "utf-32-be", "cp500"])
def test_a_part_in_an_encoding_the_dtd_check_cannot_read_is_refused(tmp_path, encoding):
    """libxml2 reads UTF-32 and EBCDIC too; a DTD hidden that way must not slip past the check."""
    xml = (f'<?xml version="1.0" encoding="{encoding}"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
           f'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t a="&a;">x</t></si></sst>')
    path = tmp_path / "t.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in PARTS.items():
            archive.writestr(name, text)
        archive.writestr("xl/worksheets/sheet1.xml", b"<worksheet " + NS + b"><sheetData/></worksheet>")
        archive.writestr("xl/sharedStrings.xml", xml.encode(encoding))
    with pytest.raises(SheetError) as caught:
        ours(path)
    assert "part 'xl/sharedStrings.xml' is not XML in UTF-8 or UTF-16" in str(caught.value)


@pytest.mark.parametrize("attack", ["file", "billion laughs"])
def test_a_sheet_cannot_read_files_or_expand_entities(tmp_path, attack):
    secret = tmp_path / "secret.txt"
    secret.write_text("the-secret-content")
    entities = (f'<!ENTITY x SYSTEM "file://{secret}">' if attack == "file" else
                '<!ENTITY a "aaaaaaaaaa">' + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">'
                                                    for i in range(9)) + '<!ENTITY x "&j;">')
    sheet = (f'<?xml version="1.0"?><!DOCTYPE worksheet [{entities}]>'.encode() + b"<worksheet " + NS
             + b'><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>before &x; after</t></is></c></row>'
             b"</sheetData></worksheet>")
    path = by_hand(tmp_path / "t.xlsx", sheet)
    with pytest.raises(SheetError) as caught:
        ours(path)
    assert "declares a DTD, which spreadsheets never write" in str(caught.value)


def test_a_damaged_part_is_named_not_a_traceback(tmp_path):
    sheet = b"<worksheet " + NS + b'><sheetData><row r="1"><c r="A1"><v>1</v></c></row><row r="2"><c'
    with pytest.raises(SheetError) as caught:
        ours(by_hand(tmp_path / "t.xlsx", sheet))
    assert str(caught.value).startswith("t.xlsx, sheet 'tasks': the workbook is damaged (XMLSyntaxError)")
    good = b"<worksheet " + NS + b'><sheetData><row r="1"><c r="A1"><v>1</v></c></row></sheetData></worksheet>'
    with pytest.raises(SheetError) as caught:
        ours(by_hand(tmp_path / "s.xlsx", good, styles=b"<styleSheet " + NS + b"><cellXfs"))
    assert str(caught.value).startswith("s.xlsx: not an Excel .xlsx workbook (XMLSyntaxError)")


def test_the_reader_keeps_one_row_whatever_the_sheet_length(tmp_path):
    """Rows leave the tree once read: 300,000 rows read in the memory of 3,000 (the XML tree is lxml's, in C)."""
    def peak_mb(rows: int) -> float:
        body = b"".join(b'<row r="%d"><c r="A%d"><v>%d</v></c><c r="B%d" t="inlineStr"><is><t>x</t></is></c></row>'
                        % (n, n, n, n) for n in range(1, rows + 1))
        path = by_hand(tmp_path / f"r{rows}.xlsx", b"<worksheet " + NS + b"><sheetData>" + body
                       + b"</sheetData></worksheet>")
        # The peak of the reading process's own memory (VmHWM: ru_maxrss would count this process's, forked).
        script = ("import sys; from pathlib import Path; from taskserver.sheetfiles import open_table\n"
                  "with open_table(Path(sys.argv[1])) as table: n = sum(1 for _ in table.rows(1, None))\n"
                  "print(n, next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))")
        done = subprocess.run([PYTHON, "-c", script, str(path)], capture_output=True, text=True, check=True)
        count, kib = map(int, done.stdout.split())
        assert count == rows
        return kib / 1024

    assert peak_mb(300_000) < peak_mb(3_000) + 15  # kept rows would take about 40 MB more
