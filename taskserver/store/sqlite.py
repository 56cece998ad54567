"""The embedded store: one SQLite file in WAL mode.

Each thread gets its own connection in autocommit mode; every state change runs
in an explicit `BEGIN IMMEDIATE` transaction, which holds the whole file, so two
claims can never pick the same row, and is committed with synchronous=FULL
before the method returns. The transactions themselves are in `sql.py`.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..errors import ConfigError
from .base import Policy
from .sql import SQLStore


class SQLiteStore(SQLStore):
    """Task state in one SQLite file; safe for many threads and several processes on one host."""

    UNAVAILABLE = (sqlite3.OperationalError,)  # "database is locked" after the 30 s busy timeout

    def __init__(self, path: str | Path, policy: Policy):
        super().__init__(policy)
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.path = str(path)
        self.url = f"sqlite:///{self.path}"
        with self._write() as db:
            # The schema's version is the file's user_version.
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for version in self._migrate(db, current, self.path):
                db.execute(f"PRAGMA user_version = {version}")

    def _db(self) -> sqlite3.Connection:
        """This thread's connection: each thread keeps its own (SQLite connections are cheap)."""
        db = getattr(self._local, "db", None)
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

    def _begin(self, db) -> None:
        db.execute("BEGIN IMMEDIATE")

    def _insert_many(self, db, sql: str, rows: list[tuple]) -> list[int | None]:
        ids = []
        for row in rows:  # in process: one call per row costs nothing
            cur = db.execute(sql, row)
            ids.append(cur.lastrowid if cur.rowcount else None)
        return ids
