"""What a task's export looks like: the row's choices over the worker host's defaults.

Per row (the sheet's columns, carried in the task's `options`): `window` (whole,
device, exact), `content` (video, pictures, both), `record_type` (all, or types such
as motion). Per worker host: the default window for rows that name none, the output
format (raw, mp4, mkv), joining a task's pieces into one file per camera, H.265 to
H.264, and the layout. ffmpeg is needed only by what a choice needs: a host whose own
settings need it and lacks it refuses to start; a row that asks for `exact` on a host
without ffmpeg is handed back for another host (a host fault), never half done.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import HostFault, SetupError, TaskFailed
from .layout import Layout
from .listing import RECORD_TYPES
from .media import FORMATS, missing_tools
from .pieces import WINDOWS
from .untrusted import clean_text

CONTENTS = ("video", "pictures", "both")
DEFAULT_WINDOW = "device"


@dataclass(frozen=True)
class Footage:
    """The worker host's export settings (`taskclient --window --format --join --transcode --layout`)."""

    window: str = DEFAULT_WINDOW
    format: str = "raw"
    join: bool = False
    transcode: str | None = None
    layout: str | None = None

    def check(self) -> Layout:
        """Refuse settings that cannot work here, once, at start (SetupError: exit 2, nothing claimed)."""
        if self.window not in WINDOWS:
            raise SetupError(f"--window {self.window!r}: choose from {', '.join(WINDOWS)}")
        if self.format not in FORMATS:
            raise SetupError(f"--format {self.format!r}: choose from {', '.join(FORMATS)}")
        if self.join and self.format == "raw":
            raise SetupError("--join writes one playable file per camera: give --format mp4 or --format mkv")
        if self.transcode not in (None, "h264"):
            raise SetupError(f"--transcode {self.transcode!r}: only h264 (H.265 material re-encoded to H.264)")
        if self.transcode and self.format == "raw":
            raise SetupError("--transcode h264 re-encodes into a playable file: give --format mp4 or --format mkv")
        layout = Layout.parse(self.layout)
        needs = self.needs_ffmpeg()
        missing = missing_tools() if needs else []
        if missing:
            raise SetupError(f"{needs} needs ffmpeg, and {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
                             " not on PATH on this host:"
                             " install ffmpeg (apt-get install ffmpeg; on Windows put ffmpeg.exe and ffprobe.exe"
                             " on PATH), or run without it (--format raw, --window device)")
        return layout

    def needs_ffmpeg(self) -> str:
        """Which of these settings needs ffmpeg ('' when none does)."""
        needs = [f"--format {self.format}" if self.format != "raw" else "", "--join" if self.join else "",
                 f"--transcode {self.transcode}" if self.transcode else "",
                 "--window exact" if self.window == "exact" else ""]
        return ", ".join(n for n in needs if n)

    def for_task(self, task: dict) -> Export:
        """The export a task asks for; bad options fail the task for good, a missing ffmpeg is a host fault."""
        options = task.get("options") or {}
        if not isinstance(options, dict):
            options = {}
        window = _choice(options.get("window"), WINDOWS, "window") or self.window
        content = _choice(options.get("content"), CONTENTS, "content") or "video"
        types = _record_types(options.get("record_type"))
        export = Export(window, content, types, self.format, self.join, self.transcode)
        if export.needs_ffmpeg and missing_tools():
            raise HostFault(f"this row asks for window {window}, which needs ffmpeg; this host has none"
                            " (install ffmpeg, or run this host with --window device only for rows that allow it)")
        return export


@dataclass(frozen=True)
class Export:
    """One task's export: what to take of each recording, and how to write it."""

    window: str
    content: str
    record_types: tuple[str | None, ...]  # (None,) for every type
    format: str
    join: bool
    transcode: str | None

    @property
    def video(self) -> bool:
        return self.content in ("video", "both")

    @property
    def pictures(self) -> bool:
        return self.content in ("pictures", "both")

    @property
    def video_format(self) -> str:
        """The container of video files: exact windows are MP4 whatever the host's format (see README)."""
        return "mp4" if self.window == "exact" and self.format != "mp4" else self.format

    @property
    def needs_ffmpeg(self) -> bool:
        return self.video and (self.video_format != "raw" or self.join or self.transcode is not None)


def _choice(value, choices: tuple[str, ...], name: str) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip().lower()
    if text not in choices:
        raise TaskFailed(f"the row asks {name} {clean_text(value, 40)!r}; this worker knows {', '.join(choices)}",
                         permanent=True)
    return text


def _record_types(value) -> tuple[str | None, ...]:
    """`all` (or nothing) for every type, else the listed types (motion, alarm, ...), each once."""
    text = str(value or "").strip().lower()
    if text in ("", "all"):
        return (None,)
    types = [t for t in re.split(r"[,;/\s]+", text) if t]
    unknown = [t for t in types if t not in RECORD_TYPES]
    if unknown or not types:
        raise TaskFailed(f"the row asks record type {clean_text(value, 60)!r}; this worker knows all, "
                         + ", ".join(RECORD_TYPES), permanent=True)
    return tuple(dict.fromkeys(types))
