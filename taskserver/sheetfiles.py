"""Task sheet files: .xlsx workbooks and .csv lists, opened safely, read as rows of cells.

A workbook is a zip of XML. Its directory, declared sizes and XML prologs are
checked before openpyxl reads a byte of it, so a small hostile file (a
decompression bomb, one huge shared string, millions of parts, entities declared
in a DTD) is refused at once instead of filling the coordinator's memory. The
sheet's rows are then streamed one at a time; both readers stop at a maximum row
count, so a long run of blank rows costs neither memory nor minutes.
"""
from __future__ import annotations

import csv
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.etree.ElementTree import ParseError

from lxml import etree
from openpyxl.formula.tokenizer import TokenizerError
from openpyxl.formula.translate import TranslatorError
from openpyxl.reader.excel import ExcelReader
from openpyxl.styles.stylesheet import apply_stylesheet
from openpyxl.utils.cell import column_index_from_string
from openpyxl.utils.datetime import from_excel
from openpyxl.worksheet._reader import INLINE_STRING, ROW_TAG, VALUE_TAG, WorkSheetParser, _cast_number
from openpyxl.xml.constants import SHEET_MAIN_NS

from .cells import Cell
from .errors import SheetError, SheetProblem

MiB = 2**20
MAX_FILE_BYTES = 64 * MiB  # an .xlsx or .csv file on disk
MAX_ROWS = 1_048_576  # rows read from one sheet: Excel's and LibreOffice's own maximum
MAX_PARTS = 1000  # files inside an .xlsx (a real workbook has a dozen or so)
MAX_WORKSHEET_BYTES = 256 * MiB  # one worksheet's XML, uncompressed (streamed; 100,000 rows take about 40 MiB)
MAX_PART_BYTES = 32 * MiB  # any other part, uncompressed (shared strings and styles are held in memory)
MAX_TOTAL_BYTES = 384 * MiB  # all parts together, uncompressed
MAX_RATIO = 100  # uncompressed / compressed for a part over 1 MiB; people's sheets compress 5-20 times
MAX_CSV_LINE = 65_536  # bytes in one line of a .csv file
PROLOG_BYTES = 65_536  # what may come before an XML part's first element (a real one: a line or two)
XML_PARTS = (".xml", ".rels", ".vml")  # the parts openpyxl parses as XML

OTHER_FORMATS = {".xls": "an Excel 97-2003 workbook", ".xlsb": "an Excel binary workbook",
                 ".ods": "an OpenDocument spreadsheet", ".numbers": "a Numbers spreadsheet",
                 ".xlt": "an Excel 97-2003 template", ".ots": "an OpenDocument template"}
SAVE_AS = "save it as an Excel workbook (.xlsx) or as CSV UTF-8 (.csv) and import that"
RESAVE = "open it in Excel or LibreOffice and save it again"
OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the container of .xls (and .doc) files
# What openpyxl may raise on a damaged workbook, while opening it or while streaming its rows.
DAMAGED = (zipfile.BadZipFile, zlib.error, ParseError, etree.LxmlError, TokenizerError, TranslatorError, KeyError,
           IndexError, ValueError, TypeError, AttributeError, EOFError, OSError, OverflowError, UnicodeError)


