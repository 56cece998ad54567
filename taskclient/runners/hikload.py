"""The flagship runner: export a task's recordings from a Hikvision NVR.

hikload is the ISAPI vocabulary (its device, channel and search documents and their
dict form); the wire is ours (`taskclient.hikwire` binds hikload to the task's `NVR`:
digest headers, no redirects, timeouts, TLS choices, bounded answers). One attempt:
1. device info, then the device's clock (`System/time`, cached per worker process):
   its offset and zone go into the result, with a warning beyond a minute; with the
   task's `timezone: auto`, the task's UTC times are turned into device-local times
   with the device's own POSIX zone rule;
2. the channel list: every requested camera must exist, else the task fails for good;
   no cameras means every channel's main stream;
3. the listing (`taskclient.listing`): our own paging, each recording once, owned by
   the chunk in which it starts;
4. with `mode: list`, a dry run: the listing's counts and sizes, nothing downloaded;
5. the free-space check: recordings still missing must fit above --min-free, else
   the task goes back to the queue as a host fault;
6. each missing recording is downloaded (`taskclient.download`); a retry skips files
   already complete. The task succeeds only when every listed recording is on disk.
File names follow hikload's, `YYYYMMDDHHMMSS-<track>.mp4`, built from parsed values.
"""
from __future__ import annotations

import logging
import shutil
import threading
from datetime import datetime
from pathlib import Path

from hikload.hikvisionapi import HikvisionException

from ..device import Clock, check_tracks, clock_warning, read_channels, read_clock
from ..download import download, file_sha256
from ..errors import Cancelled, HostFault, NotSupported, TaskFailed
from ..hikwire import bound
from ..isapi import NVR
from ..listing import Recording, search
from ..paths import confine
from ..tls import TLSChoice
from ..untrusted import clean_text
from . import Progress

log = logging.getLogger("taskclient.hikload")
MB = 1_000_000


