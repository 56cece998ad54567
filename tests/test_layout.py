"""The layout and the host's ledger, in process: safe names whatever the text, one owner per path."""
from __future__ import annotations

import multiprocessing
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from taskclient.errors import SetupError
from taskclient.layout import Layout, fields, place
from taskclient.ledger import Ledger

pytestmark = pytest.mark.fast

T = datetime(2026, 1, 1, 8, 6)


@pytest.mark.parametrize("template, message", [
    ("{camera}/{cam}", "unknown field {cam}"),
    ("{camera}/{start:%H}", "fields take no format"),
    ("{camera}/clip", "the file name (last part) needs a field"),
    ("/".join(["{camera}"] * 9), "give 1 to 8 path levels"),
    ("{camera", "--layout '{camera'"),
])
def test_a_layout_that_cannot_work_is_refused_at_start(template, message):
    with pytest.raises(SetupError) as refused:
        Layout.parse(template)
    assert message in str(refused.value)


@pytest.mark.parametrize("hostile, safe", [
    ("../../etc/cron.d", "etc_cron.d"),
    ("/etc/passwd", "etc_passwd"),
    ("C:\\Windows\\system32", "C_Windows_system32"),
    ("CON", "_CON"),
    ("nul.txt", "_nul.txt"),
    ("a\x00b\x1b[31mc\n", "a_b_31mc"),
    ("..", "_"),
    ("Caméra Entrée 東門", "Caméra_Entrée_東門"),
])
def test_names_from_the_sheet_and_the_nvr_become_one_safe_level_each(tmp_path, hostile, safe):
    layout = Layout.parse("{nvr_label}/{camera_name}/{start}")
    values = fields("10.0.0.5:80", hostile, "101", hostile, T, T, "2", 7, "video")
    stem = layout.stem(values)
    assert stem == f"{safe}/{safe}/080600"
    path = place(tmp_path, stem, ".ps")
    assert tmp_path.resolve() in path.parents and path.name == "080600.ps"


def test_long_names_are_cut_and_the_default_groups_by_nvr_camera_and_day(tmp_path):
    stem = Layout.parse(None).stem(fields("https-nvr:443", "x", "201", "D" * 300, T, T.replace(minute=8), "2", 7,
                                          "video"))
    nvr, camera, day, name = stem.split("/")
    assert (nvr, day) == ("https-nvr_443", "2026-01-01") and len(camera) == 80 and len(name) <= 80
    assert name.endswith("_2026-01-01_080600-080800")  # the name is shortened, never the times
    # Letters outside the BMP take 4 bytes each: a level stays within what filesystems take (255 bytes),
    # with room for the worker's suffixes, and the file can be made.
    wide = "\U0001d404\U0001d427" * 40  # 𝐄𝐧 ... as an NVR may name a channel
    stem = Layout.parse(None).stem(fields("nvr", "x", "201", wide, T, T.replace(minute=8), "2", 7, "video"))
    assert all(len(level.encode()) <= 200 for level in stem.split("/")) and stem.endswith("_080600-080800")
    made = place(tmp_path, stem + "_task123456_99", ".mp4")
    made.parent.mkdir(parents=True)
    made.with_name(f".{made.name}.part").write_bytes(b"x")
    assert Layout.parse(None).stem(fields("nvr", "", "201", None, T, T.replace(minute=8), "", 1, "video")) == \
        "nvr/201/2026-01-01/2026-01-01_080600-080800"


def _reserve(downloads: str, owner: str) -> str:
    return Ledger(Path(downloads)).reserve(owner, f"task{owner}", [("piece", "cam/2026-01-01")])["piece"]


def test_the_ledger_gives_each_task_its_own_path_across_processes_and_keeps_it_on_a_retry(tmp_path):
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        granted = pool.starmap(_reserve, [(str(tmp_path), str(n)) for n in range(1, 7)])
    assert len(set(granted)) == 6 and "cam/2026-01-01" in granted
    assert all(g == "cam/2026-01-01" or g == f"cam/2026-01-01_task{n}" for n, g in enumerate(granted, start=1))
    assert _reserve(str(tmp_path), "3") == granted[2]  # a retry finds its own path again

    ledger = Ledger(tmp_path)
    (tmp_path / "cam").mkdir()
    (tmp_path / "cam" / "2026-01-01.ps").write_bytes(b"hello")
    (tmp_path / "cam" / "other.ps").write_bytes(b"made by hand")  # unknown to the ledger: never taken over
    assert ledger.reserve("9", "task9", [("x", "cam/other")]) == {"x": "cam/other_task9"}
    digest = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    ledger.complete([{"stem": "cam/2026-01-01", "path": "cam/2026-01-01.ps", "size": 5, "sha256": digest}])
    assert (tmp_path / "SHA256SUMS").read_text() == f"{digest}  cam/2026-01-01.ps\n"
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True).returncode == 0
    assert ledger.done("cam/2026-01-01")["sha256"] == digest
    (tmp_path / "cam" / "2026-01-01.ps").write_bytes(b"cut")  # a file changed since: not complete any more
    assert ledger.done("cam/2026-01-01") is None
