"""Worker host settings, declared once.

Each setting is one field of `HostConfig`, declared with `setting(...)`: its default,
its help, and how its text is read. Everything else comes from that declaration:
the option (`--min-free`), the variable (`TASKCLIENT_MIN_FREE`), the key in a config
file (`min-free = "2G"`), the help text, and README's table of worker options (a
test compares them). Precedence: option > variable > config file > default.

To add a setting: one field in the block it belongs to, then read it where
`cli.py` builds the worker's or the runner's settings. Nothing else.
"""
from __future__ import annotations

import argparse
import os
import re
import stat
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import SetupError
from .layout import DEFAULT as LAYOUT
from .layout import FIELDS as LAYOUT_FIELDS

PREFIX = "TASKCLIENT_"
CONFIG_VARIABLE = "TASKCLIENT_CONFIG"
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


# --- how a setting's text is read: each returns the value or raises ValueError with the reason ------------
def text(raw: str) -> str:
    """Any text."""
    return raw


def whole(raw: str) -> int:
    """A whole number of at least 1."""
    if not re.fullmatch(r"\s*\d+\s*", raw) or int(raw) < 1:
        raise ValueError(f"{raw!r} is not a whole number of at least 1")
    return int(raw)


def seconds(raw: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number of seconds") from None
    if not 0 < value < 1e7:
        raise ValueError(f"{raw!r} must be above 0 (seconds)")
    return value


def size(raw: str) -> int:
    """`2G`, `500M`, `0`: bytes (K, M, G, T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", raw, re.IGNORECASE)
    if not m:
        raise ValueError(f"{raw!r} is not a size (e.g. 2G, 500M, 0)")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def choice(*names: str) -> Callable[[str], str]:
    """One of `names`."""
    def read(raw: str) -> str:
        if raw not in names:
            raise ValueError(f"{raw!r} is not one of {', '.join(names)}")
        return raw
    read.names = names
    return read


def flag(raw: str) -> bool:
    """On or off: 1/0, true/false, yes/no, on/off."""
    lowered = raw.strip().lower()
    if lowered in TRUE | FALSE:
        return lowered in TRUE
    raise ValueError(f"{raw!r} is not on or off (1/0, true/false, yes/no)")


def setting(default, help: str, read: Callable[[str], object] = text, *, metavar: str | None = None,
            repeat: bool = False, also: tuple[str, ...] = (), shown: str | None = None):
    """One worker host setting.

    `read` turns text (an option, a variable, a config-file value) into the value;
    `repeat`: the option may be given several times (a variable or a file gives
    several values comma-separated, or as a list); `also`: older variable names that
    still work; `shown`: the default as help and README show it, when it is not the
    value itself.
    """
    return field(default=default, metadata={"help": help, "read": read, "metavar": metavar, "repeat": repeat,
                                            "also": also, "shown": shown})


@dataclass(frozen=True)
class HostConfig:
    """Every setting of a worker host, with its default."""

    # --- the coordinator ---
    server: tuple[str, ...] = setting(("http://127.0.0.1:8080",), "coordinator URL; repeat for fail-over",
                                      metavar="URL", repeat=True, also=("TASKSERVER_URL",))
    token: str | None = setting(None, "bearer token (an option shows in ps: prefer the variable or the config file)",
                                also=("TASKSERVER_TOKEN",))
    ca_file: str | None = setting(None, "CA bundle to verify an HTTPS coordinator (or the proxy in front of it)",
                                  metavar="FILE")
    name: str | None = setting(None, "this host's name in the coordinator's worker list", shown="the host name")

    # --- the host ---
    workers: int = setting(2, "worker processes", whole, metavar="N")
    downloads: str = setting("downloads", "where exported files go (in the --layout), with SHA256SUMS", metavar="DIR",
                             shown="./downloads")
    min_free: int = setting(2 * 1024**3, "keep this much free in --downloads; below it, claim nothing (0 turns the"
                            " guard off)", size, metavar="SIZE", shown="2G")
    service: bool = setting(False, "run as a service: stay when the queue drains and wait for new work; a stop"
                            " (SIGTERM) hands running tasks back and exits 0", flag)
    drained_poll: float = setting(30.0, "in service mode, seconds between asks while the queue is drained"
                                  " (with jitter)", seconds, metavar="S")
    start_method: str = setting("spawn", "how worker processes start (spawn, as on Windows)",
                                choice("spawn", "fork", "forkserver"))

    # --- what a task runs ---
    runner: str = setting("hikload", "what a task runs", choice("hikload", "command"))
    command: str | None = setting(None, "command template for --runner command, e.g. 'export.sh {server} {folder}'",
                                  metavar="TEMPLATE")
    nvr_timeout: float = setting(30.0, "seconds to wait for an NVR (connect, and between bytes); a search gets"
                                 " 10 x this", seconds, metavar="S")
    nvr_fingerprint: tuple[str, ...] = setting((), "accept exactly this certificate from that HTTPS NVR"
                                               " (repeatable)", metavar="HOST[:PORT]=SHA256", repeat=True)
    nvr_ca_file: str | None = setting(None, "CA that signed the NVRs' certificates", metavar="FILE")
    nvr_insecure: bool = setting(False, "accept any NVR certificate (encrypted, not authenticated; lab use only)",
                                 flag)
    verify: str | None = setting(None, "also check each video's duration (needs ffmpeg's ffprobe)",
                                 choice("ffprobe"))

    # --- exported files (README "Exported files") ---
    window: str = setting("device", "for rows without a window: whole stored files, the NVR's cut of the window,"
                          " or exact (trimmed with ffmpeg)", choice("whole", "device", "exact"))
    format: str = setting("raw", "raw: the device's stream as sent (.ps); mp4 (faststart) or mkv: remuxed with"
                          " ffmpeg, not re-encoded", choice("raw", "mp4", "mkv"))
    join: bool = setting(False, "one file per camera and task instead of one per recording (needs --format mp4"
                         " or mkv)", flag)
    transcode: str | None = setting(None, "re-encode H.265 material to H.264 (needs --format mp4 or mkv; H.264 is"
                                    " copied)", choice("h264"))
    layout: str = setting(LAYOUT, "folders and file name under --downloads, from "
                          + " ".join("{" + f + "}" for f in LAYOUT_FIELDS), metavar="TEMPLATE")

    # --- footage in one place ---
    upload: str | None = setting(None, "copy each done task's files here with rclone (remote:folder, or a local"
                                 " or network path); the task is done only when they arrived intact",
                                 metavar="DEST")
    upload_delete: bool = setting(False, "delete the local copy of each file once its upload is verified", flag)
    upload_config: str | None = setting(None, "rclone's config file (default: rclone's own, or $RCLONE_CONFIG)",
                                        metavar="FILE")
    rclone: str = setting("rclone", "the rclone program", metavar="PATH")

    # --- declaration helpers ---
    @staticmethod
    def settings() -> list:
        """Every setting's dataclass field, in declaration order."""
        return list(fields(HostConfig))

    @staticmethod
    def option(f) -> str:
        return "--" + f.name.replace("_", "-")

    @staticmethod
    def variables(f) -> tuple[str, ...]:
        """The variable, then the older names that still work."""
        return (PREFIX + f.name.upper(), *f.metadata["also"])

    @staticmethod
    def key(f) -> str:
        """The name in a config file (`min-free`; `min_free` is accepted too)."""
        return f.name.replace("_", "-")

    @staticmethod
    def shown_default(f) -> str:
        """The default as help and README show it."""
        if f.metadata["shown"]:
            return f.metadata["shown"]
        if f.metadata["read"] is flag:
            return "off"
        if f.default is None or f.default == ():
            return "none"
        value = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        return str(value).removesuffix(".0")

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        """Every setting as an option; each defaults to None, so that variables, the file and defaults apply."""
        parser.add_argument("--config", metavar="FILE",
                            help=f"read settings from this TOML file (default ${CONFIG_VARIABLE}); options and"
                                 " TASKCLIENT_* variables override it")
        for f in cls.settings():
            read = f.metadata["read"]
            about = f"{f.metadata['help']} (default {cls.shown_default(f)}; ${cls.variables(f)[0]})"
            if read is flag:
                parser.add_argument(cls.option(f), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                    help=about)
                continue
            parser.add_argument(cls.option(f), dest=f.name, default=None, metavar=f.metadata["metavar"],
                                type=_for_argparse(read), choices=getattr(read, "names", None),
                                action="append" if f.metadata["repeat"] else "store", help=about)

    @classmethod
    def load(cls, given: argparse.Namespace | Mapping, environ: Mapping[str, str] | None = None) -> HostConfig:
        """Options given, else variables, else the config file, else defaults; SetupError names a bad source."""
        environ = os.environ if environ is None else environ
        given = vars(given) if isinstance(given, argparse.Namespace) else dict(given)
        path = given.get("config") or environ.get(CONFIG_VARIABLE)
        from_file = read_file(Path(path)) if path else {}
        values = {}
        for f in cls.settings():
            value = given.get(f.name)
            if value is not None:
                values[f.name] = tuple(value) if f.metadata["repeat"] else value
                continue
            variable = next((v for v in cls.variables(f) if environ.get(v) is not None), None)
            if variable is not None:
                values[f.name] = _read(f, environ[variable], f"${variable}")
            elif f.name in from_file:
                values[f.name] = _read(f, from_file[f.name], f"{path}: {cls.key(f)}")
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Refuse contradictory settings at start rather than misbehave later."""
        for name in ("ca_file", "nvr_ca_file", "upload_config"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise SetupError(f"--{name.replace('_', '-')} {path}: no such file")
        if self.upload_delete and not self.upload:
            raise SetupError("--upload-delete needs --upload DEST (deleting files that went nowhere would lose them)")


def read_file(path: Path) -> dict[str, object]:
    """A TOML config file's settings by field name; unknown names and bad TOML are errors naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SetupError(f"config file {path}: {exc.strerror or exc}") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SetupError(f"config file {path}: {exc}") from None
    names = {f.name for f in HostConfig.settings()}
    found = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in names:
            known = ", ".join(HostConfig.key(f) for f in HostConfig.settings())
            raise SetupError(f"config file {path}: unknown setting {key!r}; known: {known}")
        found[name] = value
    if "token" in found and os.name == "posix" and path.stat().st_mode & stat.S_IROTH:
        print(f"taskclient: warning: {path} holds the token and other users can read it (chmod 600 {path})",
              file=sys.stderr)
    return found


def _read(f, raw: object, where: str):
    """One value from a variable or a file, read as its setting says; SetupError names where it came from."""
    read, repeat = f.metadata["read"], f.metadata["repeat"]
    try:
        if repeat:
            items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p.strip()]
            return tuple(read(_as_text(item)) for item in items)
        if read is flag and isinstance(raw, bool):
            return raw
        return read(_as_text(raw))
    except ValueError as exc:
        raise SetupError(f"{where}: {exc}") from None


def _as_text(raw: object) -> str:
    if isinstance(raw, bool | int | float | str):
        return str(raw).strip() if not isinstance(raw, bool) else str(raw).lower()
    raise ValueError(f"{raw!r} should be a single value")


def _for_argparse(read: Callable[[str], object]) -> Callable[[str], object]:
    def convert(raw: str):
        try:
            return read(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = read.__name__
    return convert
