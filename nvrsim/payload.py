"""The realistic payload: what a Hikvision device sends for a recording, with real video in it.

A Hikvision download is the device's MPEG program stream behind a 40-byte `IMKH`
header. Here each video frame is one pack (pack header, a program stream map before
each keyframe, the frame in PES packets with its PTS), as the devices write them.
The frames are real H.264 (or H.265): a short pattern of whole GOPs encoded once with
ffmpeg (`testsrc`, one encoder thread, bit-exact flags, so the same bytes every time)
and cached on disk; a recording of any length repeats the pattern with running
timestamps. So sizes, cuts and every byte are computed without reading a file, and a
cut at any keyframe is cheap: the device cuts from the keyframe at or before the
asked start up to the first frame at or after the asked end.
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

# The 40-byte header Hikvision puts before the program stream ("IMKH", version, system format).
IMKH = bytes.fromhex("494d4b48" "01010000" "02000001" "10710110" "401f0000" "00fa0000") + bytes(16)
PATTERN_SECONDS = 10  # encoded once; longer recordings repeat it (a whole number of GOPs)
STREAM_TYPES = {"h264": 0x1B, "h265": 0x24}
ENCODERS = {
    "h264": ["-c:v", "libx264", "-preset", "ultrafast", "-x264-params"],
    "h265": ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params"],
}
BLOCK = 64 * 1024


@dataclass(frozen=True)
class Pattern:
    """A few seconds of encoded frames (access units) that a recording repeats; whole GOPs."""

    codec: str
    fps: int
    gop: int  # frames from one keyframe to the next
    units: tuple[bytes, ...] = field(repr=False)

    def frame(self, index: int) -> bytes:
        """Frame `index` of a recording as the device sends it: pack header, [PSM], PES packets."""
        unit = self.units[index % len(self.units)]
        pts = 9000 + index * 90000 // self.fps  # 0.1 s after the pack's clock, as muxers do
        key = index % self.gop == 0
        return _pack_header(pts - 9000) + (_psm(STREAM_TYPES[self.codec]) if key else b"") + _pes(unit, pts)

    def sizes(self) -> list[int]:
        """Byte size of each pattern frame as sent (timestamps never change a frame's size)."""
        return [len(self.frame(i)) for i in range(len(self.units))]


@dataclass(frozen=True)
class Stream:
    """One recording's stream: `frames` frames of `pattern`, cut to [first, last) by the device."""

    pattern: Pattern
    frames: int
    first: int = 0
    last: int | None = None

    @property
    def end(self) -> int:
        return self.frames if self.last is None else self.last

    @property
    def size(self) -> int:
        """Bytes sent: the IMKH header and the frames of the cut."""
        return len(IMKH) + _bytes_before(self.pattern, self.end) - _bytes_before(self.pattern, self.first)

    def cut(self, start: float, end: float) -> Stream:
        """The device's answer to a playback URI narrowed to [start, end) seconds into the recording."""
        fps, gop = self.pattern.fps, self.pattern.gop
        first = max(0, min(self.frames, int(start * fps)) // gop * gop)
        last = max(first, min(self.frames, math.ceil(end * fps)))
        return Stream(self.pattern, self.frames, first, last)

    def chunks(self, offset: int = 0):
        """The bytes from `offset`, in blocks of about BLOCK bytes."""
        block = bytearray(IMKH)
        for index in range(self.first, self.end):
            block += self.pattern.frame(index)
            if len(block) >= BLOCK:
                yield from _skip(bytes(block), offset)
                offset = max(0, offset - len(block))
                block = bytearray()
        if block:
            yield from _skip(bytes(block), offset)


def _skip(data: bytes, offset: int):
    if offset < len(data):
        yield data[offset:]


_prefix: dict[int, list[int]] = {}


def _bytes_before(pattern: Pattern, index: int) -> int:
    """Bytes of frames 0 .. index-1 of a recording (the pattern repeats)."""
    key = id(pattern)
    if key not in _prefix:
        _prefix[key] = [0, *accumulate(pattern.sizes())]
    sums = _prefix[key]
    cycles, rest = divmod(index, len(pattern.units))
    return cycles * sums[-1] + sums[rest]


def load_pattern(codec: str = "h264", resolution: str = "160x120", fps: int = 4, gop_seconds: int = 2,
                 noise: int = 0, cache: Path | None = None) -> Pattern:
    """The encoded pattern for these settings, from the cache or made once with ffmpeg.

    `noise` (0-20) adds grain the encoder must spend bits on: camera-like bitrates for benchmarks.
    """
    if codec not in ENCODERS:
        raise ValueError(f"codec {codec!r}: choose from {', '.join(ENCODERS)}")
    if not re.fullmatch(r"\d{2,4}x\d{2,4}", resolution) or fps < 1 or gop_seconds < 1 or not 0 <= noise <= 20:
        raise ValueError("resolution is WxH, fps and GOP at least 1, noise 0-20")
    gop = fps * gop_seconds
    seconds = max(PATTERN_SECONDS // gop_seconds, 1) * gop_seconds
    folder = cache or Path(os.environ.get("NVRSIM_CACHE") or Path.home() / ".cache" / "nvrsim")
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    tag = hashlib.sha256(f"{codec}/{resolution}/{fps}/{gop}/{seconds}/{noise}/{version}".encode()).hexdigest()[:16]
    path = folder / f"pattern-{codec}-{resolution}-{fps}fps-{gop}-{noise}-{tag}.es"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        _encode(path, codec, resolution, fps, gop, seconds, noise)
    units = _access_units(path.read_bytes(), codec)
    if len(units) != seconds * fps:
        raise RuntimeError(f"{path}: {len(units)} frames, expected {seconds * fps}; delete it to make it again")
    return Pattern(codec, fps, gop, tuple(units))


def _encode(path: Path, codec: str, resolution: str, fps: int, gop: int, seconds: int, noise: int) -> None:
    params = {"h264": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1:aud=1:threads=1",
              "h265": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1:aud=1:pools=1:"
                      "frame-threads=1:log-level=error"}[codec]
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(fd)
    try:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc=size={resolution}:rate={fps}:duration={seconds}",
                        *(["-vf", f"noise=alls={noise}:allf=t:all_seed=7"] if noise else []), *ENCODERS[codec], params,
                        "-threads", "1", "-pix_fmt", "yuv420p", "-fflags", "+bitexact", "-flags", "+bitexact",
                        "-f", "hevc" if codec == "h265" else "h264", "-y", tmp],
                       check=True, timeout=300, capture_output=True)
        os.replace(tmp, path)  # whole or not at all: several simulators may make it at once
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _access_units(data: bytes, codec: str) -> list[bytes]:
    """Split an Annex B stream at its access unit delimiters (NAL type 9 in H.264, 35 in H.265)."""
    delimiter = rb"\x00\x00\x00\x01\x09" if codec == "h264" else rb"\x00\x00\x00\x01\x46\x01"
    starts = [m.start() for m in re.finditer(delimiter, data)]
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


def keyframe_seconds(pattern: Pattern) -> float:
    """Seconds between keyframes."""
    return pattern.gop / pattern.fps


# --- MPEG-2 program stream syntax (ISO/IEC 13818-1 2.5) ------------------------------------
def _pack_header(scr: int, mux_rate: int = 50_000) -> bytes:
    """A 14-byte pack header with its system clock reference (90 kHz, no extension)."""
    return bytes([
        0, 0, 1, 0xBA,
        0x44 | ((scr >> 27) & 0x38) | ((scr >> 28) & 0x03),
        (scr >> 20) & 0xFF,
        (((scr >> 15) & 0x1F) << 3) | 0x04 | ((scr >> 13) & 0x03),
        (scr >> 5) & 0xFF,
        ((scr & 0x1F) << 3) | 0x04,
        0x01,
        (mux_rate >> 14) & 0xFF, (mux_rate >> 6) & 0xFF, ((mux_rate & 0x3F) << 2) | 0x03,
        0xF8,
    ])


def _psm(stream_type: int) -> bytes:
    """A program stream map naming the one video stream (0xE0) and its codec, with its CRC."""
    body = bytes([0xE0, 0xFF, 0, 0, 0, 4, stream_type, 0xE0, 0, 0])
    head = b"\x00\x00\x01\xBC" + struct.pack(">H", len(body) + 4) + body
    return head + struct.pack(">I", _crc32_mpeg(head))


def _pes(payload: bytes, pts: int) -> bytes:
    """The frame in PES packets of the video stream; the first carries the PTS."""
    out = bytearray()
    for at in range(0, len(payload), 65000):
        part = payload[at:at + 65000]
        header = bytes([0x80, 0x80, 5, *_timestamp(pts)]) if at == 0 else bytes([0x80, 0x00, 0])
        out += b"\x00\x00\x01\xE0" + struct.pack(">H", len(header) + len(part)) + header + part
    return bytes(out)


def _timestamp(pts: int) -> bytes:
    return bytes([0x21 | ((pts >> 29) & 0x0E), (pts >> 22) & 0xFF, ((pts >> 14) & 0xFE) | 1,
                  (pts >> 7) & 0xFF, ((pts << 1) & 0xFE) | 1])


def _crc32_mpeg(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc
