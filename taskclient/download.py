"""One recording (or picture) from the NVR to a temporary file: streamed, checked, fsynced.

The caller renames it to its final name only when it is known complete (or hands it
to ffmpeg first). The SHA-256 is computed while the bytes stream in, and the first
bytes tell what the device sent (`extension`: Hikvision's IMKH/MPEG-PS, MP4, JPEG).
How complete is known:
- the playback URI's `size=` or the answer's Content-Length: the bytes written must
  match it (a clean close mid-file leaves fewer);
- no announced length but chunked transfer encoding: the terminating chunk must
  arrive (a connection closed before it raises, and the attempt fails);
- neither (the answer simply ends when the device closes the connection): a cut
  cannot be told from the end, so such a download is accepted only with
  `--verify ffprobe`, which compares the video's duration with the recording's span;
  without it the task fails for good, saying so.
Error answers (XML, HTML, non-200) are never written; the device's text is cleaned.
A picture is fetched by a GET of its playback URI's path (checked in `listing`) on the
task's own NVR; a video by `ContentMgmt/download` with the playback URI in the body.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import queue
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import requests

from .errors import Cancelled, HostFault, NotSupported, TaskFailed
from .isapi import MAX_ERROR_BODY, NVR, check_status, reason, refuse_doctype
from .listing import Recording

BLOCK = 1024 * 1024
DOWNLOAD = "/ISAPI/ContentMgmt/download"
_methods: dict[str, str] = {}  # per worker process: the method each device accepted for downloads
# What the first bytes say the device sent, and the honest extension for it.
SIGNATURES = ((b"IMKH", ".ps"), (b"\x00\x00\x01\xba", ".ps"), (b"\xff\xd8\xff", ".jpg"), (b"\x1a\x45\xdf\xa3", ".mkv"))


@dataclass(frozen=True)
class Fetched:
    """A download complete in its temporary file: its digest, size and what it holds."""

    sha256: str
    size: int
    extension: str
    head: bytes = b""  # the first block (up to 64 KiB): what the stream says of itself


def extension(head: bytes) -> str:
    """The extension the first bytes call for; `.bin` when they are none of the known kinds."""
    if head[4:8] == b"ftyp":
        return ".mp4"
    return next((ext for magic, ext in SIGNATURES if head.startswith(magic)), ".bin")


def download(nvr: NVR, rec: Recording, part: Path, name: str, progress, cancel: threading.Event,
             check_video: bool = False, pipe=None) -> Fetched:
    """Download `rec` into `part` (made with its folders); TaskFailed/Cancelled/HostFault on failure.

    The caller owns `part`: it renames it when the download returns, and removes it when it raises.
    `pipe(first_block)` may return a stream to write into instead (ffmpeg's standard input): then
    nothing is written to `part` and the digest is of what went into the pipe.
    """
    if rec.content == "picture":
        split = urlsplit(rec.uri)
        attempts = [("GET", split.path + (f"?{split.query}" if split.query else ""), None)]
    else:
        body = ('<?xml version="1.0" encoding="UTF-8"?><downloadRequest version="1.0" '
                'xmlns="http://www.isapi.org/ver20/XMLSchema">'
                f"<playbackURI>{escape(rec.uri)}</playbackURI></downloadRequest>")
        first = _methods.get(nvr.base, "GET")
        attempts = [(method, DOWNLOAD, body) for method in (first, "POST" if first == "GET" else "GET")]
    what = f"download of {name}"
    written = 0
    expected = None
    chunked = False
    head = b""
    try:
        for method, path, body in attempts:
            try:
                with nvr.open(method, path, body, what) as response:
                    if path == DOWNLOAD:
                        _methods[nvr.base] = method
                    expected = _framing(nvr, response, rec, name, check_video and rec.content == "video", what)
                    chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
                    sink = None
                    try:
                        for block in _blocks(response):
                            if cancel.is_set():
                                raise Cancelled("cancelled")
                            if sink is None:
                                piped = pipe(block) if pipe is not None else None
                                sink = _Sink(piped) if piped is not None else _Sink(_create(part), durable=True)
                            if len(head) < 65536:
                                head += bytes(block[:65536 - len(head)])
                            sink.put(block)
                            written += len(block)
                            progress.add_bytes(len(block))
                        sink = sink or _Sink(_create(part), durable=True)
                    except BaseException:
                        if sink is not None:
                            sink.stop()
                        raise
                    digest = sink.finish()
                break
            except NotSupported:
                if (method, path, body) == attempts[-1]:
                    raise
        if expected is not None and written != expected:
            raise TaskFailed(f"{nvr.label}: {name}: download cut after {written} of {expected} bytes")
        if check_video and rec.content == "video" and part.exists():
            check_duration(part, rec, nvr.label, name)
        return Fetched(digest, written, extension(head), head)
    except requests.exceptions.ChunkedEncodingError as exc:  # requests' name for any cut while reading the body
        if chunked:
            raise TaskFailed(f"{nvr.label}: {name}: download cut after {written} bytes (chunked encoding ended"
                             f" before its last chunk: {reason(exc)})") from None
        raise TaskFailed(f"{nvr.label}: {name}: connection lost after {written} bytes: {reason(exc)}") from None
    except requests.ConnectionError as exc:
        if written == 0:  # refused or reset before any data: the device, not this download
            raise TaskFailed(f"{nvr.label} unreachable while downloading {name}: {reason(exc)}",
                             device="unreachable") from None
        raise TaskFailed(f"{nvr.label}: {name}: connection lost after {written} bytes: {reason(exc)}") from None
    except requests.RequestException as exc:
        raise TaskFailed(f"{nvr.label}: {name}: connection lost after {written} bytes: {reason(exc)}") from None


class _Sink:
    """Writes and hashes a download's blocks on a thread of its own while the next block arrives.

    Socket reads, file writes and SHA-256 all release the GIL, so they overlap; at most
    QUEUED blocks wait in between (memory stays bounded). A write error (disk full)
    is raised in the downloading thread, as if it had written the block itself.
    """

    QUEUED = 8

    def __init__(self, out, durable: bool = False):
        self.out = out
        self.durable = durable  # a file: fsynced and closed at the end (a pipe is closed by its reader's owner)
        self.digest = hashlib.sha256()
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(self.QUEUED)
        self.thread = threading.Thread(target=self._write, daemon=True, name="download-writer")
        self.thread.start()

    def _write(self) -> None:
        while (block := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.out.write(block)
                    self.digest.update(block)
                except BaseException as exc:  # handed to the downloading thread
                    self.error = exc

    def put(self, block) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(block)

    def stop(self) -> None:
        """The download failed: let the writer end (what it wrote is removed by the caller)."""
        self.error = self.error or Cancelled("stopped")
        self.queue.put(None)
        self.thread.join()
        if self.durable:
            self.out.close()

    def finish(self) -> str:
        """Wait for every block to be written, flush and fsync; the SHA-256 (hex) of what was written."""
        self.queue.put(None)
        self.thread.join()
        try:
            if self.error is not None:
                raise self.error
            self.out.flush()
            if self.durable:
                os.fsync(self.out.fileno())
        finally:
            if self.durable:
                self.out.close()
        return self.digest.hexdigest()


def _blocks(response: requests.Response):
    """The body as the socket delivers it, one read per block (urllib3's layers copy every block twice).

    http.client's own reader keeps the framing: it stops at the Content-Length (a shorter body is
    caught by the length check), and chunked encoding that ends early raises IncompleteRead.
    """
    reader = getattr(response.raw, "_fp", None)
    if not hasattr(reader, "read1") or response.headers.get("Content-Encoding"):
        yield from response.iter_content(BLOCK)
        return
    while True:
        try:
            block = reader.read1(BLOCK)
        except TimeoutError as exc:  # named as requests names them when it reads a body, for one set of messages
            raise requests.ConnectionError(exc) from None
        except (http.client.HTTPException, OSError) as exc:  # a cut or reset: the connection, not this host's disk
            raise requests.exceptions.ChunkedEncodingError(exc) from None
        if not block:
            # The body was read to its end: the connection may carry the next request (keep-alive),
            # as when requests reads it, rather than a new connection while the device winds this one down.
            response._content_consumed = True
            return
        yield block


def _create(part: Path):
    """Open `part` for writing, making its folders (again, if another process just removed them empty)."""
    for _ in range(3):
        part.parent.mkdir(parents=True, exist_ok=True)
        try:
            return open(part, "wb")
        except FileNotFoundError:
            continue
    return open(part, "wb")


def _framing(nvr: NVR, response: requests.Response, rec: Recording, name: str, check_video: bool,
             what: str) -> int | None:
    """The length the answer must have, or None when only chunked framing (or the duration check) proves its end."""
    kind = response.headers.get("Content-Type", "").lower()
    if "xml" in kind or "html" in kind or "json" in kind:
        data = response.raw.read(MAX_ERROR_BODY, decode_content=True) or b""
        refuse_doctype(data, nvr.label, what)
        check_status(data, nvr.label, what)
        raise TaskFailed(f"{nvr.label}: {name}: the device answered with {kind.split(';')[0][:40]}, not video")
    if response.headers.get("Content-Encoding", "identity").lower() not in ("identity", ""):
        raise TaskFailed(f"{nvr.label}: {name}: the device sent a compressed recording; refused")
    length = response.headers.get("Content-Length")
    if length is not None and not (length.strip().isascii() and length.strip().isdigit() and len(length.strip()) <= 18):
        raise TaskFailed(f"{nvr.label}: {name}: the device sent an invalid Content-Length")
    announced = int(length) if length is not None else None
    chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
    if announced is not None and rec.size is not None and announced != rec.size:
        raise TaskFailed(f"{nvr.label}: {name}: listed as {rec.size} bytes, sent as {announced}")
    expected = rec.size if rec.size is not None else announced
    if expected is None and not chunked and not check_video:
        raise TaskFailed(f"{nvr.label}: {name}: the device announces no length (no size= in the playback URI,"
                         " no Content-Length, no chunked encoding), so a cut download cannot be told from a"
                         " complete one; run the worker with --verify ffprobe to accept it by its duration",
                         permanent=True)
    return expected


def check_duration(path: Path, rec: Recording, label: str, name: str) -> None:
    """With --verify ffprobe: the video must last as long as the NVR says the recording spans."""
    from .media import SAFE_INPUT, demuxer  # media reads this module's signatures

    try:
        probe = subprocess.run(["ffprobe", "-v", "error", *SAFE_INPUT, "-f", demuxer(path, label), "-show_entries",
                                "format=duration", "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                               timeout=300)
    except FileNotFoundError:
        raise HostFault("ffprobe is missing on this worker host (install ffmpeg, or drop --verify)") from None
    except (subprocess.SubprocessError, OSError):
        raise TaskFailed(f"{label}: {name}: ffprobe cannot read it as video") from None
    try:
        lasts = float(probe.stdout.strip())
    except ValueError:
        raise TaskFailed(f"{label}: {name}: ffprobe cannot read it as video") from None
    span = rec.span
    if abs(lasts - span) > max(2.0, 0.05 * span):
        raise TaskFailed(f"{label}: {name}: the video lasts {lasts:.1f} s but the recording spans {span:.0f} s"
                         " (ffprobe)")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file already on disk (a recording completed by an earlier attempt), read block by block."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()
