"""The flagship runner: export a task's recordings from a Hikvision NVR.

hikload's ISAPI client does what it does well: digest authentication, device
info, the channel list and the recording search. The download itself is ours,
because hikload 1.1.4 cannot be trusted with it: it keeps each recording in
memory, never checks status codes or lengths (a cut download or a 503 error page
is saved as the .mp4 and reported as success), and downloads everything again
on a re-run. Here each recording streams to a hidden `.part` file, is checked
against the size the NVR announced, and only then takes its final name; a retry
skips files already complete. The task succeeds only when every recording the
NVR listed for the range is on disk, complete.

File names follow hikload's: `YYYYMMDDHHMMSS-<track>.mp4` from the start time.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

import requests
from requests.auth import HTTPDigestAuth

from ..errors import Cancelled, TaskFailed
from . import Progress

log = logging.getLogger("taskclient.hikload")
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Listed:
    """A recording as the NVR listed it."""

    track: str
    start: str  # as the NVR wrote it, e.g. 2026-01-01T00:10:00Z
    end: str
    uri: str
    size: int | None  # from the playback URI's size= parameter, when the firmware gives it
    name: str


class HikloadRunner:
    """Export recordings with hikload's ISAPI client and a verified streaming download."""

    name = "hikload"

    def __init__(self, timeout: float = 30.0, ca_file: str | None = None, verify: str | None = None):
        self.timeout = timeout
        self.tls_verify = ca_file or True
        self.check_video = verify == "ffprobe"  # also compare each file's duration with its time span

    def run(self, task: dict, folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        """List the task's recordings, download the missing ones, verify all of them."""
        from hikload.hikvisionapi import HikvisionServer

        scheme, host = _split_server(task["server"])
        nvr = HikvisionServer(host, task["username"], task["password"], protocol=scheme)
        label = f"NVR {host}"
        self._guarded(label, "device info", nvr.System.getDeviceInfo, user=task["username"])
        cameras = task["cameras"] or self._guarded(label, "channel list", lambda: _main_channels(nvr))
        listing: list[Listed] = []
        for camera in cameras:
            if cancel.is_set():
                raise Cancelled("cancelled")
            found = self._search(nvr, label, camera, task["start"], task["end"], taken={r.name for r in listing})
            listing += [r for r in found if _owned(r, task)]
        progress.update(total=len(listing), done=0, cameras=len(cameras))

        session = requests.Session()
        session.auth = HTTPDigestAuth(task["username"], task["password"])
        session.verify = self.tls_verify
        url = f"{scheme}://{host}/ISAPI/ContentMgmt/download"
        downloaded = 0
        try:
            for done, rec in enumerate(listing):
                if cancel.is_set():
                    raise Cancelled("cancelled")
                progress.update(current=rec.name)
                if not _complete(folder / rec.name, rec.size):
                    self._download(session, url, label, rec, folder, progress, cancel)
                    downloaded += 1
                progress.update(done=done + 1)
        finally:
            session.close()
        missing = [r.name for r in listing if not _complete(folder / r.name, r.size)]
        if missing:
            raise TaskFailed(f"{label}: {len(missing)} recording(s) incomplete after download: {', '.join(missing[:5])}")
        total = sum((folder / r.name).stat().st_size for r in listing)
        result = {"files": len(listing), "bytes": total, "downloaded": downloaded,
                  "skipped": len(listing) - downloaded, "cameras": list(cameras)}
        if not listing:
            result["note"] = "the NVR lists no recordings for these cameras in this time range"
        return result

    # --- hikload's ISAPI client, with the timeout it lacks --------------------------------
    def _guarded(self, label: str, what: str, call, user: str | None = None, factor: float = 1.0):
        """Run a hikload call with a deadline and turn its errors into clear TaskFailed messages.

        hikload's requests have no timeout, so a hung NVR would hold the task forever:
        the call runs in a helper thread that is abandoned when the deadline passes.
        """
        from hikload.hikvisionapi import HikvisionException

        # A daemon thread, not an executor: executor threads are joined at interpreter
        # exit, so a request hung forever would keep the worker process from exiting.
        outcome: dict = {}

        def target():
            try:
                outcome["value"] = call()
            except BaseException as exc:  # handed to the caller below
                outcome["error"] = exc

        thread = threading.Thread(target=target, daemon=True, name="hikload-call")
        thread.start()
        thread.join(self.timeout * factor)
        if thread.is_alive():
            raise TaskFailed(f"{label}: no answer to the {what} request within {self.timeout * factor:.0f} s",
                             device="unreachable")
        try:
            if "error" in outcome:
                raise outcome["error"]
            return outcome["value"]
        except HikvisionException as exc:
            if "unauthorized" in str(exc).lower():
                raise TaskFailed(f"{label} refused the password of user {user!r} (HTTP 401 Unauthorized)") from None
            raise TaskFailed(f"{label}: {what} failed: {exc}") from None
        except requests.RequestException as exc:
            raise TaskFailed(f"{label} unreachable during {what}: {_reason(exc)}", device="unreachable") from None
        except (ValueError, TypeError, KeyError, AttributeError, SyntaxError) as exc:
            raise TaskFailed(f"{label}: unexpected answer to the {what} request ({type(exc).__name__})") from None

    def _search(self, nvr, label: str, camera: str, start: str | None, end: str | None,
                taken: set[str]) -> list[Listed]:
        """Every video recording of one camera overlapping the range, each once."""
        if start is None:
            call = lambda: nvr.ContentMgmt.search.getAllRecordingsForID(camera)  # noqa: E731
        else:
            call = lambda: nvr.ContentMgmt.search.getPastRecordingsForID(camera, f"{start}Z", f"{end}Z")  # noqa: E731
        answer = self._guarded(label, f"search of camera {camera}", call, factor=10)["CMSearchResult"]
        if str(answer.get("numOfMatches")) == "0" or answer.get("responseStatusStrg") == "NO MATCHES":
            return []
        items = answer["matchList"]["searchMatchItem"]
        items = [items] if isinstance(items, dict) else items
        found: dict[str, Listed] = {}
        for item in items:
            if not isinstance(item, dict):
                raise TaskFailed(f"{label}: unexpected search answer for camera {camera}; listing is unreliable")
            media = item["mediaSegmentDescriptor"]
            # hikload pages by the last item's start time, so the item on each page
            # boundary comes twice: keep one of each playback URI.
            if media.get("contentType", "video") != "video" or media["playbackURI"] in found:
                continue
            begins = item["timeSpan"]["startTime"]
            name = f"{re.sub(r'[-T:Z]', '', begins)}-{camera}.mp4"
            while name in taken:  # two recordings starting in the same second
                name = name.replace(".mp4", "+.mp4")
            taken.add(name)
            size = re.search(r"[?&]size=(\d+)", media["playbackURI"])
            found[media["playbackURI"]] = Listed(camera, begins, item["timeSpan"]["endTime"], media["playbackURI"],
                                                 int(size.group(1)) if size else None, name)
        return list(found.values())

    # --- our download: streamed, verified, renamed when complete --------------------------
    def _download(self, session, url: str, label: str, rec: Listed, folder: Path, progress: Progress,
                  cancel: threading.Event) -> None:
        body = ('<?xml version="1.0" encoding="UTF-8"?><downloadRequest version="1.0" '
                'xmlns="http://www.isapi.org/ver20/XMLSchema">'
                f"<playbackURI>{escape(rec.uri)}</playbackURI></downloadRequest>")
        part = folder / f".{rec.name}.part"
        written = 0
        try:
            with session.get(url, data=body, stream=True, timeout=(self.timeout, self.timeout),
                             headers={"Content-Type": "application/xml"}) as response:
                _check_answer(response, label, rec)
                announced = response.headers.get("Content-Length")
                expected = rec.size if rec.size is not None else (int(announced) if announced else None)
                if announced and rec.size is not None and int(announced) != rec.size:
                    raise TaskFailed(f"{label}: {rec.name}: listed as {rec.size} bytes, sent as {announced}")
                with open(part, "wb") as out:
                    for block in response.iter_content(CHUNK):
                        if cancel.is_set():
                            raise Cancelled("cancelled")
                        out.write(block)
                        written += len(block)
                        progress.add_bytes(len(block))
                    out.flush()
                    os.fsync(out.fileno())
            if expected is not None and written != expected:
                raise TaskFailed(f"{label}: {rec.name}: download cut after {written} of {expected} bytes")
            if self.check_video:
                _check_duration(part, rec, label)
            os.replace(part, folder / rec.name)
        except requests.ConnectionError as exc:
            if written == 0:  # refused or reset before any data: the device, not this download
                raise TaskFailed(f"{label} unreachable while downloading {rec.name}: {_reason(exc)}",
                                 device="unreachable") from None
            raise TaskFailed(f"{label}: {rec.name}: connection lost after {written} bytes: {_reason(exc)}") from None
        except requests.RequestException as exc:
            raise TaskFailed(f"{label}: {rec.name}: connection lost after {written} bytes: {_reason(exc)}") from None
        finally:
            part.unlink(missing_ok=True)


def _check_answer(response: requests.Response, label: str, rec: Listed) -> None:
    """Refuse error answers that hikload would have saved as video."""
    if response.status_code == 401:
        raise TaskFailed(f"{label} refused the credentials while downloading {rec.name} (HTTP 401)")
    kind = response.headers.get("Content-Type", "")
    if response.status_code != 200 or "xml" in kind or "html" in kind:
        detail = ""
        try:
            root = ET.fromstring(response.content[:65536])
            detail = next((el.text for el in root.iter() if el.tag.endswith("statusString") and el.text), "")
        except ET.ParseError:
            pass
        busy = response.status_code == 503
        raise TaskFailed(f"{label}: {rec.name}: HTTP {response.status_code}{' (device busy)' if busy else ''}"
                         f" {detail}".rstrip(), device="busy" if busy else None)


def _check_duration(path: Path, rec: Listed, label: str) -> None:
    """With --verify ffprobe: the video must last as long as the NVR says the recording spans."""
    span = (_nvr_time(rec.end) - _nvr_time(rec.start)).total_seconds()
    try:
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                str(path)], capture_output=True, text=True, timeout=300)
        lasts = float(probe.stdout.strip())
    except (ValueError, subprocess.SubprocessError, OSError):
        raise TaskFailed(f"{label}: {rec.name}: ffprobe cannot read it as video") from None
    if abs(lasts - span) > max(2.0, 0.05 * span):
        raise TaskFailed(f"{label}: {rec.name}: the video lasts {lasts:.1f} s but the recording spans {span:.0f} s"
                         " (ffprobe)")


