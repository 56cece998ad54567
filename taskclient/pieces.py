"""What a task exports of each listed recording: the whole file, or only its part of the window.

Window modes (a row's `window`, else the worker host's `--window`):
- `whole`: every stored file the task owns, whole. A file belongs to the chunk in
  which it starts (a row's first chunk also takes the one running into its start),
  so chunks of a row share no file.
- `device`: only the task's window of each overlapping file: the playback URI's own
  `starttime`/`endtime` are narrowed to the window and the device cuts (it starts at
  the keyframe at or before the start). Chunks tile the row's window, so each moment
  is asked for by exactly one chunk.
- `exact`: as `device`, then trimmed to the window with ffmpeg (stream copy).
A picture is a moment: it belongs to the task whose window holds it, in every mode.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from .listing import Recording

WINDOWS = ("whole", "device", "exact")
URI_TIME = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Piece:
    """The part [start, end) of a listed recording (or a picture) that one task exports."""

    rec: Recording
    start: datetime
    end: datetime

    @property
    def whole(self) -> bool:
        return self.start <= self.rec.start and self.end >= self.rec.end

    @property
    def span(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def identity(self) -> str:
        """This piece, the same on every attempt: its recording and its part."""
        return f"{self.rec.identity}@{self.start:%Y%m%dT%H%M%S}-{self.end:%Y%m%dT%H%M%S}"

    def request(self) -> Recording:
        """What to ask the device for: the listed recording, or one narrowed to this piece (size then unknown)."""
        if self.whole or self.rec.content != "video":
            return self.rec
        return replace(self.rec, start=self.start, end=self.end, uri=narrow(self.rec.uri, self.start, self.end),
                       size=None)

    def estimate(self) -> int:
        """Bytes the device will send (for the free-space check): a share of the file's size."""
        size = self.rec.size or 0
        if self.whole or not self.rec.span:
            return size
        return int(size * min(1.0, self.span / self.rec.span)) + size // 100


def cut(recordings: list[Recording], start: datetime | None, end: datetime | None, window: str,
        takes_earlier: bool) -> list[Piece]:
    """The pieces a task exports of what the device listed, oldest first per camera."""
    pieces = []
    for rec in recordings:
        if rec.content != "video":
            if start is None or start <= rec.start < end:
                pieces.append(Piece(rec, rec.start, rec.end))
        elif start is None or end is None:
            pieces.append(Piece(rec, rec.start, rec.end))
        elif window == "whole":
            if rec.start < end and (rec.start >= start or takes_earlier):
                pieces.append(Piece(rec, rec.start, rec.end))
        else:
            a, b = max(rec.start, start), min(rec.end, end)
            if b > a:
                pieces.append(Piece(rec, a, b))
    return sorted(pieces, key=lambda p: (p.rec.track, p.rec.content, p.start, p.rec.identity))


def narrow(uri: str, start: datetime, end: datetime) -> str:
    """The device's playback URI with `starttime`/`endtime` set to [start, end) and no `size=`.

    The rest of the query stays as the device wrote it (its `name=` identifies the
    stored file); `size=` would describe the whole file, not the part asked for.
    """
    base, _, query = uri.partition("?")
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0].lower() not in ("starttime", "endtime", "size")]
    times = [f"starttime={start:{URI_TIME}}", f"endtime={end:{URI_TIME}}"]
    return f"{base}?{'&'.join(times + kept)}"
