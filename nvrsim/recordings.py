"""The simulated NVR's recordings: a deterministic catalogue and deterministic bytes.

Everything here is a pure function of the simulator's settings, so a test can
compute what the NVR holds, and every byte of every recording, without asking it.
"""
from __future__ import annotations

import hashlib
import random
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta

BLOCK = 64 * 1024
ISAPI_TIME = "%Y-%m-%dT%H:%M:%SZ"
URI_TIME = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Catalogue:
    """Which recordings exist: `channels` cameras, each recording back to back."""

    channels: int = 4
    start: datetime = datetime(2026, 1, 1)
    end: datetime = datetime(2026, 1, 2)
    interval: int = 600
    size: int = 256 * 1024
    video: bytes | None = field(default=None, repr=False, compare=False)  # a real clip served as every recording

    def tracks(self) -> list[int]:
        """Main-stream track ids, as a Hikvision NVR numbers them: 101, 201, ..."""
        return [c * 100 + 1 for c in range(1, self.channels + 1)]

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
                size = len(self.video) if self.video is not None else self._size(track, t)
                found.append(Recording(track, t, min(t + step, self.end), size, self.video))
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


@dataclass(frozen=True)
class Recording:
    """One recorded segment of one track."""

    track: int
    start: datetime
    end: datetime
    size: int
    video: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The file name hikload gives this recording: start time and track."""
        return f"{self.start:%Y%m%d%H%M%S}-{self.track}.mp4"

    def playback_uri(self, host: str) -> str:
        """The RTSP playback URI the NVR lists for this recording, size included."""
        return (
            f"rtsp://{host}/Streaming/tracks/{self.track}/"
            f"?starttime={self.start:{URI_TIME}}&endtime={self.end:{URI_TIME}}"
            f"&name={self.track:05d}{self.start:%Y%m%d%H%M%S}&size={self.size}"
        )

    def chunks(self, offset: int = 0):
        """Yield the recording's bytes from `offset` in blocks of up to BLOCK bytes."""
        if self.video is not None:
            for at in range(offset, self.size, BLOCK):
                yield self.video[at : at + BLOCK]
            return
        base = random.Random(_seed(self.track, self.start)).randbytes(BLOCK)
        index, skip = divmod(offset, BLOCK)
        while index * BLOCK < self.size:
            # Each block carries its own index, so a block served twice or out of
            # order is visible in a byte comparison.
            block = struct.pack(">Q", index) + base[8:]
            block = block[: min(BLOCK, self.size - index * BLOCK)]
            yield block[skip:]
            skip = 0
            index += 1

    def content(self) -> bytes:
        """The whole recording; for tests, which use small recordings."""
        return b"".join(self.chunks())

    def sha256(self) -> str:
        """Digest of the whole recording, computed block by block."""
        h = hashlib.sha256()
        for block in self.chunks():
            h.update(block)
        return h.hexdigest()


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


def parse_playback_uri(uri: str) -> tuple[int, datetime] | None:
    """Track and start time from a playback URI this simulator produced."""
    try:
        path, _, query = uri.partition("?")
        track = int(path.rstrip("/").rsplit("/", 1)[1])
        params = dict(p.split("=", 1) for p in query.replace("&amp;", "&").split("&") if "=" in p)
        return track, datetime.strptime(params["starttime"], URI_TIME)
    except (IndexError, KeyError, ValueError):
        return None


def _seed(track: int, start: datetime) -> int:
    digest = hashlib.sha256(f"{track}/{start:%Y%m%d%H%M%S}".encode()).digest()
    return int.from_bytes(digest[:8], "big")
