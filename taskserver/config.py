"""Coordinator settings, defined once.

Precedence: command-line options > `TASKSERVER_*` environment variables > the
defaults below. `flask run` uses the environment only.
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from .errors import ConfigError

TOKEN = re.compile(r"[\x21-\x7e]+")  # what an HTTP header carries unchanged
PUBLIC_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")


@dataclass(frozen=True)
class Config:
    """Every coordinator setting, with its default."""

    tasks: str | None = "tasks.xlsx"  # sheet loaded at start ("" for none); missing default file is fine
    db: str = "taskserver.db"  # SQLite file path or sqlite:///path URL, or postgresql://user@host/database
    db_pool: int = 10  # PostgreSQL connections per coordinator (mind the server's max_connections)
    host: str = "127.0.0.1"  # bind address for `taskserver serve`
    port: int = 8080
    token: str | None = None  # bearer token for workers and admin calls
    read_token: str | None = None  # a second token that may only read (status, lists, report, events)
    lease_seconds: float = 60.0  # a claim's lease; workers heartbeat every third of it
    max_attempts: int = 5  # attempts per task before it is failed
    backoff_base: float = 10.0  # seconds before the first retry; doubles per attempt, with jitter
    backoff_max: float = 600.0  # cap on the retry delay
    max_wait: float = 5.0  # longest "ask again after" a worker is told while nothing is ready
    threads: int = 8  # waitress worker threads
    streams: int = 32  # open event streams (dashboards, `taskserver watch`); each has its own thread
    connections: int = 1000  # open connections waitress accepts (each worker keeps one alive)
    header_timeout: float = 15.0  # seconds a connection may take to send a request's head (slowloris)
    max_body: int = 8 * 1024 * 1024  # largest request body read, in bytes, before any token check
    public_host: str | None = None  # comma-separated names the coordinator answers to (behind a proxy)
    per_nvr: int = 2  # concurrent tasks per NVR (a sheet's max_parallel column overrides per NVR)
    nvr_backoff: float = 5.0  # first rest for a busy or unreachable NVR; doubles up to 300 s
    nvr_give_up: float = 1800.0  # seconds an NVR may stay busy/unreachable before its tasks fail
    events_kept: int = 200_000  # newest changes the event feed keeps for reconnecting streams
    chunk: str | None = None  # split each sheet row per camera and per this much time, e.g. "1h"
    timezone: str | None = None  # the NVRs' IANA time zone, for sheet times that carry an offset
    schedule_every: float = 30.0  # seconds between two checks for due schedules
    notify: str | None = None  # webhook URLs for notices, comma-separated (slack:, teams:, ntfy: prefixes)
    secret_key: str | None = None  # key(s) sealing NVR passwords in the database, newest first, comma-separated
    key_file: str | None = None  # a file holding those keys, one per line (default for SQLite: <db>.key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Config:
        """Defaults, then `TASKSERVER_<FIELD>` variables, then non-None overrides."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f"TASKSERVER_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _convert(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = replace(cls(), **values)
        config.check()
        return config

    def open_store(self, create: bool = True, clock=None):
        """The store this configuration names, open (`create=False`: refuse a SQLite file that does not exist)."""
        import time

        from .store import open_store

        return open_store(self.db, self.policy(), self.vault(), pool=self.db_pool, create=create,
                          clock=clock or time.time)

    def vault(self):
        """What seals NVR passwords in the database: the key variable, the key file, or one next to a SQLite file."""
        from .store import sqlite_path
        from .vault import load_vault

        return load_vault(self.secret_key, self.key_file, sqlite_path(self.db))

    def policy(self):
        """The store's protocol parameters."""
        from .store import Policy

        return Policy(lease_seconds=self.lease_seconds, max_attempts=self.max_attempts,
                      backoff_base=self.backoff_base, backoff_max=self.backoff_max, max_wait=self.max_wait,
                      per_nvr=self.per_nvr, device_backoff=self.nvr_backoff,
                      nvr_give_up=self.nvr_give_up, events_kept=self.events_kept)

    def check(self) -> None:
        """Refuse contradictory settings at start rather than misbehave later."""
        if self.lease_seconds <= 0:
            raise ConfigError("lease_seconds must be positive")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < self.backoff_base:
            raise ConfigError("backoff_base must be >= 0 and <= backoff_max")
        if self.events_kept < 1:
            raise ConfigError("events_kept must be at least 1")
        if self.db_pool < 1:
            raise ConfigError("db_pool must be at least 1")
        if self.per_nvr < 1:
            raise ConfigError("per_nvr must be at least 1")
        if self.schedule_every <= 0:
            raise ConfigError("schedule_every must be positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        if self.connections < 1 or self.header_timeout <= 0:
            raise ConfigError("connections must be at least 1 and header_timeout positive")
        if self.max_body < 64 * 1024:
            raise ConfigError("max_body must be at least 65536 bytes")
        for name in ("token", "read_token"):
            value = getattr(self, name)
            if value and not TOKEN.fullmatch(value):
                raise ConfigError(f"{name} must be 1 or more printable ASCII characters without spaces")
        for host in self.public_hosts:
            if not PUBLIC_HOST.fullmatch(host):
                raise ConfigError(f"public_host {host!r} is not a host name (give names like coord.example.com)")

    @property
    def public_hosts(self) -> frozenset[str]:
        """The names from `public_host`, lower case."""
        return frozenset(h.strip().lower().rstrip(".") for h in (self.public_host or "").split(",") if h.strip())

    @property
    def loopback(self) -> bool:
        """Whether the bind address is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _convert(name: str, raw: str, kind: str):
    try:
        if "float" in kind:
            return float(raw)
        if "int" in kind:
            return int(raw)
    except ValueError:
        raise ConfigError(f"TASKSERVER_{name.upper()}={raw!r} is not a number") from None
    return raw
