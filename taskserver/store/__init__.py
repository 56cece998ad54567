"""Durable task state behind one interface; `open_store` picks the back-end from a URL."""
from __future__ import annotations

import time

from ..errors import ConfigError
from ..vault import Vault
from .base import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    Claim,
    Clock,
    ImportResult,
    Policy,
    Schedule,
    State,
    Store,
    TaskSpec,
)

__all__ = ["ACTIVE", "TERMINAL", "TRANSITIONS", "Claim", "Clock", "ImportResult", "Policy", "Schedule", "State",
           "Store", "TaskSpec", "open_store", "sqlite_path"]


def open_store(url: str, policy: Policy, vault: Vault, pool: int = 10, clock: Clock = time.time,
               create: bool = True) -> Store:
    """Open the store named by `url`: a file path or `sqlite:///path` (SQLite), or `postgresql://...`.

    `pool` caps a PostgreSQL store's connections (a SQLite store has one per thread);
    `create=False` refuses a SQLite file that does not exist yet rather than making an
    empty one (every command but `serve`).
    """
    path = sqlite_path(url)
    if path is None:
        from .postgres import PostgresStore

        return PostgresStore(url, policy, vault, clock, pool)
    from .sqlite import SQLiteStore

    return SQLiteStore(path, policy, vault, clock, create)


def sqlite_path(url: str) -> str | None:
    """The SQLite file a database URL names, or None for a PostgreSQL URL."""
    if url.startswith(("postgresql://", "postgres://")):
        return None
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    elif "://" in url:
        from .postgres import redact

        raise ConfigError(f"unsupported database URL {redact(url)!r}: use a file path, sqlite:///path"
                          " or postgresql://user@host/database")
    else:
        path = url
    if not path:
        raise ConfigError("database path is empty")
    return path
