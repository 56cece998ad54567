"""The coordinator's background threads: work done every few seconds (schedules, notices, the feed log).

One shape for all of them, so that each is written once: a failure is logged
and tried again at the next turn (a database hiccup must not end it for good),
and the store's connection is given back after every turn, so that a loop that
sleeps holds none.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .store import Store

log = logging.getLogger("taskserver")


def repeat(store: Store, every: float, work: Callable[[], object], stop: threading.Event, name: str, what: str,
           wait_first: bool = False) -> threading.Thread:
    """Run `work` every `every` seconds (after a first wait, with `wait_first`) in a daemon thread until `stop`."""
    def loop() -> None:
        if wait_first and stop.wait(every):
            return
        while True:
            try:
                work()
            except Exception:
                log.exception("%s failed; trying again in %.0f s", what, every)
            finally:
                store.release_connection()
            if stop.wait(every):
                return

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread
