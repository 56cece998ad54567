"""One worker process: claim a task, run it with heartbeats, report, repeat until the sentinel.

Everything a worker needs arrives in a picklable `Settings`, so the pool can
start workers with the `spawn` method (Windows worker hosts).
"""
from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import random
import re
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from .client import Coordinator
from .errors import AuthError, Cancelled, LeaseLost, SetupError, Stopped, TaskFailed
from .runners import Progress, make_runner

log = logging.getLogger("taskclient")

# Worker process exit codes, read by the pool.
DRAINED, STOPPED, AUTH, SETUP = 0, 10, 11, 12


@dataclass
class Settings:
    """Everything a worker process needs."""

    urls: list[str]
    downloads: str
    token: str | None = None
    runner: str = "hikload"
    runner_options: dict = field(default_factory=dict)
    ca_file: str | None = None
    host: str = field(default_factory=socket.gethostname)


@dataclass
class Events:
    """Shared flags set by the pool: `stop` = claim no more, `abort` = give running tasks back now."""

    stop: multiprocessing.synchronize.Event
    abort: multiprocessing.synchronize.Event


def worker_main(index: int, settings: Settings, events: Events, queue) -> None:
    """Entry point of a worker process; its exit code tells the pool why it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool decides what Ctrl-C means
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(logging.INFO)
    parent = multiprocessing.parent_process()
    # Unique per worker host process, readable: "<host>-<pool pid>/w<slot>".
    host = re.sub(r"[^\w.-]", "-", settings.host)[:60]
    name = f"{host}-{os.getppid()}/w{index}"
    try:
        code = Worker(index, name, settings, events, queue, parent).run()
    except AuthError as exc:
        log.error("%s", exc)
        code = AUTH
    except SetupError as exc:
        log.error("%s", exc)
        code = SETUP
    raise SystemExit(code)


class Worker:
    """The pull loop of one worker process."""

    def __init__(self, index: int, name: str, settings: Settings, events: Events, queue, parent):
        self.index, self.name, self.settings, self.events, self.queue, self.parent = (
            index, name, settings, events, queue, parent)
        self.downloads = Path(settings.downloads).resolve()
        self.runner = make_runner(settings.runner, settings.runner_options)
        self.api = Coordinator(settings.urls, name, settings.token, settings.ca_file,
                               abort=events.abort, stop_claims=events.stop)

    def send(self, kind: str, **data) -> None:
        """Tell the pool what happened (for the display and the summary)."""
        self.queue.put((kind, self.index, data))

    def run(self) -> int:
        """Claim and run tasks until the sentinel, a stop, or a dead parent."""
        idle = 0.1
        answer = None
        while True:
            if self.events.stop.is_set() or not self._parent_alive():
                return STOPPED
            try:
                answer = answer or self.api.claim()
            except Stopped:
                return STOPPED
            status = answer["status"]
            if status == "drained":
                self.send("drained")
                return DRAINED
            if status == "wait":
                self.send("idle", retry_after=answer["retry_after"])
                # Poll gently: start fast, grow to the coordinator's hint, with jitter.
                idle = min(float(answer["retry_after"]), idle * 2)
                answer = None
                self.events.stop.wait(idle * random.uniform(0.8, 1.2))
                continue
            idle = 0.1
            answer = self._run_task(answer["task"], answer["lease"])

    def _run_task(self, task: dict, lease: dict) -> dict | None:
        """Run one leased task; return the next claim answer if the completion carried one."""
        folder = task_folder(self.downloads, task)
        progress = Progress()
        cancel = threading.Event()
        lost = threading.Event()
        self.send("start", task=task["id"], label=folder.name, attempt=task["attempt"])
        beat = threading.Thread(target=self._heartbeat, args=(task["id"], lease, progress, cancel, lost),
                                daemon=True, name="heartbeat")
        beat.start()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            result = self.runner.run(task, folder, progress, cancel)
        except Cancelled:
            return self._abandon(task, lease, lost)
        except TaskFailed as exc:
            return self._report_failure(task, lease, str(exc), exc.permanent, lost, exc.device)
        except OSError as exc:
            return self._report_failure(task, lease, f"worker host: {exc}", False, lost)
        except Exception as exc:  # a runner bug must not kill the worker or hold the lease
            log.error("task %s: runner error\n%s", task["id"], traceback.format_exc())
            return self._report_failure(task, lease, f"runner error: {type(exc).__name__}: {exc}", False, lost)
        finally:
            cancel.set()
            beat.join()
        if lost.is_set():
            self.send("lost", task=task["id"])
            return None
        try:
            answer = self.api.complete(task["id"], lease["id"], result, claim_next=not self.events.stop.is_set())
        except LeaseLost:
            self.send("lost", task=task["id"])
            return None
        except Stopped:
            log.warning("task %s finished but the coordinator could not be told before shutdown", task["id"])
            return None
        self.send("done", task=task["id"], files=result.get("files", 0), bytes=result.get("bytes", 0))
        return answer

    def _report_failure(self, task, lease, error: str, permanent: bool, lost, device: str | None = None) -> None:
        if lost.is_set():
            self.send("lost", task=task["id"])
            return None
        try:
            state = self.api.fail(task["id"], lease["id"], error, permanent, device)
        except (LeaseLost, Stopped):
            self.send("lost", task=task["id"])
            return None
        self.send("failed", task=task["id"], error=error, state=state)
        return None

    def _abandon(self, task, lease, lost) -> None:
        if lost.is_set():
            self.send("lost", task=task["id"])
        else:
            self.api.release(task["id"], lease["id"])
            self.send("released", task=task["id"])
        return None

    def _heartbeat(self, task_id: int, lease: dict, progress: Progress, cancel, lost) -> None:
        """Extend the lease every third of its length, and carry progress to the coordinator and pool."""
        interval = max(0.2, float(lease["seconds"]) / 3)
        last_beat = time.monotonic()
        while not cancel.wait(0.25):
            snapshot = progress.snapshot()
            self.send("progress", task=task_id, **snapshot)
            if self.events.abort.is_set() or not self._parent_alive():
                cancel.set()
                return
            if time.monotonic() - last_beat < interval:
                continue
            try:
                self.api.heartbeat(task_id, lease["id"], snapshot)
                last_beat = time.monotonic()
            except LeaseLost:
                log.warning("task %s: lease lost (expired or taken over); abandoning it", task_id)
                lost.set()
                cancel.set()
                return
            except Exception as exc:  # coordinator briefly away: keep working, try again soon
                log.debug("heartbeat for task %s failed: %s", task_id, exc)

    def _parent_alive(self) -> bool:
        return self.parent is None or self.parent.is_alive()


def task_folder(downloads: Path, task: dict) -> Path:
    """`<downloads>/<id>-<readable name>`: safe characters only, always inside `downloads`."""
    label = task.get("name") or f"{task['server']}-{'_'.join(task.get('cameras') or ['all'])}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._-")[:80] or "task"
    folder = (downloads / f"{int(task['id']):06d}-{slug}").resolve()
    if folder.parent != downloads:
        raise SetupError(f"task folder {folder} would fall outside {downloads}")
    return folder
