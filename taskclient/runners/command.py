"""A generic runner: one command line per task, configured on the worker host.

The sheet supplies parameters, never the command: `--command` is a template
such as `myexport --nvr {server} --from {start} --to {end} --out {folder}`. The
password is passed in the TASK_PASSWORD environment variable, never on the
command line. The task succeeds when the command exits 0; the result counts the
files it left in the task's folder.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import threading
from pathlib import Path

from ..errors import Cancelled, SetupError, TaskFailed
from . import Progress

FIELDS = ("id", "name", "server", "username", "cameras", "start", "end", "folder")


class CommandRunner:
    """Run a command template per task."""

    name = "command"

    def __init__(self, command: str = "", **_ignored):
        if not command:
            raise SetupError("the command runner needs --command 'TEMPLATE' (fields: " + ", ".join(FIELDS) + ")")
        self.template = shlex.split(command)
        try:
            self._argv({f: "" for f in FIELDS})
        except (KeyError, IndexError, ValueError) as exc:
            raise SetupError(f"bad --command template: unknown field {exc}; fields: {', '.join(FIELDS)}") from None

    def _argv(self, values: dict) -> list[str]:
        return [part.format(**values) for part in self.template]

    def run(self, task: dict, folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        """Run the command in the task folder; TaskFailed on a non-zero exit."""
        values = {f: task.get(f) or "" for f in FIELDS}
        values.update(cameras=",".join(task.get("cameras") or ()), folder=str(folder))
        env = {**os.environ, "TASK_PASSWORD": task.get("password") or "", "TASK_ID": str(task["id"])}
        folder.mkdir(parents=True, exist_ok=True)  # the command's working folder (removed again if left empty)
        # A session of its own: a stop sent to the host's whole process group (a service manager, a
        # terminal's Ctrl-C) is the worker's to act on; the worker ends the command when it gives the task back.
        proc = subprocess.Popen(self._argv(values), cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            while True:
                try:
                    _, stderr = proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if cancel.is_set():
                        proc.kill()
                        proc.wait()
                        raise Cancelled("cancelled") from None
        finally:
            if proc.poll() is None:
                proc.kill()
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise TaskFailed(f"command exited with {proc.returncode}: {' | '.join(tail)}".rstrip(": "))
        files = [p for p in folder.rglob("*") if p.is_file()]
        return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
