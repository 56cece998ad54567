"""A worker host's terminal: one live line per worker, and lines that stay true while the host stops."""
from __future__ import annotations

import io
import re

import pytest

from taskclient.display import Display

pytestmark = pytest.mark.fast  # the in-process layer


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def last_frame(terminal: Terminal, workers: int) -> list[str]:
    """The live lines as the terminal shows them after the last redraw."""
    text = re.sub(r"\x1b\[\d*F|\x1b\[2K|\x1b\[J", "", terminal.getvalue())
    return [line for line in text.splitlines() if re.match(r"w\d+: ", line)][-workers:]


def test_a_stopping_host_never_says_its_workers_wait_for_work():
    terminal = Terminal()
    display = Display(3, "downloads", terminal)
    display.handle("idle", 0, {"retry_after": 5})
    display.handle("start", 1, {"label": "000007-gate", "attempt": 1})
    display.handle("progress", 1, {"done": 2, "total": 6, "bytes": 3_000_000, "rate": 1_000_000})
    display.handle("idle", 2, {"retry_after": 5})
    display.stopping("finishing its task")  # the first Ctrl-C
    assert last_frame(terminal, 3) == ["w0: stopping", "w1: stopping (finishing its task)", "w2: stopping"]
    display.handle("ended", 0, {"code": 0})
    display.handle("ended", 2, {"code": 0})
    display.handle("done", 1, {"files": 6, "bytes": 9_000_000})
    display.handle("ended", 1, {"code": 0})
    display.refresh_final()
    assert last_frame(terminal, 3) == ["w0: stopped", "w1: stopped", "w2: stopped"]
    assert "waiting for work" not in "\n".join(last_frame(terminal, 3))
