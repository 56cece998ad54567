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
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import Cancelled, HostFault, TaskFailed

FORMATS = ("raw", "mp4", "mkv")
MUXERS = {"mp4": "mp4", "mkv": "matroska"}
MP4_AUDIO = ("aac", "mp3", "alac", "opus")
MAX_STDERR = 4000


@dataclass(frozen=True)
class Probe:
    """What ffprobe tells of a file: its duration and its codecs."""

    duration: float | None
    video: str | None
    audio: str | None


def missing_tools(tools=("ffmpeg", "ffprobe")) -> list[str]:
    """The tools of `tools` not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def probe(path: Path, label: str) -> Probe:
    """Duration and codecs of a media file; TaskFailed if ffprobe cannot read it."""
    try:
        done = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_type,codec_name",
                               "-of", "json", str(path)], capture_output=True, text=True, timeout=300)
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
            head: float = 0.0, length: float | None = None, transcode: str | None = None) -> Probe:
    """Write `sources` (one file, or pieces to join) as one `fmt` file at `target` (a temporary name).

    `head` seconds at the start are not shown and `length` bounds what is (exact
    windows). Returns the output's probe after checking its duration against the
    sources'; TaskFailed when ffmpeg fails or the duration is off.
    """
    probes = [probe(s, label) for s in sources]
    if any(p.duration is None or p.video is None for p in probes):
        raise TaskFailed(f"{label}: {target.name.lstrip('.')}: no video that ffmpeg can read in the device's stream")
    expected = sum(p.duration for p in probes) - head
    if length is not None:
        expected = min(expected, length)
    codec = probes[0].video
    recode = transcode == "h264" and codec == "hevc"
    argv = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    offset = ["-ss", f"{head:.3f}"] if recode and head else ["-itsoffset", f"{-head:.3f}"] if head else []
    if len(sources) > 1:
        listing = target.with_name(target.name + ".txt")
        listing.write_text("".join(f"file '{_quote(s)}'\n" for s in sources), encoding="utf-8")
        argv += [*offset, "-f", "concat", "-safe", "0", "-i", str(listing)]
    else:
        listing = None
        argv += [*offset, "-i", str(sources[0])]
    argv += ["-map", "0:v:0", "-map", "0:a?"]
    argv += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p"] if recode else ["-c:v", "copy"]
    audio = probes[0].audio
    argv += ["-c:a", "copy" if audio is None or fmt == "mkv" or audio in MP4_AUDIO else "aac"]
    if length is not None:
        argv += ["-t", f"{length:.3f}"]
    if fmt == "mp4":
        argv += ["-movflags", "+faststart"] + (["-tag:v", "hvc1"] if codec == "hevc" and not recode else [])
    argv += ["-f", MUXERS[fmt], str(target)]
    try:
        _run(argv, label, target.name.lstrip("."), cancel)
    finally:
        if listing is not None:
            listing.unlink(missing_ok=True)
    result = probe(target, label)
    if result.duration is None or abs(result.duration - expected) > max(0.5, 0.01 * expected):
        shown = "unknown" if result.duration is None else f"{result.duration:.2f} s"
        raise TaskFailed(f"{label}: {target.name.lstrip('.')}: ffmpeg wrote {shown} of video, {expected:.2f} s"
                         " expected; not kept")
    return result


def _quote(path: Path) -> str:
    """A path for the concat demuxer's list, inside single quotes."""
    return str(path).replace("'", "'\\''")


def _run(argv: list[str], label: str, name: str, cancel: threading.Event) -> None:
    """Run ffmpeg; stop it when the task is cancelled; TaskFailed with its last words when it fails."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