@contextmanager
def open_table(path: Path):
    """The task sheet at `path` as a table of rows; SheetError if it cannot be read safely."""
    name = path.name
    if not path.is_file():
        raise SheetError([SheetProblem(str(path), "file not found")])
    suffix = path.suffix.lower()
    if suffix in OTHER_FORMATS:
        _refuse(name, f"{OTHER_FORMATS[suffix]} ({suffix}) is not read: {SAVE_AS}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        _refuse(name, f"{size / MiB:,.0f} MiB; a task sheet may be at most {MAX_FILE_BYTES // MiB} MiB")
    with path.open("rb") as f:
        head = f.read(8)
    if head.startswith(OLE2):
        _refuse(name, f"this is an Excel 97-2003 (.xls) workbook, whatever its name says: {SAVE_AS}")
    if suffix == ".csv":
        table = CsvTable(path, name)
    elif suffix in (".xlsx", ".xlsm") or head.startswith(b"PK"):
        table = XlsxTable(path, name, size)
    else:
        _refuse(name, "not a task sheet: give an Excel workbook (.xlsx) or a CSV file (.csv)")
    try:
        yield table
    finally:
        table.close()


def _refuse(name: str, message: str, sheet: str | None = None, row: int | None = None):
    raise SheetError([SheetProblem(name, message, sheet, row)])


def _too_many_rows(name: str, sheet: str | None):
    _refuse(name, f"the sheet goes on past row {MAX_ROWS:,} (the most a spreadsheet holds); delete the rows"
            " below your tasks, or split the sheet", sheet)


class XlsxTable:
    """One worksheet of an .xlsx file: the one named 'tasks', else the first."""

    def __init__(self, path: Path, name: str, size: int):
        from openpyxl.utils.exceptions import InvalidFileException

        self.name = name
        self.reader = None
        try:
            check_zip(path, name, size)
            self.reader = _WorkbookReader(path)
            self.reader.read()
        except SheetError:
            self.close()
            raise
        except (InvalidFileException, *DAMAGED) as exc:
            self.close()
            _refuse(name, f"not an Excel .xlsx workbook ({type(exc).__name__})")
        sheets = self.reader.sheets
        if not sheets:
            self.close()
            _refuse(name, "the workbook holds no worksheet")
        self.title, self.part = next(((title, part) for title, part in sheets if title.strip().lower() == "tasks"),
                                     sheets[0])

    def first_row(self) -> list | None:
        """Row 1's cells ([] if row 1 is blank), or None for an empty sheet."""
        rows = self.rows(1, None)
        try:
            first = next(rows, None)
        finally:
            rows.close()
        if first is None:
            return None
        return list(first[1]) if first[0] == 1 else []

    def rows(self, start: int, width: int | None) -> Iterator[tuple[int, list]]:
        """(row number, cells) of the rows written in the file from row `start` on, `width` cells each.

        Rows missing from the file are blank and not yielded at all, so a gap of
        millions of rows costs nothing.
        """
        workbook = self.reader.wb
        try:
            with self.reader.archive.open(self.part) as source:
                parser = _RowParser(source, self.reader.shared_strings, data_only=False, epoch=workbook.epoch,
                                    date_formats=workbook._date_formats,
                                    timedelta_formats=workbook._timedelta_formats)
                for rownum, found in parser.parse():
                    if rownum > MAX_ROWS:
                        _too_many_rows(self.name, self.title)
                    if rownum < start:
                        continue
                    if not found:
                        yield rownum, []
                        continue
                    size = width or min(max((column for column, _, _ in found), default=0), 16_384)
                    cells = [_EMPTY] * size
                    for column, value, data_type in found:
                        if 1 <= column <= size:
                            cells[column - 1] = Cell(value, data_type)
                    yield rownum, cells
        except DAMAGED as exc:
            _refuse(self.name, f"the workbook is damaged ({type(exc).__name__}); open it in Excel or LibreOffice"
                    " and save it again", self.title)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.archive.close()


_EMPTY = Cell(None, "n")


class _WorkbookReader(ExcelReader):
    """openpyxl's workbook reader, up to the list of sheets: names, shared strings, date styles.

    openpyxl's read-only worksheets are not used: opening one reads the whole
    sheet, keeping every element, whenever the sheet does not state its size at
    the top (openpyxl's own write-only workbooks do not).
    """

    def __init__(self, path: Path):
        super().__init__(str(path), read_only=True, data_only=False)

    def read(self) -> None:
        self.read_manifest()
        self.read_strings()
        self.read_workbook()
        apply_stylesheet(self.archive, self.wb)
        self.sheets = [(sheet.name, rel.target) for sheet, rel in self.parser.find_sheets()
                       if rel.target in self.valid_files and "chartsheet" not in rel.Type]


class _RowParser(WorkSheetParser):
    """openpyxl's worksheet parser without what it keeps per row.

    openpyxl's own read-only pass leaves every row it read in the XML tree and
    keeps the attributes of formatted rows, so a sheet of millions of blank rows
    would fill memory. Here each row leaves the tree once read, and only cells
    are kept: memory stays that of one row whatever the sheet's length.

    lxml hands over row elements only (the standard library's parser would hand
    every element's start and end to Python, half of the reading time); like
    openpyxl's own lxml parser, it resolves no entity and loads no DTD, and a part
    that declares a DTD never reaches it (check_zip refuses it first).
    """

    def parse(self):
        rows = etree.iterparse(self.source, events=("end",), tag=ROW_TAG, resolve_entities=False, load_dtd=False,
                               no_network=True, huge_tree=False, remove_comments=True, remove_pis=True)
        for _, element in rows:
            yield self.parse_row(element)
            element.clear(keep_tail=False)
            for node in (element, *element.iterancestors()):  # what was read before this row leaves the tree
                while node.getprevious() is not None:  # (rows, and whatever a hostile sheet wraps them in)
                    del node.getparent()[0]

    def parse_row(self, row):
        number = row.get("r")
        self.row_counter = int(number) if number is not None else self.row_counter + 1
        self.col_counter = 0
        return self.row_counter, [self.parse_cell(cell) for cell in row]

    def parse_cell(self, element) -> tuple[int, object, str]:
        """(column, value, type) of one cell, as openpyxl reads it.

        The cells a task sheet is made of (a number, a date, a shared or inline
        string, a boolean) are read here directly: openpyxl builds a rich-text
        object for every inline string and parses every coordinate, which made
        reading the sheet take as long as checking it. Any other cell (a formula,
        an error, an ISO date, rich text, a malformed coordinate) goes through
        openpyxl's own parser.
        """
        kind = element.get("t", "n")
        column = None
        if not len(element) and kind in _SIMPLE and kind != "inlineStr":  # a blank cell with a format
            column = self._column(element.get("r"))
            if column:
                return column, None, kind
        elif len(element) == 1 and kind in _SIMPLE:
            child = element[0]
            if kind == "inlineStr":
                if child.tag == INLINE_STRING and len(child) == 1 and child[0].tag == _TEXT_TAG and not len(child[0]):
                    column = self._column(element.get("r"))
                    if column:
                        return column, child[0].text or "", "s"
            elif child.tag == VALUE_TAG:
                column = self._column(element.get("r"))
                value = child.text
                if column and not value:
                    return column, None, kind
                if column and kind == "n":
                    style = element.get("s", 0)  # none given: style 0, which may be a date format too
                    style = int(style) if style else style
                    number = _cast_number(value)
                    if style not in self.date_formats:
                        return column, number, "n"
                    try:
                        return column, from_excel(number, self.epoch, timedelta=style in self.timedelta_formats), "d"
                    except (OverflowError, ValueError):
                        pass  # openpyxl's parser below makes it an error cell, with its warning
                elif column and kind == "s":
                    return column, self.shared_strings[int(value)], "s"
                elif column and kind == "str":
                    return column, value, "s"
                elif column and kind == "b":
                    return column, bool(int(value)), "b"
        if column is not None and element.get("r") is None:
            self.col_counter -= 1  # openpyxl's parser counts this cell's column again
        cell = super().parse_cell(element)
        return cell["column"], cell["value"], cell["data_type"]

    def _column(self, coordinate: str | None) -> int | None:
        """The column of a cell coordinate such as "B12"; None when openpyxl's parser should see it."""
        if coordinate is None:
            self.col_counter += 1
            return self.col_counter
        letters = coordinate.rstrip("0123456789")
        column = _COLUMNS.get(letters)
        if column is None and letters.isascii() and letters.isupper():
            try:  # openpyxl's own table (A to XFD); remembered here, where a lookup costs least
                column = _COLUMNS[letters] = column_index_from_string(letters)
            except ValueError:
                return None
        if column is None or len(letters) == len(coordinate):
            return None
        self.col_counter = column
        return column


_SIMPLE = frozenset(("n", "s", "str", "b", "inlineStr"))
_TEXT_TAG = f"{{{SHEET_MAIN_NS}}}t"
_COLUMNS: dict[str, int] = {}  # column letters seen so far, and their numbers


def check_zip(path: Path, name: str, size: int) -> None:
    """Refuse a workbook whose parts would take too much memory or time to read.

    The directory's size is read from its end record first, because zipfile holds
    the whole directory in memory; then each part's declared size, which is also
    the most that zipfile will ever inflate it to (it stops there and fails the CRC).
    """
    with path.open("rb") as f:
        tail_size = min(size, 22 + 65_535)
        f.seek(size - tail_size)
        tail = f.read(tail_size)
    end = tail.rfind(b"PK\x05\x06")
    if end < 0 or len(tail) - end < 22:
        _refuse(name, "not an Excel .xlsx workbook (BadZipFile)")
    entries, directory = struct.unpack("<HI", tail[end + 10:end + 16])
    zip64 = end >= 20 and tail[end - 20:end - 16] == b"PK\x06\x07"
    if zip64 or entries > MAX_PARTS or directory > MAX_PARTS * 1024:
        _refuse(name, f"the workbook holds more than {MAX_PARTS} parts; this is not a task sheet")
    with zipfile.ZipFile(path) as archive:
        parts = archive.infolist()
        if len(parts) > MAX_PARTS:
            _refuse(name, f"the workbook holds {len(parts):,} parts, at most {MAX_PARTS} are accepted")
        mimetype = next((part for part in parts if part.filename == "mimetype"), None)
        if mimetype and mimetype.file_size < 100 and archive.read(mimetype).startswith(b"application/vnd.oasis"):
            _refuse(name, f"this is an OpenDocument spreadsheet (.ods), whatever its name says: {SAVE_AS}")
        total = 0
        for part in parts:
            _check_part(part, name)
            total += part.file_size
        if total <= MAX_TOTAL_BYTES:
            for part in parts:
                if part.filename.lower().endswith(XML_PARTS):
                    _check_prolog(archive, part, name)
    if total > MAX_TOTAL_BYTES:
        _refuse(name, f"the workbook would unpack to {total / MiB:,.0f} MiB, more than the"
                f" {MAX_TOTAL_BYTES // MiB} MiB accepted")


def _check_part(part: zipfile.ZipInfo, name: str) -> None:
    sheet = part.filename.startswith("xl/worksheets/")
    limit = MAX_WORKSHEET_BYTES if sheet else MAX_PART_BYTES
    what = f"part {part.filename[:80]!r}"
    if part.file_size > limit:
        _refuse(name, f"{what} would unpack to {part.file_size / MiB:,.0f} MiB, more than the {limit // MiB} MiB"
                " accepted; this is not a task sheet a person made")
    if part.file_size > MiB and part.file_size > MAX_RATIO * max(part.compress_size, 1):
        _refuse(name, f"{what} unpacks {part.file_size // max(part.compress_size, 1):,} times larger than it is"
                " stored (a decompression bomb?); this is not a task sheet a person made")


def _check_prolog(archive: zipfile.ZipFile, part: zipfile.ZipInfo, name: str) -> None:
    """Refuse an XML part that declares a DTD, before any XML parser reads it.

    Excel and LibreOffice never write one. A DTD's entities would be expanded inside
    attribute values whatever the parser is told (a few kilobytes of workbook then
    fill gigabytes of memory), so the part is refused outright; what comes before its
    first element (declaration, comments, processing instructions) is all that is read.
    """
    with archive.open(part) as f:
        head = f.read(PROLOG_BYTES)
    utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff")) and not head.startswith(b"\xff\xfe\x00\x00")
    text = head.decode("utf-16" if utf16 else "utf-8", errors="ignore")
    start = text.lstrip("\ufeff \t\r\n")
    if "\x00" in text or (start and not start.startswith("<")):
        # UTF-32, EBCDIC and the like: an XML parser may still read them, this check could not
        _refuse(name, f"part {part.filename[:80]!r} is not XML in UTF-8 or UTF-16; {RESAVE}")
    at = 0
    while (at := text.find("<", at)) >= 0:
        if text.startswith(("<!DOCTYPE", "<!ENTITY"), at):
            _refuse(name, f"part {part.filename[:80]!r} declares a DTD, which spreadsheets never write; {RESAVE}")
        closing = "?>" if text.startswith("<?", at) else "-->" if text.startswith("<!--", at) else None
        if closing is None:
            return  # the first element: no DTD came before it
        end = text.find(closing, at)
        if end < 0:
            break
        at = end + len(closing)
    if len(head) >= PROLOG_BYTES:
        _refuse(name, f"part {part.filename[:80]!r} has no element in its first {PROLOG_BYTES // 1024} KiB; {RESAVE}")


class CsvTable:
    """A .csv file: UTF-8 with or without a byte order mark, fields separated by ',' or ';'.

    Excel and LibreOffice write ';' where the comma is the decimal sign, so the
    separator is whichever of the two splits the first line into more fields.
    Every field is text: a CSV file has no number cells for a locale to mangle.
    """

    title = None

    def __init__(self, path: Path, name: str):
        self.name = name
        self.line = 0
        self.first: list | None = None
        self.read = 0
        self.file = path.open("rb")
        try:
            first = self._line().removeprefix("\ufeff")
        except SheetError:
            self.file.close()
            raise
        delimiter = ","
        if first and len(next(csv.reader([first], delimiter=";"))) > len(next(csv.reader([first], delimiter=","))):
            delimiter = ";"
        self.records = csv.reader(self._lines(first), delimiter=delimiter)

    def _line(self) -> str:
        """The next line, decoded on its own so that an encoding error names its line."""
        raw = self.file.readline(MAX_CSV_LINE + 1)
        self.line += 1
        if len(raw) > MAX_CSV_LINE:
            _refuse(self.name, f"line {self.line} is longer than {MAX_CSV_LINE:,} bytes")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            _refuse(self.name, f"line {self.line} is not UTF-8 text (byte 0x{raw[exc.start]:02x}): save the file as"
                    " 'CSV UTF-8' (Excel) or with the character set Unicode (UTF-8) (LibreOffice)")

    def _lines(self, first: str) -> Iterator[str]:
        line = first
        while line:
            yield line
            line = self._line()

    def _next(self, width: int | None = None) -> list | None:
        try:
            record = next(self.records, None)
        except csv.Error as exc:
            _refuse(self.name, f"not a readable CSV line ({exc})", None, self.read + 1)
        if record is None:
            return None
        self.read += 1
        if self.read > MAX_ROWS:
            _too_many_rows(self.name, None)
        return [Cell(field) for field in record[:width]] if any(record) else []

    def first_row(self) -> list | None:
        if self.first is None and self.read == 0:
            self.first = self._next()
        return self.first

    def rows(self, start: int, width: int | None) -> Iterator[tuple[int, list]]:
        """(row number, cells) from row `start` on; a row is a CSV record, as a spreadsheet shows it."""
        self.first_row()
        if start == 1 and self.first is not None:
            yield 1, self.first
        while (cells := self._next(width)) is not None:
            yield self.read, cells

    def close(self) -> None:
        self.file.close()

