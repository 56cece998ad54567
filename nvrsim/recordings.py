"""The simulated NVR's recordings and pictures: a deterministic catalogue and deterministic bytes.

Everything here is a pure function of the simulator's settings, so a test can
compute what the NVR holds, and every byte of every recording, without asking it.
Two payloads: the synthetic one (numbered blocks of pseudo-random bytes, no ffmpeg
needed, what the byte-exact tests and the demo use) and the realistic one (the
device's IMKH + MPEG-PS stream carrying real H.264 or H.265, see payload.py).
Recordings carry a record type (time, motion, alarm); every channel also takes
pictures (track x03, a small JPEG each). A playback URI narrowed to part of a
recording is cut as a device cuts it: from the keyframe at or before the start
up to the asked end.
"""
from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .payload import Pattern, Stream

BLOCK = 64 * 1024
ISAPI_TIME = "%Y-%m-%dT%H:%M:%SZ"
URI_TIME = "%Y%m%dT%H%M%SZ"
RECORD_TYPES = ("time", "motion", "alarm")  # as the search's metadataMatches name them
# A 16x16 grey baseline JPEG; each picture gets a comment segment naming it, so pictures differ.
JPEG = base64.b64decode(
    "/9j/2wBDAAg+Pkk+SVVVVVVVVWRdZGhoaGRkZGRoaGhwcHCDg4NwcHBoaHBwfHyDg4+Tj4eHg4eTk5ubm7q6srLZ2eD/////xABKAAEA"
    "AAAAAAAAAAAAAAAAAAAAAQEAAAAAAAAAAAAAAAAAAAAAEAEAAAAAAAAAAAAAAAAAAAAAEQEAAAAAAAAAAAAAAAAAAAAA/8AAEQgAEAAQ"
    "AwEiAAIRAAMRAP/aAAwDAQACEQMRAD8AAA//2Q==")


