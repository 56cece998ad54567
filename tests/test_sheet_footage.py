"""The sheet's footage columns: window, content, record_type; checked like every cell, carried to the worker."""
from __future__ import annotations

import pytest

from taskserver.errors import SheetError
from taskserver.sheet import load_rows, load_sheet

from .harness import HEADER, T, write_sheet

pytestmark = pytest.mark.fast

ROW = ["10.0.0.5", "admin", "pw", "101", T, T.replace(hour=2), "Gate"]
COLUMNS = [*HEADER, "window", "content", "record_type"]


def test_footage_columns_reach_the_task_normalised_and_change_its_key(tmp_path):
    plain, asked = load_sheet(write_sheet(tmp_path / "t.xlsx", [ROW + [None] * 3, ROW + ["Exact", "Both",
                                                                                        "motion; Alarm"]], COLUMNS))
    assert dict(asked.options) == {"window": "exact", "content": "both", "record_type": "motion,alarm", "row": "3"}
    assert dict(plain.options) == {"row": "2"}  # the layout's {row}
    assert plain.key != asked.key  # the same footage asked differently is another task
    (again,) = load_sheet(write_sheet(tmp_path / "u.xlsx", [ROW], HEADER))
    assert again.key == plain.key  # and a row without the columns keeps the key it always had


def test_chunks_and_runs_carry_the_rows_name_for_the_layout():
    chunks = load_rows([{"server": "10.0.0.5", "username": "a", "password": "p", "cameras": "101", "start": T.isoformat(),
                         "end": T.replace(hour=2).isoformat(), "name": "Gate ../x", "chunk": "1h", "window": "device"}])
    assert [t.name for t in chunks] == ["Gate ../x cam 101 2026-01-01 00:00", "Gate ../x cam 101 2026-01-01 01:00"]
    assert {dict(t.options)["label"] for t in chunks} == {"Gate ../x"}
    assert len({t.key for t in chunks}) == 2


@pytest.mark.parametrize("column, value, message", [
    ("window", "half", "'half' is not a window: whole (stored files whole), device (the NVR cuts at a keyframe) or"
                       " exact (trimmed to the second)"),
    ("content", "audio", "'audio' is not a content: video, pictures or both"),
    ("record_type", "motion, vmd", "'vmd' is not a record type: all, or one or more of continuous, motion, alarm,"
                                   " manual, event (e.g. motion,alarm)"),
    ("record_type", "all, motion", "'all' is not a record type"),
    ("window", "exact\x00", "contains a control character (U+0000)"),
])
def test_a_bad_footage_cell_is_named_by_row_and_column(tmp_path, column, value, message):
    cells = {"window": None, "content": None, "record_type": None, column: value}
    path = write_sheet(tmp_path / "t.xlsx", [ROW + list(cells.values())], COLUMNS) if "\x00" not in value else None
    if path is None:  # openpyxl refuses to write a NUL: the API takes the same cells
        with pytest.raises(SheetError) as caught:
            values = [v.isoformat() if hasattr(v, "isoformat") else v for v in ROW + list(cells.values())]
            load_rows([dict(zip(COLUMNS, values, strict=True))])
        where = f"column {column}"
    else:
        with pytest.raises(SheetError) as caught:
            load_sheet(path)
        where = f"row 2, column {chr(ord('A') + COLUMNS.index(column))} ({column})"
    (problem,) = caught.value.problems
    assert where in str(problem) and message in str(problem), str(problem)
