"""One recording from the NVR to disk: streamed, checked, fsynced, then renamed.

A final name exists only for a file known complete. How complete is known:
- the playback URI's `size=` or the answer's Content-Length: the bytes written must
  match it (a clean close mid-file leaves fewer);
- no announced length but chunked transfer encoding: the terminating chunk must
  arrive (a connection closed before it raises, and the attempt fails);
- neither (the answer simply ends when the device closes the connection): a cut
  cannot be told from the end, so such a download is accepted only with
  `--verify ffprobe`, which compares the video's duration with the recording's span;
  without it the task fails for good, saying so.
Error answers (XML, HTML, non-200) are never written; the device's text is cleaned.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from pathlib import Path
from xml.sax.saxutils import escape

import requests

from .errors import Cancelled, HostFault, NotSupported, TaskFailed
from .isapi import MAX_ERROR_BODY, NVR, check_status, reason, refuse_doctype
from .listing import Recording
from .paths import confine

BLOCK = 1024 * 1024
DOWNLOAD = "/ISAPI/ContentMgmt/download"
_methods: dict[str, str] = {}  # per worker process: the method each device accepted for downloads


def download(nvr: NVR, rec: Recording, folder: Path, name: str, progress, cancel: threading.Event,
             check_video: bool = False) -> str:
    """Download `rec` to `folder/name`; return its SHA-256 (hex). TaskFailed/Cancelled/HostFault on failure."""
    final = confine(folder, name)
    part = confine(folder, f".{name}.part")
    body = ('<?xml version="1.0" encoding="UTF-8"?><downloadRequest version="1.0" '
            'xmlns="http://www.isapi.org/ver20/XMLSchema">'
            f"<playbackURI>{escape(rec.uri)}</playbackURI></downloadRequest>")
    what = f"download of {name}"
    first = _methods.get(nvr.base, "GET")
    written = 0
    expected = None
    chunked = False
    try:
        for method in (first, "POST" if first == "GET" else "GET"):
            try:
                with nvr.open(method, DOWNLOAD, body, what) as response:
                    _methods[nvr.base] = method
                    expected = _framing(nvr, response, rec, name, check_video, what)
                    chunked = "chunked" in response.headers.get("Transfer-Encoding", "").lower()
                    folder.mkdir(parents=True, exist_ok=True)
                    digest = hashlib.sha256()
                    with open(part, "wb") as out:
                        for block in response.iter_content(BLOCK):
                            if cancel.is_set():
                                raise Cancelled("cancelled")
                            out.write(block)
                            digest.update(block)
                            written += len(block)
                            progress.add_bytes(len(block))
                        out.flush()
                        os.fsync(out.fileno())
                break
            except NotSupported:
                if method != first:
                    raise
        if expected is not None and written != expected:
            raise TaskFailed(f"{nvr.label}: {name}: download cut after {written} of {expected} bytes")
        if check_video:
            check_duration(part, rec, nvr.label, name)
        os.replace(part, final)
        return digest.hexdigest()
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
    finally:
        part.unlink(missing_ok=True)


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
    if length is not None and not length.strip().isdigit():
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
    try:
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                str(path)], capture_output=True, text=True, timeout=300)
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
