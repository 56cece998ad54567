"""Coordinator settings, defined once.

Precedence: command-line options > `TASKSERVER_*` environment variables > the
defaults below. `flask run` uses the environment only.
"""
from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from .errors import ConfigError

TOKEN = re.compile(r"[\x21-\x7e]+")  # what an HTTP header carries unchanged
PUBLIC_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")


DB_COMMANDS = ("serve", "import", "requeue", "export", "rotate-key")  # the commands that open the database


def setting(default, help: str, commands: tuple[str, ...] = ("serve",), option: bool = True):
    """One setting: its default, its help, and the commands that take it as an option.

    Everything else is derived from this one declaration: the option name
    (`--lease-seconds`), the variable (`TASKSERVER_LEASE_SECONDS`), the help text
    with its default, and README's configuration table (a test compares them).
    `option=False`: the variable only (a secret would show in `ps` on a command line).
    """
    return field(default=default, metadata={"help": help, "commands": commands if option else ()})


@dataclass(frozen=True)
class Config:
    """Every coordinator setting, with its default."""

    tasks: str | None = setting("tasks.xlsx", "sheet (.xlsx or .csv) imported at start, idempotently; '' for none")
    db: str = setting("taskserver.db", "SQLite file (or sqlite:///path), or postgresql://user@host/database;"
                      " keep a database password in TASKSERVER_DB, PGPASSWORD or ~/.pgpass, not in an option",
                      DB_COMMANDS)
    db_pool: int = setting(10, "PostgreSQL connections per coordinator, borrowed per request")
    host: str = setting("127.0.0.1", "bind address")
    port: int = setting(8080, "port (0: a free one; the address is printed)")
    token: str | None = setting(None, "bearer token; required beyond loopback (generated if missing)")
    read_token: str | None = setting(None, "a token that can only read (status, lists, events, metrics, report)")
    lease_seconds: float = setting(60.0, "lease length; workers heartbeat every third of it")
    max_attempts: int = setting(5, "attempts per task before it is failed")
    backoff_base: float = setting(10.0, "first retry delay in seconds; doubles per attempt, with jitter")
    backoff_max: float = setting(600.0, "retry delay cap in seconds")
    max_wait: float = setting(5.0, "longest 'ask again after' told to idle workers")
    threads: int = setting(8, "waitress threads")
    streams: int = setting(32, "open event streams (dashboards, watch); each gets a thread of its own")
    connections: int = setting(1000, "open connections accepted: at least the number of workers")
    header_timeout: float = setting(15.0, "seconds a connection may take to send a request's head")
    max_body: int = setting(8 * 1024 * 1024, "largest request body read, in bytes")
    public_host: str | None = setting(None, "names this coordinator answers to besides its addresses,"
                                            " comma-separated (behind a proxy)")
    per_nvr: int = setting(2, "concurrent tasks per NVR (a sheet's max_parallel overrides)")
    nvr_backoff: float = setting(5.0, "first rest in seconds for a busy or unreachable NVR; doubles up to 300")
    nvr_give_up: float = setting(1800.0, "seconds an NVR may stay busy, unreachable or refuse a password before"
                                         " its tasks fail")
    login_trials: int = setting(2, "tasks of an NVR user whose password is not yet seen to work that may run at"
                                   " once, whatever the NVR's cap (each may cost a failed login)")
    events_kept: int = setting(200_000, "newest task changes kept for event streams that reconnect")
    chunk: str | None = setting(None, "split rows per camera and per this much time (1h)", ("serve", "import"))
    timezone: str | None = setting(None, "the NVRs' IANA zone (or auto), for sheet times written with an offset"
                                         " and relative windows", ("serve", "import"))
    schedule_every: float = setting(30.0, "seconds between two checks for due schedules")
    paper: str = setting("a4", "paper the Excel report is set up to print on: a4 or letter", ("serve", "export"))
    notify: str | None = setting(None, "webhook URLs for notices, comma-separated (slack:, teams:, ntfy: prefixes)")
    secret_key: str | None = setting(None, "key(s) sealing NVR passwords in the database, newest first,"
                                           " comma-separated", option=False)
    key_file: str | None = setting(None, "file with the keys sealing NVR passwords, one per line, newest first"
                                         " (without it and TASKSERVER_SECRET_KEY, SQLite uses <db>.key)", DB_COMMANDS)

    @staticmethod
    def settings() -> list:
        """Every setting's dataclass field, in declaration order."""
        return list(fields(Config))

    @staticmethod
    def variable(f) -> str:
        return f"TASKSERVER_{f.name.upper()}"

    @staticmethod
    def option(f) -> str:
        return "--" + f.name.replace("_", "-")

    @staticmethod
    def shown_default(f) -> str:
        """The default as README and help show it."""
        return "none" if f.default is None else str(f.default).removesuffix(".0")

    @classmethod
    def add_options(cls, parser, command: str) -> list[str]:
        """Add the options of `command` to an argparse parser; return their field names."""
        names = []
        for f in cls.settings():
            if command in f.metadata["commands"]:
                kind = int if f.type == "int" else float if f.type == "float" else str
                parser.add_argument(cls.option(f), type=kind, dest=f.name, default=None,
                                    help=f"{f.metadata['help']} (default {cls.shown_default(f)};"
                                         f" ${cls.variable(f)})")
                names.append(f.name)
        return names

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> Config:
        """Defaults, then `TASKSERVER_<FIELD>` variables, then non-None overrides."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(cls.variable(f))
            if raw is not None:
                values[f.name] = _convert(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = replace(cls(), **values)
        config.check()
        return config

    def open_store(self, create: bool = True, clock=None):
        """The store this configuration names, open (`create=False`: refuse a SQLite file that does not exist)."""
        import time

        from .store import open_store, sqlite_path
        from .store.sqlite import refuse_missing

        if not create and (path := sqlite_path(self.db)) is not None:
            refuse_missing(path)  # before the vault, which would make a key file for a database that is not there
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
                      nvr_give_up=self.nvr_give_up, login_trials=self.login_trials, events_kept=self.events_kept)

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
        if self.paper not in ("a4", "letter"):
            raise ConfigError(f"paper must be a4 or letter, not {self.paper!r}")
        if self.per_nvr < 1 or self.login_trials < 1:
            raise ConfigError("per_nvr and login_trials must be at least 1")
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
