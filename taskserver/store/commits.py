"""Group commit: a coordinator's concurrent write transactions share one SQLite commit and its fsync.

SQLite lets one transaction write at a time, and with synchronous=FULL each commit
waits for the disk. Dozens of workers completing tasks at once would each pay a
full fsync, one after the other, and each would wait for the file lock in SQLite's
busy handler, which sleeps in growing steps rather than waking when the lock frees.

Here the coordinator's threads share one write connection, handed over by an
in-process lock (a waiting thread wakes as soon as it is free). A thread runs its
transaction inside a SAVEPOINT of the open batch; the last of the threads queued
behind each other commits the batch, with one fsync for all of them. Nobody is
answered before that commit returns: a thread whose work is in the batch waits for
it, and if the commit fails, every thread of the batch gets the error. A
transaction that fails is rolled back to its savepoint, alone.
"""
from __future__ import annotations

import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LIMIT = 64  # transactions in one batch at most, so that a steady stream of writers still commits


class GroupCommit:
    """One write connection shared by a process's threads; transactions queued together commit together."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], limit: int = LIMIT):
        self._connect = connect
        self.limit = limit
        self.db: sqlite3.Connection | None = None
        self.lock = threading.Lock()  # owns the write connection and the open batch
        self._state = threading.Condition()  # guards the figures below
        self.waiting = 0  # threads waiting for the lock: while any do, the batch stays open for them
        self._batch = 0  # number of the newest batch
        self._members = 0  # transactions in the open batch
        self._open = False
        self._durable = 0  # every batch up to this number is committed (or failed)
        self._failures: deque[tuple[int, BaseException]] = deque(maxlen=64)
        self.commits = 0  # figures for tests and benchmarks
        self.transactions = 0
        self._owner: int | None = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction in the open batch; returns only once the batch is committed and on disk."""
        if self._owner == threading.get_ident():
            raise RuntimeError("a write transaction cannot begin inside another on the same thread")
        with self._state:
            self.waiting += 1
        self.lock.acquire()
        with self._state:
            self.waiting -= 1
        self._owner = threading.get_ident()
        try:
            batch = self._join()
        except BaseException:
            self._owner = None
            self.lock.release()
            raise
        failure = None
        try:
            self.db.execute("SAVEPOINT unit")
            try:
                yield self.db
            except BaseException as exc:
                failure = exc
                self._undo()
            else:
                self.db.execute("RELEASE unit")
                self._members += 1
        finally:
            self._leave(batch)
        if failure is not None:
            raise failure
        self._wait_durable(batch)

    def _join(self) -> int:
        """The open batch's number, beginning one if none is open (the lock is held)."""
        if self.db is None:
            self.db = self._connect()
        if not self._open:
            self.db.execute("BEGIN IMMEDIATE")  # waits for other processes (an import) with the busy timeout
            self._open = True
            self._members = 0
            self._batch += 1
        return self._batch

    def _undo(self) -> None:
        """Roll back the failed transaction's savepoint; if even that fails, the whole batch."""
        try:
            self.db.execute("ROLLBACK TO unit")
            self.db.execute("RELEASE unit")
        except sqlite3.Error as exc:
            self._finish(exc)

    def _leave(self, batch: int) -> None:
        """Commit the batch if nobody queued behind this transaction (or it is full); hand the lock on."""
        try:
            with self._state:
                last = self.waiting == 0 or self._members >= self.limit
            if last and self._open and self._batch == batch:
                try:
                    self.db.execute("COMMIT")  # synchronous=FULL: on disk when this returns
                except sqlite3.Error as exc:
                    self._finish(exc)
                else:
                    self._finish(None)
        finally:
            self._owner = None
            self.lock.release()

    def _finish(self, failure: BaseException | None) -> None:
        """Close the open batch (committed, or rolled back with `failure`) and wake its waiting members."""
        if failure is not None:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite rolled it back already
        else:
            self.commits += 1
            self.transactions += self._members
        self._open = False
        with self._state:
            if failure is not None:
                self._failures.append((self._batch, failure))
            self._durable = self._batch
            self._state.notify_all()

    def _wait_durable(self, batch: int) -> None:
        with self._state:
            while self._durable < batch:
                self._state.wait()
            failure = next((exc for number, exc in self._failures if number == batch), None)
        if failure is not None:
            raise sqlite3.OperationalError(f"the commit failed: {failure}") from failure

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None
