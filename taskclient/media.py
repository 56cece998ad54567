"""Playable files from the device's stream, with ffmpeg: remux, trim, join, transcode.

A Hikvision download is an MPEG program stream behind a 40-byte IMKH header; most
players refuse it. ffmpeg rewraps it without touching the pictures (`-c copy`):
- MP4 with `faststart` (the index first, so it plays while it loads) or MKV;
- `exact` windows: the device starts its cut at the keyframe before the window, so
  the first `head` seconds are marked as not shown (`-itsoffset`, an MP4 edit list)
  and the end is cut at the window's end; the frames before the start stay in the
  file because the first picture is drawn from them;
- several pieces joined into one file (the concat demuxer, stream copy);
- H.265 material re-encoded to H.264 only when asked (`--transcode h264`).
Every output is written to a temporary name and renamed only after ffprobe confirms
its duration; its SHA-256 is then computed by reading it once (ffmpeg writes MP4
indexes by seeking back, so the digest cannot be taken while it writes).
A single piece that needs no trim is remuxed while it downloads (`Remux`): the
device's program stream goes straight into ffmpeg's standard input, its codecs read
from the stream's own program stream map, so nothing is written twice.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .download import extension
from .errors import Cancelled, HostFault, TaskFailed

FORMATS = ("raw", "mp4", "mkv")
MUXERS = {"mp4": "mp4", "mkv": "matroska"}
MP4_AUDIO = ("aac", "mp3", "alac", "opus")
MAX_STDERR = 4000
# The one demuxer ffmpeg may use for a file, by what its first bytes are (`download.extension`). A device's
# bytes are never left to ffmpeg's guess: a "recording" that is really an HLS playlist, a DASH manifest or
# a concat list would make ffmpeg read other files of this host into the export.
DEMUXERS = {".ps": "mpeg", ".mp4": "mov", ".mkv": "matroska"}
SAFE_INPUT = ("-protocol_whitelist", "file,pipe")  # no network, whatever a file refers to
# Program stream map stream types (ISO/IEC 13818-1 table 2-34, and Hikvision's audio types) to codecs.
STREAM_TYPES = {0x1B: "h264", 0x24: "hevc", 0x10: "mpeg4", 0x02: "mpeg2video", 0x0F: "aac", 0x03: "mp3",
                0x04: "mp3", 0x90: "pcm_alaw", 0x91: "pcm_mulaw"}


@dataclass(frozen=True)
class Probe:
    """What ffprobe tells of a file: its duration and its codecs."""

    duration: float | None
    video: str | None
    audio: str | None


def missing_tools(tools=("ffmpeg", "ffprobe")) -> list[str]:
    """The tools of `tools` not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def demuxer(path: Path, label: str) -> str:
    """The demuxer for a device's file or our own output, from its first bytes; TaskFailed for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise TaskFailed(f"{label}: cannot read {path.name.lstrip('.')}: {exc.strerror}") from None
    kind = DEMUXERS.get(extension(head))
    if kind is None:
        raise TaskFailed(f"{label}: {path.name.lstrip('.')} is no video stream ffmpeg may read"
                         f" (it begins {head[:8]!r}); not kept")
    return kind


def probe(path: Path, label: str) -> Probe:
    """Duration and codecs of a media file; TaskFailed if ffprobe cannot read it."""
    try:
        done = subprocess.run(["ffprobe", "-v", "error", *SAFE_INPUT, "-f", demuxer(path, label), "-show_entries",
                               "format=duration:stream=codec_type,codec_name", "-of", "json", str(path)],
                              capture_output=True, text=True, timeout=300)
        data = json.loads(done.stdout or "{}")
    except FileNotFoundError:
        raise HostFault("ffprobe is missing on this worker host (install ffmpeg)") from None
    except (subprocess.SubprocessError, OSError, ValueError):
        raise TaskFailed(f"{label}: ffprobe cannot read {path.name}") from None
    streams = data.get("streams") or []
    first = {s.get("codec_type"): s.get("codec_name") for s in reversed(streams) if isinstance(s, dict)}
    try:
        duration = float((data.get("format") or {}).get("duration"))
    except (TypeError, ValueError):
        duration = None
    return Probe(duration, first.get("video"), first.get("audio"))


def convert(sources: list[Path], target: Path, fmt: str, label: str, cancel: threading.Event,
            head: float = 0.0, length: float | None = None, transcode: str | None = None,
            known: tuple[tuple[str, str | None], float, float] | None = None, asked: float | None = None) -> Probe:
    """Write `sources` (one file, or pieces to join) as one `fmt` file at `target` (a temporary name).

    `head` seconds at the start are not shown and `length` bounds what is (exact
    windows). Returns the output's probe after checking its duration against the
    sources'; TaskFailed when ffmpeg fails or the duration is off. `known` spares the
    sources' probes: their codecs (from their program stream map), the seconds asked
    for and the most a device may add before them. Without it, the sources' own
    durations must still cover the `asked` seconds: a short answer is not a window.
    """
    extra = 0.0
    if known is None:
        probes = [probe(s, label) for s in sources]
        if any(p.duration is None or p.video is None for p in probes):
            raise TaskFailed(f"{label}: {target.name.lstrip('.')}: no video that ffmpeg can read in the device's"
                             " stream")
        expected = sum(p.duration for p in probes) - head
        if asked is not None and expected < asked - max(0.5, 0.02 * asked):
            raise TaskFailed(f"{label}: {target.name.lstrip('.')}: the device sent {expected:.1f} s of video for the"
                             f" {asked:.1f} s asked; not kept")
        codec, audio = probes[0].video, probes[0].audio
    else:
        (codec, audio), expected, extra = known  # the seconds asked for: the device's pre-roll comes on top
    if length is not None:
        expected, extra = min(expected, length), 0.0
    recode = transcode == "h264" and codec == "hevc"
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    offset = ["-ss", f"{head:.3f}"] if recode and head else ["-itsoffset", f"{-head:.3f}"] if head else []
    if len(sources) > 1:
        listing = target.with_name(target.name + ".txt")
        listing.write_text("".join(f"file '{_quote(s)}'\n" for s in sources), encoding="utf-8")
        allowed = ",".join(["concat", *sorted({demuxer(s, label) for s in sources})])  # also for the files it lists
        argv += [*offset, *SAFE_INPUT, "-format_whitelist", allowed, "-f", "concat", "-safe", "0", "-i", str(listing)]
    else:
        listing = None
        argv += [*offset, *SAFE_INPUT, "-f", demuxer(sources[0], label), "-i", str(sources[0])]
    argv += _output(fmt, codec, audio, transcode, length, target)
    try:
        _run(argv, label, target.name.lstrip("."), cancel)
    finally:
        if listing is not None:
            listing.unlink(missing_ok=True)
    result = probe(target, label)
    slack = max(0.5, 0.01 * expected)
    if result.duration is None or not expected - slack <= result.duration <= expected + extra + slack:
        shown = "unknown" if result.duration is None else f"{result.duration:.2f} s"
        raise TaskFailed(f"{label}: {target.name.lstrip('.')}: ffmpeg wrote {shown} of video, {expected:.2f} s"
                         " expected; not kept")
    return result


def _output(fmt: str, codec: str | None, audio: str | None, transcode: str | None, length: float | None,
            target: Path) -> list[str]:
    """ffmpeg's output options: streams, codecs (copied unless asked), MP4's faststart, the file."""
    recode = transcode == "h264" and codec == "hevc"
    argv = ["-map", "0:v:0", "-map", "0:a?"]
    argv += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"] if recode else ["-c:v", "copy"]
    argv += ["-c:a", "copy" if audio is None or fmt == "mkv" or audio in MP4_AUDIO else "aac"]
    if length is not None:
        argv += ["-t", f"{length:.3f}"]
    if fmt == "mp4":
        argv += ["-movflags", "+faststart"] + (["-tag:v", "hvc1"] if codec == "hevc" and not recode else [])
    return argv + ["-f", MUXERS[fmt], str(target)]


def stream_codecs(head: bytes) -> tuple[str, str | None] | None:
    """(video, audio) codecs named by the program stream map in the stream's first bytes; None without one."""
    at = head.find(b"\x00\x00\x01\xbc")
    if at < 0 or len(head) < at + 12:
        return None
    end = min(len(head), at + 6 + int.from_bytes(head[at + 4:at + 6], "big"))
    pos = at + 10 + int.from_bytes(head[at + 8:at + 10], "big")
    if pos + 2 > end:
        return None
    stop = min(end - 4, pos + 2 + int.from_bytes(head[pos:pos + 2], "big"))
    pos += 2
    video = audio = None
    while pos + 4 <= stop:
        kind, stream, length = head[pos], head[pos + 1], int.from_bytes(head[pos + 2:pos + 4], "big")
        if 0xE0 <= stream <= 0xEF and video is None:
            video = STREAM_TYPES.get(kind, "unknown")
        elif 0xC0 <= stream <= 0xDF and audio is None:
            audio = STREAM_TYPES.get(kind, "unknown")
        pos += 4 + length
    return (video, audio) if video in ("h264", "hevc", "mpeg4", "mpeg2video") else None


