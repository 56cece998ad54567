"""One worker process: claim a task, run it with heartbeats, report, repeat until the sentinel.

Everything a worker needs arrives in a picklable `Settings`, so the pool can
start workers with the `spawn` method (Windows worker hosts).
"""
from __future__ import annotations

import errno
import logging
import logging.handlers
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .client import Coordinator
from .errors import AuthError, Cancelled, HostFault, LeaseLost, SetupError, Stopped, TaskFailed, TLSRefused
from .paths import task_folder
from .runners import Progress, make_runner
from .untrusted import clean_text
from .upload import Uploader

log = logging.getLogger("taskclient")

# Worker process exit codes, read by the pool.
DRAINED, STOPPED, AUTH, SETUP, HOST_FAULT, TLS = 0, 10, 11, 12, 13, 14
MAX_HOST_FAULTS = 3  # consecutive host faults before the host stops
SPACE_POLL = 5.0  # seconds between free-space checks while the host is full
FULL_RETRY = 300.0  # a host short of space for one task claims again after this, to try smaller ones
# Seconds between two reads of a running task's lease: a cancel stops the task this soon. A read, apart
# from the heartbeat (a write every third of the lease), and only while a task runs: idle workers never ask.
LEASE_POLL = 2.0
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}  # no EDQUOT on Windows


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
    min_free: int = 0  # bytes to keep free in `downloads`; below it the host claims nothing
    service: bool = False  # stay when the queue drains, and ask for new work every `drained_poll` seconds
    drained_poll: float = 30.0
    upload: Uploader | None = None  # where done tasks' files go before the completion is reported


@dataclass
class Events:
    """Shared flags set by the pool: `stop` = claim no more, `abort` = give running tasks back now."""

    stop: multiprocessing.synchronize.Event
    abort: multiprocessing.synchronize.Event