class HikloadRunner:
    """Export recordings with hikload's ISAPI vocabulary over the task's own wire, downloads verified."""

    name = "hikload"

    def __init__(self, timeout: float = 30.0, ca_file: str | None = None, verify: str | None = None,
                 insecure: bool = False, fingerprints: dict[str, str] | None = None, min_free: int = 0):
        self.timeout = timeout
        self.tls = TLSChoice(ca_file, insecure, dict(fingerprints or {}))
        self.check_video = verify == "ffprobe"  # also compare each file's duration with its time span
        self.min_free = min_free

    def run(self, task: dict, folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        """List the task's recordings, then download the missing ones (or only count them: `mode: list`)."""
        nvr = NVR(task["server"], task["username"], task["password"], self.timeout, self.tls,
                  task.get("tls_fingerprint"))
        try:
            with bound(nvr) as server:
                return self._run(nvr, server, task, folder, progress, cancel)
        except HikvisionException as exc:
            raise TaskFailed(f"{nvr.label}: {nvr.what or 'a request'} failed: {clean_text(exc)}") from None
        except (ValueError, TypeError, KeyError, AttributeError, SyntaxError) as exc:  # hikload meeting odd XML
            raise TaskFailed(f"{nvr.label}: unexpected answer to the {nvr.what or 'device'} request"
                             f" ({type(exc).__name__}); listing is unreliable") from None
        finally:
            nvr.close()

    def _run(self, nvr: NVR, server, task: dict, folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        warnings: list[str] = []
        with nvr.doing("device info"):
            server.System.getDeviceInfo()
        with nvr.doing("device clock"):
            clock = read_clock(server, nvr.base, nvr.label)
        for warning in filter(None, [clock_warning(clock, nvr.label)]):
            warnings.append(warning)
            log.warning("task %s: %s", task["id"], warning)
        start, end = task_range(task, clock, nvr.label)
        cameras, names = self._cameras(nvr, server, task, warnings)
        listing = self._listing(nvr, server, task, cameras, start, end, cancel)
        progress.update(total=len(listing), done=0, cameras=len(cameras))
        result = {"cameras": list(cameras), "device": clock.report(), "warnings": warnings}
        if task.get("mode") == "list":
            return {"files": 0, "bytes": 0, "listing": summary(listing, cameras), **result}
        self._check_space(folder, listing)
        downloaded = 0
        digests = {}
        for done, (name, rec) in enumerate(listing):
            if cancel.is_set():
                raise Cancelled("cancelled")
            progress.update(current=name)
            if not complete(folder, name, rec.size):
                digests[name] = download(nvr, rec, folder, name, progress, cancel, self.check_video)
                downloaded += 1
            progress.update(done=done + 1)
        missing = [name for name, rec in listing if not complete(folder, name, rec.size)]
        if missing:
            raise TaskFailed(f"{nvr.label}: {len(missing)} recording(s) incomplete after download: {', '.join(missing[:5])}")
        manifest = [{"path": f"{folder.name}/{name}", "size": confine(folder, name).stat().st_size,
                     "sha256": digests.get(name) or file_sha256(confine(folder, name)), "camera": rec.track,
                     "camera_name": names.get(rec.track), "start": rec.start.isoformat(), "end": rec.end.isoformat(),
                     "kind": "video", "location": None}
                    for name, rec in listing]
        result.update(files=len(listing), bytes=sum(f["size"] for f in manifest), downloaded=downloaded,
                      skipped=len(listing) - downloaded, manifest=manifest)
        if not listing:
            result["note"] = "the NVR lists no recordings for these cameras in this time range"
        return result

    def _cameras(self, nvr: NVR, server, task: dict, warnings: list[str]) -> tuple[list[str], dict[str, str]]:
        """The task's cameras, each checked against the device's channels (all main streams when none
        are given), and the channel names the device gives them."""
        cameras = [str(c) for c in task.get("cameras") or []]
        try:
            with nvr.doing("channel list"):
                channels = read_channels(server, nvr.label)
        except NotSupported as exc:
            if not cameras:
                raise TaskFailed(f"{exc}; name the cameras in the sheet", permanent=True) from None
            warnings.append(f"{nvr.label} lists no channels; cameras not checked")
            return cameras, {}
        check_tracks(channels, cameras, nvr.label)
        cameras = cameras or channels.main_tracks()
        names = {c: channels.numbers.get(int(c) // 100) or None for c in cameras}
        return cameras, {c: n for c, n in names.items() if n}

    def _listing(self, nvr: NVR, server, task: dict, cameras: list[str], start: datetime | None,
                 end: datetime | None, cancel: threading.Event) -> list[tuple[str, Recording]]:
        """Every recording this task owns, with its file name."""
        owned: list[Recording] = []
        for camera in cameras:
            if cancel.is_set():
                raise Cancelled("cancelled")
            with nvr.doing(f"search of camera {camera}"):
                found = search(server, nvr.base, nvr.label, camera, start, end, budget=10 * self.timeout,
                               cancelled=cancel.is_set)
            owned += [r for r in found if owns(r, start, end, task.get("takes_earlier", True))]
        if cancel.is_set():
            raise Cancelled("cancelled")
        return file_names(owned)

    def _check_space(self, folder: Path, listing: list[tuple[str, Recording]]) -> None:
        """The recordings still missing must fit on the disk above --min-free; else it is the host's fault."""
        needed = sum(rec.size or 0 for name, rec in listing if not complete(folder, name, rec.size))
        if not needed:
            return
        where = next(p for p in (folder, *folder.parents) if p.exists())
        free = shutil.disk_usage(where).free
        if needed > free - self.min_free:
            raise HostFault(f"no space left on device for this task: it needs {needed / MB:.1f} MB, {free / MB:.1f} MB"
                            f" free in {where} (keeping --min-free {self.min_free / MB:.0f} MB)",
                            full=True, needed=needed)


def task_range(task: dict, clock: Clock, label: str) -> tuple[datetime | None, datetime | None]:
    """The task's range in device-local time; `timezone: auto` converts times with an offset by the device's zone."""
    if task.get("start") is None:
        return None, None
    start, end = datetime.fromisoformat(task["start"]), datetime.fromisoformat(task["end"])
    if task.get("timezone") == "auto" and start.tzinfo is not None:
        if clock.rule is None:
            raise TaskFailed(f"{label} reports no usable time zone ({clock.zone or 'none'}), so timezone 'auto'"
                             " cannot convert the task's times; give the NVR's zone in the sheet", permanent=True)
        return clock.rule.to_local(start), clock.rule.to_local(end)
    return start.replace(tzinfo=None), end.replace(tzinfo=None)


def owns(rec: Recording, start: datetime | None, end: datetime | None, takes_earlier: bool) -> bool:
    """Whether this task owns the recording: it starts in [start, end), or earlier for a row's first chunk.

    The NVR lists every recording that overlaps the range; ownership by start time
    keeps chunks of one row from downloading the same recording twice.
    """
    if start is None or end is None:
        return True
    return rec.start < end and (rec.start >= start or takes_earlier)


def file_names(recordings: list[Recording]) -> list[tuple[str, Recording]]:
    """hikload's names, `YYYYMMDDHHMMSS-<track>.mp4`; a second recording starting in the same second gets a `+`."""
    named, taken = [], set()
    for rec in sorted(recordings, key=lambda r: (r.track, r.start, r.identity)):
        name = f"{rec.start:%Y%m%d%H%M%S}-{int(rec.track)}.mp4"
        while name in taken:
            name = name.replace(".mp4", "+.mp4")
        taken.add(name)
        named.append((name, rec))
    return named


def summary(listing: list[tuple[str, Recording]], cameras: list[str]) -> dict:
    """A dry run's answer: recordings and bytes in all and per camera."""
    per = {c: {"recordings": 0, "bytes": 0} for c in cameras}
    for _, rec in listing:
        entry = per.setdefault(rec.track, {"recordings": 0, "bytes": 0})
        entry["recordings"] += 1
        entry["bytes"] += rec.size or 0
    return {"recordings": len(listing), "bytes": sum(r.size or 0 for _, r in listing), "cameras": per}


def complete(folder: Path, name: str, size: int | None) -> bool:
    """A final name exists only after a verified download, so it is complete if its size is right."""
    try:
        stat = confine(folder, name).stat()
    except FileNotFoundError:
        return False
    return stat.st_size == size if size is not None else True
