"""What a worker host shows: a live line per worker on a terminal, event lines otherwise, a summary."""
from __future__ import annotations

import logging
import sys
import time


class Display:
    """Collects worker events and renders them; the pool feeds it."""

    def __init__(self, workers: int, downloads: str, stream=None):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.downloads = downloads
        self.started = time.monotonic()
        self.lines: dict[int, str] = {i: "starting" for i in range(workers)}
        self.labels: dict[int, str] = {}
        self.waiting: set[int] = set()  # service mode: workers that found the queue drained
        self.running: set[int] = set()  # workers with a task in hand
        self.announced = False  # ... and the host said so, once per drain
        self.done = self.failed = self.files = self.bytes = 0
        self.drawn = 0
        self.last_draw = 0.0
        self.formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")

    def handle(self, kind: str, index: int, data: dict) -> None:
        """One event from worker `index`."""
        if kind in ("done", "failed", "lost", "released"):
            self.running.discard(index)
        if kind == "start":
            self.running.add(index)
            self.waiting.discard(index)
            self.announced = False
            self.labels[index] = data["label"]
            self.lines[index] = f"{data['label']} (attempt {data['attempt']}) starting"
            self._event(f"w{index} started {data['label']} (attempt {data['attempt']})")
        elif kind == "progress":
            total = data.get("total")
            count = f"{data.get('done', 0)}/{total}" if total is not None else "listing"
            mb = data.get("bytes", 0) / 1e6
            self.lines[index] = (f"{self.labels.get(index, '?')}  recordings {count}  {mb:.1f} MB"
                                 f"  {data.get('rate', 0) / 1e6:.1f} MB/s")
        elif kind == "done":
            self.done += 1
            self.files += data.get("files", 0)
            self.bytes += data.get("bytes", 0)
            self.lines[index] = f"done {self.labels.get(index, '')}"
            self._event(f"w{index} done {self.labels.get(index, '')}: {data.get('files', 0)} file(s),"
                        f" {data.get('bytes', 0) / 1e6:.1f} MB")
        elif kind == "failed":
            self.failed += data["state"] == "failed"
            device = data.get("device")
            what = {"busy": "NVR busy, no attempt charged", "unreachable": "NVR unreachable, no attempt charged",
                    "auth": "NVR refused the login, no attempt charged"}.get(device, f"attempt failed ({data['state']})")
            self.lines[index] = f"{what}: {self.labels.get(index, '')}"
            self._event(f"w{index} {what} {self.labels.get(index, '')}: {data['error']}")
        elif kind in ("lost", "released"):
            self.lines[index] = f"{kind} {self.labels.get(index, '')}"
            reason = f": {data['reason']}" if data.get("reason") else ""
            self._event(f"w{index} {kind} task {data['task']}{reason}")
        elif kind == "full":
            self.lines[index] = "DISK FULL: claiming nothing until space returns"
            self._event(f"w{index} disk full: {data['detail']}", err=True)
        elif kind == "ok":
            self.lines[index] = "space returned; claiming again"
            self._event(f"w{index} space returned; claiming again")
        elif kind == "fault":
            self.lines[index] = "stopped: host fault"
            self._event(f"w{index} stopping this host after repeated host faults: {data['reason']}", err=True)
        elif kind == "idle":
            self.lines[index] = f"waiting for work (asking again within {data['retry_after']} s)"
        elif kind == "drained" and data.get("service"):
            self.lines[index] = "queue drained; waiting for new work"
            self.waiting.add(index)
            if len(self.waiting) == len(self.lines) and not self.announced:
                self.announced = True
                self._event(f"queue drained; waiting for new work (asking every {data['poll']:g} s or so)")
        elif kind == "drained":
            self.lines[index] = "queue drained"
        elif kind == "died":
            self.lines[index] = "died; replaced"
        elif kind == "ended" and not self.lines.get(index, "").startswith("stopped"):
            self.lines[index] = "stopped"

    def stopping(self, running: str) -> None:
        """The host was asked to stop: no line may still say it waits for work."""
        for index, line in self.lines.items():
            if not line.startswith(("stopped", "queue drained", "died")):
                self.lines[index] = f"stopping ({running})" if index in self.running else "stopping"
        self.last_draw = 0.0
        self.refresh()

    def refresh(self) -> None:
        """Redraw the live lines, at most a few times per second."""
        if not self.live or time.monotonic() - self.last_draw < 0.5:
            return
        self.last_draw = time.monotonic()
        out = [f"\x1b[{self.drawn}F"] if self.drawn else []
        for index in sorted(self.lines):
            out.append(f"\x1b[2Kw{index}: {self.lines[index]}"[:200] + "\n")
        self.drawn = len(self.lines)
        self.stream.write("".join(out))
        self.stream.flush()

    def log(self, record: logging.LogRecord) -> None:
        """A log record from a worker process."""
        self._event(self.formatter.format(record), err=True)

    def note(self, text: str) -> None:
        """A message from the pool itself."""
        self._event(f"taskclient: {text}", err=True)

    def summary(self) -> None:
        """The closing summary."""
        self.refresh_final()
        elapsed = time.monotonic() - self.started
        self.stream.write(
            f"taskclient: {self.done} task(s) done, {self.failed} failed for good on this host;"
            f" {self.files} file(s), {self.bytes / 1e6:.1f} MB in {elapsed:.1f} s; files under {self.downloads}\n"
        )
        self.stream.flush()

    def refresh_final(self) -> None:
        if self.live:
            self.last_draw = 0.0
            self.refresh()

    def _event(self, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else self.stream
        if self.live and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # clear the live block, print, redraw below
            self.drawn = 0
            self.last_draw = 0.0
        stream.write(text + "\n")
        stream.flush()
