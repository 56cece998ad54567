"""The worker host: N worker processes, watched, replaced when they die, stopped cleanly.

Ctrl-C once: claim nothing more, let running tasks finish, exit.
Ctrl-C twice, or SIGTERM: give running tasks back to the coordinator (release) and exit now.
A worker killed from outside is replaced, and its task comes back to the queue
when its lease expires. In service mode the host never ends on its own: a stop is
its normal end, and exits 0 (what service managers expect of a requested stop).
"""
from __future__ import annotations

import logging
import multiprocessing
import queue as queue_module
import signal
import time

from .display import Display
from .worker import AUTH, DRAINED, HOST_FAULT, SETUP, STOPPED, TLS, Events, Settings, worker_main

log = logging.getLogger("taskclient")

# Exit codes of the `taskclient` command.
EXIT_DRAINED = 0  # every worker saw the sentinel: the queue is drained
EXIT_ERROR = 1  # workers kept dying
EXIT_USAGE = 2  # bad options or configuration
EXIT_AUTH = 3  # the coordinator refused the token
EXIT_HOST_FAULT = 4  # this host failed tasks itself (disk full, permission denied, missing tool) 3 times in a row
EXIT_TLS = 5  # the coordinator's certificate (or its proxy's) is not trusted: --ca-file
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C / SIGTERM before the queue was drained
EXIT_STOPPED = 0  # service mode: stopped on request (SIGTERM, Ctrl-C)

MAX_RESTARTS = 20  # replacements of crashed workers within RESTART_WINDOW before the host gives up
RESTART_WINDOW = 3600.0  # seconds; a service that runs for months may lose a worker now and then


class Pool:
    """Start, supervise and stop the worker processes of one host."""

    def __init__(self, settings: Settings, workers: int, start_method: str | None = None,
                 display: Display | None = None):
        self.settings = settings
        self.count = workers
        self.ctx = multiprocessing.get_context(start_method)
        self.events = Events(self.ctx.Event(), self.ctx.Event())
        self.queue = self.ctx.Queue()
        self.display = display or Display(workers, settings.downloads)
        self.procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self.finished: dict[int, int] = {}
        self.restarts: list[float] = []  # when crashed workers were replaced (monotonic)
        self.interrupts = 0

    def run(self) -> int:
        """Run until every worker has ended; return the command's exit code."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(self.count):
                self._start(index)
            while self.procs:
                self._drain_queue(timeout=0.2)
                self._reap()
                self.display.refresh()
            self._drain_queue(timeout=0)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._terminate_all()
        self.display.summary()
        return self._exit_code()

    def _start(self, index: int) -> None:
        proc = self.ctx.Process(target=worker_main, args=(index, self.settings, self.events, self.queue),
                                name=f"taskclient-w{index}", daemon=True)
        proc.start()
        self.procs[index] = proc

    def _reap(self) -> None:
        for index, proc in list(self.procs.items()):
            if proc.is_alive():
                continue
            proc.join()
            del self.procs[index]
            code = proc.exitcode
            if code in (AUTH, SETUP, HOST_FAULT, TLS):
                self.events.stop.set()
                self.events.abort.set()
            if code in (DRAINED, STOPPED, AUTH, SETUP, HOST_FAULT, TLS) or self.events.stop.is_set():
                self.finished[index] = code
                if code != DRAINED:
                    self.display.handle("ended", index, {"code": code})
                continue
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW]
            if len(self.restarts) >= MAX_RESTARTS:
                log.error("worker %d died (exit %s); %d restarts within an hour already, giving up", index, code,
                          len(self.restarts))
                self.finished[index] = code
                continue
            self.restarts.append(now)
            log.warning("worker %d died (exit %s); starting a replacement", index, code)
            self.display.handle("died", index, {})
            self._start(index)

    def _drain_queue(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue_module.Empty:
                return
            except (EOFError, OSError):
                return
            if isinstance(item, logging.LogRecord):
                self.display.log(item)
            else:
                self.display.handle(*item)
            deadline = min(deadline, time.monotonic())  # after the first item, take only what is there

    def _on_signal(self, signum, frame) -> None:
        self.interrupts += 1
        if signum == signal.SIGTERM or self.interrupts > 1 or self.events.stop.is_set():
            self.events.stop.set()
            self.events.abort.set()
            self.display.note("stopping now: running tasks are released to the coordinator")
            self.display.stopping("releasing its task")
        else:
            self.events.stop.set()
            self.display.note("finishing running tasks, then exiting (Ctrl-C again to release them now)")
            self.display.stopping("finishing its task")

    def _terminate_all(self) -> None:
        """Leave no orphans: whatever is still alive after a grace period is terminated."""
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def _exit_code(self) -> int:
        codes = set(self.finished.values())
        if AUTH in codes:
            return EXIT_AUTH
        if TLS in codes:
            return EXIT_TLS
        if SETUP in codes:
            return EXIT_USAGE
        if HOST_FAULT in codes:
            return EXIT_HOST_FAULT
        if codes == {DRAINED}:
            return EXIT_DRAINED
        if self.events.stop.is_set():
            return EXIT_STOPPED if self.settings.service and codes <= {STOPPED} else EXIT_INTERRUPTED
        return EXIT_ERROR


def run_pool(settings: Settings, workers: int, start_method: str = "spawn") -> int:
    """Run a pool of `workers` processes to the sentinel; return the exit code."""
    return Pool(settings, workers, start_method).run()
