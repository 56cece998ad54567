"""The embedded store: one SQLite file in WAL mode.

Each thread reads on its own connection in autocommit mode. Every state change
runs on the one write connection of the process, inside an explicit `BEGIN
IMMEDIATE` transaction that holds the whole file, so two claims can never pick the
same row; the changes of threads that queue behind each other are committed
together, with synchronous=FULL, before any of their methods returns (group
commit, `commits.py`). The transactions themselves are in `sql.py`.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import ConfigError
from ..vault import Vault
from .base import Clock, Policy
from .commits import GroupCommit
from .sql import SQLStore


class SQLiteStore(SQLStore):
    """Task state in one SQLite file; safe for many threads and several processes on one host."""

    UNAVAILABLE = (sqlite3.OperationalError,)  # "database is locked" after the 30 s busy timeout

    def __init__(self, path: str | Path, policy: Policy, vault: Vault, clock: Clock = time.time,
                 create: bool = True):
        super().__init__(policy, vault, clock)
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        self._group = GroupCommit(self._connect)
        if not Path(self.path).exists():
            if not create:
                refuse_missing(self.path)
            _create_private(self.path)
        try:
            with self._write() as db:
                # The schema's version is the file's user_version.
                current = db.execute("PRAGMA user_version").fetchone()[0]
                for version in self._migrate(db, current, self.path):
                    db.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            self.close()
            raise

    def _db(self) -> sqlite3.Connection:
        """The write connection inside a write transaction; else this thread's own (they are cheap)."""
        db = getattr(self._local, "writing", None) or getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
            with self._lock:
                self._all.append(db)
        return db

    def close(self) -> None:
        with self._lock:
            for db in self._all:
                try:
                    db.close()
                except sqlite3.ProgrammingError:
                    pass  # closed from another thread already
            self._all.clear()
        self._group.close()
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise ConfigError(f"cannot open database {self.path}: {exc}") from None
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    TYPES = {"id": "INTEGER PRIMARY KEY", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
             "real": "REAL", "bigint": "INTEGER"}
    # nvrs.running follows every task that becomes leased or stops being leased, whatever changed it.
    # Tasks are added queued (a trigger on INSERT cost imports 10%); migrate-db copies the counts.
    RUNNING_TRIGGERS = (
        "CREATE TRIGGER IF NOT EXISTS tasks_running_update AFTER UPDATE OF state, server ON tasks"
        " WHEN (OLD.state = 'leased' OR NEW.state = 'leased')"
        " AND (OLD.state IS NOT NEW.state OR OLD.server IS NOT NEW.server)"
        " BEGIN UPDATE nvrs SET running = running - 1 WHERE server = OLD.server AND OLD.state = 'leased';"
        " UPDATE nvrs SET running = running + 1 WHERE server = NEW.server AND NEW.state = 'leased'; END;\n"
        "CREATE TRIGGER IF NOT EXISTS tasks_running_delete AFTER DELETE ON tasks WHEN OLD.state = 'leased'"
        " BEGIN UPDATE nvrs SET running = running - 1 WHERE server = OLD.server; END;\n")

    def _transaction(self):
        return self._group.transaction()

    def _insert_many(self, db, table: str, columns: tuple[str, ...], rows: list[tuple]) -> list[int]:
        # The rows added inside this write transaction take the ids after the largest one,
        # in order (SQLite's rule for an integer primary key), so one executemany serves.
        before = db.total_changes
        db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                       " ON CONFLICT (key) DO NOTHING", rows)
        added = db.total_changes - before
        last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        return list(range(last - added + 1, last + 1))


def refuse_missing(path: str) -> None:
    """ConfigError unless the database file exists (commands other than `serve` never make an empty one)."""
    if not Path(path).exists():
        raise ConfigError(f"no database at {Path(path).resolve()}: run this where the coordinator's"
                          " database is, or name it with --db")


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only (SQLite gives its journal files the same mode)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # another process made it a moment ago
    except OSError as exc:
        raise ConfigError(f"cannot create database {path}: {exc.strerror}") from None