def _nvr_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "")).replace(tzinfo=None)


def _owned(rec: Listed, task: dict) -> bool:
    """Whether this task owns the recording: it starts in [start, end), or earlier for a first chunk.

    The NVR lists every recording that overlaps the range; ownership by start time
    keeps chunks of one row from downloading the same recording twice.
    """
    if task["start"] is None:
        return True
    try:
        begins = _nvr_time(rec.start)
    except ValueError:
        return True  # cannot tell: better twice than never
    start, end = datetime.fromisoformat(task["start"]), datetime.fromisoformat(task["end"])
    return begins < end and (begins >= start or task.get("takes_earlier", True))


def _complete(path: Path, size: int | None) -> bool:
    """A final name exists only after a verified download, so it is complete if its size is right."""
    try:
        return path.stat().st_size == size if size is not None else path.is_file()
    except FileNotFoundError:
        return False


def _main_channels(nvr) -> list[str]:
    """Main-stream channel ids (101, 201, ...), the way hikload picks them."""
    channels = nvr.Streaming.getChannels()["StreamingChannelList"]["StreamingChannel"]
    channels = [channels] if isinstance(channels, dict) else channels
    return [c["id"] for c in channels if int(c["id"]) % 10 == 1]


def _split_server(server: str) -> tuple[str, str]:
    if server.startswith("https://"):
        return "https", server[len("https://"):]
    return "http", server.removeprefix("http://")


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "timed out", "Name or service not known",
                   "No route to host", "IncompleteRead", "Connection aborted"):
        if marker in text:
            return marker
    return type(exc).__name__
