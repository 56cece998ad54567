"""Durable task state behind one interface; `open_store` picks the back-end from a URL."""
from __future__ import annotations

from ..errors import ConfigError
from .base import TERMINAL, TRANSITIONS, Claim, ImportResult, Policy, State, Store, TaskSpec

__all__ = ["TERMINAL", "TRANSITIONS", "Claim", "ImportResult", "Policy", "State", "Store", "TaskSpec", "open_store",
           "sqlite_path"]


def open_store(url: str, policy: Policy, pool: int = 10) -> Store:
    """Open the store named by `url`: a file path or `sqlite:///path` (SQLite), or `postgresql://...`.

    `pool` caps a PostgreSQL store's connections (a SQLite store has one per thread).
    """
    path = sqlite_path(url)
    if path is None:
        from .postgres import PostgresStore

        return PostgresStore(url, policy, pool)
    from .sqlite import SQLiteStore

    return SQLiteStore(path, policy)


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