class Remux:
    """ffmpeg turning the device's program stream, fed on its standard input, into `fmt` at `target`."""

    def __init__(self, target: Path, fmt: str, label: str, transcode: str | None):
        self.target, self.fmt, self.label, self.transcode = target, fmt, label, transcode
        self.proc: subprocess.Popen | None = None
        self.errors: list[bytes] = []

    def start(self, head: bytes):
        """ffmpeg's standard input for a stream whose codecs its first bytes name; None for anything else."""
        codecs = stream_codecs(head) if head[:4] in (b"IMKH", b"\x00\x00\x01\xba") else None
        if codecs is None:
            return None
        video, audio = codecs
        self.target.parent.mkdir(parents=True, exist_ok=True)
        argv = ["ffmpeg", "-nostdin", "-v", "error", "-y", *SAFE_INPUT, "-f", "mpeg", "-i", "pipe:0",
                *_output(self.fmt, video, audio, self.transcode, None, self.target)]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, start_new_session=True)  # see _run
        except FileNotFoundError:
            raise HostFault("ffmpeg is missing on this worker host (install ffmpeg)") from None
        threading.Thread(target=lambda: self.errors.append(self.proc.stderr.read()), daemon=True).start()
        return self.proc.stdin

    def finish(self, cancel: threading.Event, span: float, preroll: float) -> Probe:
        """Close ffmpeg's input, wait for it, and check what it wrote lasts `span` s (+ the device's preroll)."""
        self.wait(cancel)
        return self.check(span, preroll)

    def wait(self, cancel: threading.Event) -> None:
        """Close ffmpeg's input and wait for it to finish writing; TaskFailed with its words if it failed."""
        name = self.target.name.lstrip(".")
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        while self.proc.poll() is None:
            if cancel.is_set():
                self.abort()
                raise Cancelled("cancelled")
            time.sleep(0.05)
        if self.proc.returncode != 0:
            self.proc.stderr.close()
            text = b"".join(self.errors)[-MAX_STDERR:].decode(errors="replace").strip().splitlines()
            raise TaskFailed(f"{self.label}: ffmpeg could not write {name}: {' | '.join(text[-2:]) or self.proc.returncode}")

    def check(self, span: float, preroll: float) -> Probe:
        """ffprobe's word on what ffmpeg wrote: it must last `span` s, plus at most the device's preroll."""
        name = self.target.name.lstrip(".")
        result = probe(self.target, self.label)
        slack = max(0.5, 0.01 * span)
        if result.duration is None or not span - slack <= result.duration <= span + preroll + slack:
            shown = "unknown" if result.duration is None else f"{result.duration:.2f} s"
            raise TaskFailed(f"{self.label}: {name}: ffmpeg wrote {shown} of video for {span:.2f} s asked; not kept")
        return result

    def abort(self) -> None:
        """Stop ffmpeg (the download failed or the task was cancelled)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _quote(path: Path) -> str:
    """A path for the concat demuxer's list, inside single quotes."""
    return str(path).replace("'", "'\\''")


def _run(argv: list[str], label: str, name: str, cancel: threading.Event) -> None:
    """Run ffmpeg; stop it when the task is cancelled; TaskFailed with its last words when it fails."""
    try:
        # A session of its own: ffmpeg stops at a Ctrl-C or SIGTERM sent to the host's process group, and
        # a first Ctrl-C means "finish the running tasks"; the worker stops ffmpeg itself when it must.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    except FileNotFoundError:
        raise HostFault("ffmpeg is missing on this worker host (install ffmpeg)") from None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        if cancel.is_set():
            proc.kill()
            proc.wait()
            raise Cancelled("cancelled")
        time.sleep(0.1)
    reader.join(5)
    if proc.returncode != 0:
        text = b"".join(errors)[-MAX_STDERR:].decode(errors="replace").strip().splitlines()
        raise TaskFailed(f"{label}: ffmpeg could not write {name}: {' | '.join(text[-2:]) or proc.returncode}")