@dataclass(frozen=True)
class Catalogue:
    """Which recordings exist: `channels` cameras, each recording back to back."""

    channels: int = 4
    start: datetime = datetime(2026, 1, 1)
    end: datetime = datetime(2026, 1, 2)
    interval: int = 600
    size: int = 256 * 1024
    video: bytes | None = field(default=None, repr=False, compare=False)  # a real clip served as every recording
    pattern: Pattern | None = field(default=None, repr=False, compare=False)  # the realistic payload's frames
    gop: int = 2  # seconds between keyframes of the synthetic payload (where the device cuts)
    picture_interval: int = 300  # seconds between pictures of each channel

    def tracks(self) -> list[int]:
        """Main-stream track ids, as a Hikvision NVR numbers them: 101, 201, ..."""
        return [c * 100 + 1 for c in range(1, self.channels + 1)]

    def pictures(self, track: int, start: datetime, end: datetime) -> list[Picture]:
        """Pictures of picture track `track` (x03) taken in [start, end), oldest first."""
        if track % 100 != 3 or track - 2 not in self.tracks() or end <= start:
            return []
        step = timedelta(seconds=self.picture_interval)
        offset = timedelta(seconds=self.picture_interval // 2)  # between recording borders, not on them
        k = max(0, math.ceil(((start - self.start - offset).total_seconds()) / self.picture_interval))
        found = []
        while (t := self.start + offset + k * step) < min(end, self.end):
            if t >= start:
                found.append(Picture(track, t))
            k += 1
        return found

    def locate(self, track: int, name: str | None, start: datetime) -> Recording | None:
        """The recording a playback URI names: by its name= when it is one of ours, else the one running at `start`."""
        try:
            named = self.find(track, datetime.strptime((name or "")[-14:], "%Y%m%d%H%M%S"))
        except ValueError:
            named = None
        if named is not None and name == named.file_name:
            return named
        return self.find(track, start) or next(iter(self.recordings(track, start, start + timedelta(seconds=1))), None)

    def recordings(self, track: int, start: datetime, end: datetime) -> list[Recording]:
        """Recordings of `track` that overlap [start, end), oldest first."""
        if track not in self.tracks() or end <= start:
            return []
        step = timedelta(seconds=self.interval)
        first = max(0, int((start - self.start).total_seconds() // self.interval))
        found = []
        t = self.start + first * step
        while t < min(end, self.end):
            if t + step > start:
                stop = min(t + step, self.end)
                stream = None
                if self.pattern is not None:
                    stream = Stream(self.pattern, round((stop - t).total_seconds() * self.pattern.fps))
                size = (len(self.video) if self.video is not None else stream.size if stream is not None
                        else self._size(track, t))
                found.append(Recording(track, t, stop, size, self.video, stream, self.gop))
            t += step
        return found

    def find(self, track: int, start: datetime) -> Recording | None:
        """The recording of `track` that starts at `start`, if there is one."""
        for rec in self.recordings(track, start, start + timedelta(seconds=1)):
            if rec.start == start:
                return rec
        return None

    def _size(self, track: int, start: datetime) -> int:
        # Sizes vary between half and one and a half times the nominal size, so a
        # size check that confuses two recordings fails.
        seed = _seed(track, start)
        return max(1, int(self.size * (0.5 + (seed % 1000) / 1000)))


class _Stored:
    """What recordings and pictures share: the device's name for them and their record type."""

    track: int
    start: datetime

    @property
    def file_name(self) -> str:
        """The stored file's name, as the playback URI's name= gives it."""
        return f"{self.track:05d}{self.start:%Y%m%d%H%M%S}"

    @property
    def kind(self) -> str:
        """Its record type: what made the device record it."""
        return RECORD_TYPES[_seed(self.track, self.start) % len(RECORD_TYPES)]


@dataclass(frozen=True)
class Recording(_Stored):
    """One recorded segment of one track (or the part of it a narrowed playback URI asks for)."""

    track: int
    start: datetime
    end: datetime
    size: int
    video: bytes | None = field(default=None, repr=False, compare=False)
    stream: Stream | None = field(default=None, repr=False, compare=False)
    gop: int = 2
    first: int = 0  # the synthetic payload's cut: bytes [first, first + size) of the whole recording
    whole: int | None = None  # the whole recording's size when this is a cut

    @property
    def name(self) -> str:
        """The file name hikload gives this recording: start time and track."""
        return f"{self.start:%Y%m%d%H%M%S}-{self.track}.mp4"

    @property
    def span(self) -> float:
        return (self.end - self.start).total_seconds()

    def playback_uri(self, host: str) -> str:
        """The RTSP playback URI the NVR lists for this recording, size included."""
        return (
            f"rtsp://{host}/Streaming/tracks/{self.track}/"
            f"?starttime={self.start:{URI_TIME}}&endtime={self.end:{URI_TIME}}"
            f"&name={self.file_name}&size={self.size}"
        )

    def cut(self, start: datetime, end: datetime) -> Recording:
        """What the device sends for [start, end) of this recording: from the keyframe at or before
        `start` up to `end`; the whole recording when the range covers it (or for a real MP4 clip)."""
        s = max(0.0, (start - self.start).total_seconds())
        e = min(self.span, (end - self.start).total_seconds())
        if (s <= 0 and e >= self.span) or self.video is not None or e <= s:
            return self
        if self.stream is not None:
            stream = self.stream.cut(s, e)
            return Recording(self.track, self.start, self.end, stream.size, None, stream, self.gop, whole=self.size)
        first = self._offset(s // self.gop * self.gop)
        return Recording(self.track, self.start, self.end, self._offset(e) - first, None, None, self.gop, first,
                         self.size)

    def _offset(self, seconds: float) -> int:
        """Where `seconds` into the synthetic recording lie in its bytes (bytes flow evenly)."""
        return min(self.size, int(self.size * seconds // self.span)) if self.span else 0

    def chunks(self, offset: int = 0):
        """Yield the recording's bytes from `offset` in blocks of up to BLOCK bytes."""
        if self.video is not None:
            for at in range(offset, self.size, BLOCK):
                yield self.video[at : at + BLOCK]
            return
        if self.stream is not None:
            yield from self.stream.chunks(offset)
            return
        base = random.Random(_seed(self.track, self.start)).randbytes(BLOCK)
        offset += self.first
        stop = self.first + self.size
        index, skip = divmod(offset, BLOCK)
        while index * BLOCK < stop:
            # Each block carries its own index, so a block served twice or out of
            # order is visible in a byte comparison.
            block = struct.pack(">Q", index) + base[8:]
            block = block[: min(BLOCK, stop - index * BLOCK)]
            yield block[skip:]
            skip = 0
            index += 1

    def content(self) -> bytes:
        """The whole recording (or cut); for tests, which use small recordings."""
        return b"".join(self.chunks())

    def sha256(self) -> str:
        """Digest of the whole recording, computed block by block."""
        h = hashlib.sha256()
        for block in self.chunks():
            h.update(block)
        return h.hexdigest()


@dataclass(frozen=True)
class Picture(_Stored):
    """One picture of a picture track (x03): a moment and a small JPEG."""

    track: int
    start: datetime

    @property
    def end(self) -> datetime:
        return self.start

    def content(self) -> bytes:
        """The JPEG, with a comment segment naming the picture."""
        note = f"nvrsim {self.track} {self.start:%Y-%m-%dT%H:%M:%S}".encode()
        return JPEG[:2] + b"\xff\xfe" + struct.pack(">H", len(note) + 2) + note + JPEG[2:]

    @property
    def size(self) -> int:
        return len(self.content())

    def playback_uri(self, host: str) -> str:
        """Pictures are fetched with a plain GET on this URI (not ContentMgmt/download)."""
        return (f"http://{host}/ISAPI/Streaming/tracks/{self.track}/?starttime={self.start:{URI_TIME}}"
                f"&endtime={self.end:{URI_TIME}}&name={self.file_name}&size={self.size}")


def make_clip(seconds: float) -> bytes:
    """A real MP4 video of `seconds` (tiny test pattern), made with ffmpeg; for --video mode."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/clip.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=2:duration={seconds}",
                        "-c:v", "mpeg4", "-fflags", "+bitexact", "-y", out], check=True, timeout=120)
        with open(out, "rb") as f:
            return f.read()


def parse_playback_uri(uri: str) -> tuple[int, str | None, datetime, datetime | None] | None:
    """Track, name=, starttime and endtime (None if absent) of a playback URI."""
    try:
        path, _, query = uri.partition("?")
        track = int(path.rstrip("/").rsplit("/", 1)[1])
        params = dict(p.split("=", 1) for p in query.replace("&amp;", "&").split("&") if "=" in p)
        end = datetime.strptime(params["endtime"], URI_TIME) if "endtime" in params else None
        return track, params.get("name"), datetime.strptime(params["starttime"], URI_TIME), end
    except (IndexError, KeyError, ValueError):
        return None


def _seed(track: int, start: datetime) -> int:
    digest = hashlib.sha256(f"{track}/{start:%Y%m%d%H%M%S}".encode()).digest()
    return int.from_bytes(digest[:8], "big")
