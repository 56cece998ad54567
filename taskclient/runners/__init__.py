"""Runners: what a worker does with a task. Configured on the worker host, never by the sheet.

A runner is a class with `name` and `run(task, folder, progress, cancel) -> result`.
It raises TaskFailed for a failed attempt and Cancelled when `cancel` is set.
"""
from __future__ import annotations

import threading
import time
from importlib import import_module
from pathlib import Path
from typing import Protocol

from ..errors import SetupError

RUNNERS = {
    "hikload": "taskclient.runners.hikload:HikloadRunner",
    "command": "taskclient.runners.command:CommandRunner",
}


class Progress:
    """A task's progress, written by the runner, read by heartbeats and the display."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict = {"done": 0, "total": None, "bytes": 0}
        self._started = time.monotonic()

    def update(self, **values) -> None:
        """Set fields (done, total, bytes, current, ...)."""
        with self._lock:
            self._values.update(values)

    def add_bytes(self, n: int) -> None:
        """Count bytes written to disk."""
        with self._lock:
            self._values["bytes"] += n

    def snapshot(self) -> dict:
        """A copy with the average rate in bytes per second."""
        with self._lock:
            values = dict(self._values)
        elapsed = max(1e-6, time.monotonic() - self._started)
        values["rate"] = round(values["bytes"] / elapsed)
        return values


class Runner(Protocol):
    name: str

    def run(self, task: dict, folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        """Run one task into `folder`; return the result (at least "files" and "bytes")."""


def make_runner(name: str, options: dict) -> Runner:
    """Instantiate a runner by name; unknown names are a setup error."""
    if name not in RUNNERS:
        raise SetupError(f"unknown runner {name!r}; known: {', '.join(sorted(RUNNERS))}")
    module, _, cls = RUNNERS[name].partition(":")
    return getattr(import_module(module), cls)(**options)