def worker_main(index: int, settings: Settings, events: Events, queue) -> None:
    """Entry point of a worker process; its exit code tells the pool why it ended."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool decides what Ctrl-C means
    # A service manager may send SIGTERM to every process of the host at once: stop as the pool would.
    signal.signal(signal.SIGTERM, lambda signum, frame: _stop_soon(events))
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(logging.INFO)
    parent = multiprocessing.parent_process()
    # Unique per worker host process, readable: "<host>-<pool pid>/w<slot>".
    host = re.sub(r"[^\w.-]", "-", settings.host)[:60]
    name = f"{host}-{os.getppid()}/w{index}"
    worker = None
    try:
        worker = Worker(index, name, settings, events, queue, parent)
        code = worker.run()
    except AuthError as exc:
        log.error("%s", exc)
        code = AUTH
    except SetupError as exc:
        log.error("%s", exc)
        code = SETUP
    except TLSRefused as exc:
        log.error("%s", exc)
        code = TLS
    if worker is not None and code in (DRAINED, STOPPED):
        worker.api.worker_state("stopped", "queue drained" if code == DRAINED else "host stopping")
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
        self.host_faults = 0  # consecutive tasks that failed because of this host
        self.short_of: int | None = None  # bytes a released task needed beyond the free space
        self.full_since = 0.0
        self.last_fault = ""
        self.why_lost: dict | None = None  # the coordinator's word on why the running task's lease ended

    def send(self, kind: str, **data) -> None:
        """Tell the pool what happened (for the display and the summary)."""
        self.queue.put((kind, self.index, data))

    def run(self) -> int:
        """Claim and run tasks until the sentinel (in service mode: until a stop), a stop, or a dead parent."""
        idle = 0.1
        hold = 0.0  # after a "wait", the next claim asks the coordinator to hold it this long
        answer = None
        drained = False
        while True:
            if self.events.stop.is_set() or not self._parent_alive():
                if answer is not None and answer["status"] == "task":  # came with the stop: given back unrun
                    self.api.release(answer["task"]["id"], answer["lease"]["id"], f"host {self.settings.host} stopping")
                return STOPPED
            if self.host_faults >= MAX_HOST_FAULTS:
                return self._give_up()
            if answer is None and not self._space_ok():
                ended = self._wait_for_space()
                if ended is not None:
                    return ended
                continue
            try:
                answer = answer or self.api.claim(hold)
            except Stopped:
                return STOPPED
            status = answer["status"]
            if status == "task" and self.events.stop.is_set():  # came while stopping: the loop's top gives it back
                continue
            if status == "drained":
                if not self.settings.service:
                    self.send("drained")
                    return DRAINED
                if not drained:
                    drained = True
                    self.send("drained", service=True, poll=self.settings.drained_poll)
                answer = None
                self.events.stop.wait(self.settings.drained_poll * random.uniform(0.8, 1.2))
                continue
            drained = False
            if status == "wait":
                self.send("idle", retry_after=answer["retry_after"])
                after, held, answer = float(answer["retry_after"]), answer.get("held"), None
                # A wait of a second or more ends when work is freed: ask for the next claim to be held.
                # Shorter ones end on the coordinator's clock (a backoff, a rest): those are polled.
                hold = after if after >= 1 else 0.0
                if held:  # the coordinator held the claim and nothing was freed: ask again at once
                    continue
                # Poll gently: start fast, grow to the coordinator's hint, with jitter.
                idle = min(after, idle * 2)
                self.events.stop.wait(idle * random.uniform(0.8, 1.2))
                continue
            idle, hold = 0.1, 0.0
            answer = self._run_task(answer["task"], answer["lease"])

    def _run_task(self, task: dict, lease: dict) -> dict | None:
        """Run one leased task; return the next claim answer if the completion carried one.

        The task folder is made only when a file is written, and removed again if the
        attempt leaves it empty (failed, busy, released, or nothing to export).
        """
        folder = task_folder(self.downloads, task)
        progress = Progress()
        cancel = threading.Event()
        lost = threading.Event()
        self.why_lost = None
        self.send("start", task=task["id"], label=folder.name, attempt=task["attempt"])
        beat = threading.Thread(target=self._heartbeat, args=(task["id"], lease, progress, cancel, lost),
                                daemon=True, name="heartbeat")
        beat.start()
        try:
            result = self.runner.run(task, folder, progress, cancel)
            self._upload(result, progress, cancel)
        except Cancelled:
            return self._abandon(task, lease, lost)
        except TaskFailed as exc:
            self.host_faults = 0
            return self._report_failure(task, lease, str(exc), exc.permanent, lost, exc.device, exc.locked_for)
        except HostFault as exc:
            return self._host_fault(task, lease, lost, str(exc), exc.full, exc.needed)
        except requests.RequestException as exc:
            self.host_faults = 0
            return self._report_failure(task, lease, f"NVR request failed: {type(exc).__name__}", False, lost)
        except OSError as exc:  # the worker host's own disk or permissions, not the task ...
            if exc.errno == errno.ENAMETOOLONG:  # ... except a name the task's data made: an attempt of the
                self.host_faults = 0            # task's, not a fault of the host (another host's disk may take it)
                return self._report_failure(task, lease, f"a file name is too long for this host's disk:"
                                            f" {_os_error(exc)}; shorten the layout or the names", False, lost)
            return self._host_fault(task, lease, lost, _os_error(exc), exc.errno in _FULL_ERRNOS, None)
        except Exception as exc:  # a runner bug must not kill the worker or hold the lease
            log.error("task %s: runner error\n%s", task["id"], traceback.format_exc())
            return self._report_failure(task, lease, f"runner error: {type(exc).__name__}: {exc}", False, lost)
        finally:
            cancel.set()
            beat.join()
            _remove_if_empty(folder)
        self.host_faults = 0
        if lost.is_set():
            return self._lost(task, lease)
        try:
            answer = self.api.complete(task["id"], lease["id"], result, claim_next=not self.events.stop.is_set())
        except LeaseLost:
            return self._lost(task, lease)
        except Stopped:
            log.warning("task %s finished but the coordinator could not be told before shutdown", task["id"])
            return None
        self.send("done", task=task["id"], files=result.get("files", 0), bytes=result.get("bytes", 0))
        return answer

    def _upload(self, result: dict, progress: Progress, cancel: threading.Event) -> None:
        """Note which host holds each file; with --upload, copy them to the destination first (verified).

        Runs while heartbeats still extend the lease. An upload that fails raises
        TaskFailed: the attempt fails, the local files stay, and the retry uploads again.
        """
        manifest = [entry for entry in result.get("manifest") or [] if isinstance(entry, dict)]
        for entry in manifest:
            entry.setdefault("host", self.settings.host)
        if self.settings.upload is not None and manifest:
            self.settings.upload.send(manifest, progress, cancel)
            if self.settings.upload.delete and hasattr(self.runner, "checksums"):
                self.runner.checksums(self.downloads)  # the host's SHA256SUMS lists only files still here

    def _report_failure(self, task, lease, error: str, permanent: bool, lost, device: str | None = None,
                        locked_for: int | None = None) -> None:
        if lost.is_set():
            return self._lost(task, lease)
        error = clean_text(error, 2000)  # one line, whatever a device or a command wrote into it
        try:
            state = self.api.fail(task["id"], lease["id"], error, permanent, device, locked_for)
        except (LeaseLost, Stopped):
            return self._lost(task, lease)
        self.send("failed", task=task["id"], error=error, state=state, device=device)
        return None

    def _host_fault(self, task, lease, lost, error: str, full: bool, needed: int | None) -> None:
        """This host failed the task: hand it back uncharged; note the fault; stop claiming while full."""
        reason = f"host {self.settings.host}: {error}"
        self.host_faults += 1
        log.warning("task %s released: %s (host fault %d of %d in a row)", task["id"], reason, self.host_faults,
                    MAX_HOST_FAULTS)
        if lost.is_set():
            self._lost(task, lease)
        else:
            self.api.release(task["id"], lease["id"], reason)
            self.send("released", task=task["id"], reason=reason)
        if full:
            self.short_of = needed or 0
            self.full_since = time.monotonic()
        self.last_fault = reason
        return None

    def _give_up(self) -> int:
        """Too many host faults in a row: tell the coordinator and the pool, and stop."""
        reason = self.last_fault or "repeated host faults"
        log.error("stopping after %d host faults in a row; last: %s", self.host_faults, reason)
        self.api.worker_state("fault", reason)
        self.send("fault", reason=reason)
        return HOST_FAULT

    # --- free space -----------------------------------------------------------------------
    def _space_ok(self) -> bool:
        """Enough free space to claim: above --min-free, and room for the task that was refused for space."""
        try:
            free = shutil.disk_usage(self.downloads).free
        except OSError:
            return True  # the folder itself is the trouble: the task's own attempt will say what it is
        if free < self.settings.min_free:
            return False
        if self.short_of is not None:
            waited = time.monotonic() - self.full_since
            if free - self.settings.min_free < self.short_of and waited < FULL_RETRY:
                return False
            self.short_of = None
        return True

    def _wait_for_space(self) -> int | None:
        """Claim nothing while the disk is short of space; say so; resume when space returns.

        Returns None to resume claiming, or an exit code (drained, stopped).
        """
        try:
            free = shutil.disk_usage(self.downloads).free
        except OSError:
            free = 0
        wanted = f"; the last task needed {self.short_of / 1e6:.1f} MB" if self.short_of else ""
        detail = (f"host {self.settings.host}: {free / 1e6:.1f} MB free in {self.downloads}"
                  f" (--min-free {self.settings.min_free / 1e6:.1f} MB){wanted}; claiming nothing until space returns")
        log.warning("%s", detail)
        self.send("full", detail=detail)
        self.api.worker_state("full", detail)
        while not self.events.stop.wait(SPACE_POLL):
            if not self._parent_alive():
                return STOPPED
            if self._space_ok():
                log.info("space returned in %s; claiming again", self.downloads)
                self.api.worker_state("ok", "space returned")
                self.send("ok")
                return None
            if not self.settings.service and self.api.drained():
                self.send("drained")
                return DRAINED
        return STOPPED

    def _abandon(self, task, lease, lost) -> None:
        if lost.is_set():
            self._lost(task, lease)
        else:
            self.api.release(task["id"], lease["id"], f"host {self.settings.host} stopping")
            self.send("released", task=task["id"])
        return None

    def _lost(self, task: dict, lease: dict) -> None:
        """The task is no longer ours: say why, and remove what a cancelled task wrote.

        The coordinator records the files of done tasks only, so a cancelled task's files
        would lie on this host unknown to anyone; a requeue downloads them again anyway.
        """
        why = self.why_lost or self._ask_lease(task["id"], lease) or {}
        reason = clean_text(str(why.get("detail") or why.get("reason") or "the lease is no longer current"), 300)
        if why.get("reason") == "cancelled":
            # Asked again just before: a task requeued meanwhile may be running here again, in the same folder.
            now = self._ask_lease(task["id"], lease) or {}
            if now.get("state") == "cancelled":
                remove = getattr(self.runner, "discard", None)  # a runner that places files itself removes them
                files, size = remove(task, self.downloads) if remove else _remove_task_files(
                    task_folder(self.downloads, task))
                if files:
                    reason += f"; removed the {files} file(s), {size / 1e6:.1f} MB, it had written"
        log.warning("task %s stopped: %s", task["id"], reason)
        self.send("lost", task=task["id"], reason=reason)
        return None

    def _ask_lease(self, task_id: int, lease: dict) -> dict | None:
        """The coordinator's word on the lease, or None when it cannot be had (unreachable, an older coordinator)."""
        try:
            return self.api.lease_state(task_id, lease["id"])
        except (LeaseLost, AuthError, SetupError, Stopped, requests.RequestException):
            return None

    def _heartbeat(self, task_id: int, lease: dict, progress: Progress, cancel, lost) -> None:
        """Extend the lease every third of its length; read it every LEASE_POLL s; carry progress to the pool.

        The read tells within seconds that the task was cancelled (or its lease ran
        out), so the runner stops at once rather than at the next heartbeat. When the
        task's counts move (recordings listed, files done), a heartbeat carrying them
        takes that read's place, so that even a short task shows its progress while it
        runs, at no more requests than the read.
        """
        interval = max(0.2, float(lease["seconds"]) / 3)
        last_beat = last_look = time.monotonic()
        polling = True
        told = (None, None)  # the counts the coordinator has
        while not cancel.wait(0.25):
            snapshot = progress.snapshot()
            self.send("progress", task=task_id, **snapshot)
            if self.events.abort.is_set() or not self._parent_alive():
                cancel.set()
                return
            now = time.monotonic()
            counts = (snapshot.get("done"), snapshot.get("total"))
            if now - last_beat >= interval or (counts != told and now - last_look >= LEASE_POLL):
                try:
                    self.api.heartbeat(task_id, lease["id"], snapshot)
                    last_beat = last_look = time.monotonic()
                    told = counts
                except LeaseLost:
                    self.why_lost = self._ask_lease(task_id, lease)
                    lost.set()
                    cancel.set()
                    return
                except Exception as exc:  # coordinator briefly away: keep working, try again soon
                    log.debug("heartbeat for task %s failed: %s", task_id, exc)
            elif polling and now - last_look >= LEASE_POLL:
                last_look = now
                try:
                    state = self.api.lease_state(task_id, lease["id"])
                except LeaseLost:  # a coordinator without this read: the heartbeat alone will tell
                    polling = False
                    continue
                except Exception as exc:
                    log.debug("reading the lease of task %s failed: %s", task_id, exc)
                    continue
                if not state.get("current"):
                    self.why_lost = state
                    lost.set()
                    cancel.set()
                    return

    def _parent_alive(self) -> bool:
        return self.parent is None or self.parent.is_alive()


def _remove_task_files(folder: Path) -> tuple[int, int]:
    """Remove a task's folder (never following a link out of it); return the files and bytes it held."""
    if folder.is_symlink() or not folder.is_dir():
        return 0, 0
    files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
    size = sum(p.stat().st_size for p in files)
    shutil.rmtree(folder, ignore_errors=True)
    return len(files), size


def _stop_soon(events: Events) -> None:
    """Set the host's stop flags from a signal handler: on a thread of its own, because this thread may
    hold the flags' lock at the moment the signal arrives."""
    threading.Thread(target=lambda: (events.stop.set(), events.abort.set()), daemon=True).start()


def _remove_if_empty(folder: Path) -> None:
    """An attempt that wrote nothing leaves no folder behind."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _os_error(exc: OSError) -> str:
    """A host-side error in a few words: what failed, on which path."""
    what = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{what.lower()}{where}"
