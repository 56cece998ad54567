"""The coordinator's log of steering done elsewhere: a command's import or requeue, another coordinator's run.

`taskserver import` and `taskserver requeue` change the database from a process
of their own, and with PostgreSQL other coordinators change it too. Their changes
reach the change feed, not this coordinator's log, so an operator reading the log
would not see why 40 tasks appeared or 12 failed ones came back. Each coordinator
follows the feed (its own position, kept in memory: every coordinator logs every
such change once) and logs the steering changes its own store did not write; those
it did write are logged where they are made.
"""
from __future__ import annotations

import logging
import threading
from itertools import groupby

from .loops import repeat
from .store import Store
from .store.sql import MADE_HERE_KINDS

log = logging.getLogger("taskserver")
FOLLOW_SECONDS = 2.0
PER_TICK = 2000  # changes read per look; a larger backlog is caught up over the next looks


class FeedLog:
    """Follows the change feed from now on and logs the steering changes made elsewhere."""

    def __init__(self, store: Store):
        self.store = store
        self.after = store.last_event()
        store.release_connection()

    def start(self, stop: threading.Event) -> threading.Thread:
        """Look every FOLLOW_SECONDS until `stop` is set."""
        return repeat(self.store, FOLLOW_SECONDS, self.tick, stop, "feed-log", "following the change feed",
                      wait_first=True)

    def tick(self) -> int:
        """Log the changes since the last look; return how many lines were logged."""
        events = self.store.events(self.after, limit=PER_TICK, kinds=sorted(MADE_HERE_KINDS))
        if not events:
            return 0
        self.after = events[-1]["id"]
        own = set(getattr(self.store, "made_here", ()))
        elsewhere = [e for e in events if (e["at"], e["kind"]) not in own]
        lines = 0
        # One line per change: a requeue of 500 tasks is one change with 500 events of one instant.
        for (_, kind, detail), group in groupby(elsewhere, key=lambda e: (e["at"], e["kind"], e["detail"])):
            ids = [e["task_id"] for e in group if e["task_id"] is not None]
            what = [f"{len(ids)} task(s): {_id_list(ids)}"] if ids else []
            log.info("%s (not through this coordinator): %s", kind, "; ".join(what + ([detail] if detail else [])))
            lines += 1
        return lines


def _id_list(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:20]))
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
