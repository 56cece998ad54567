"""The flagship runner: export a task's recordings from a Hikvision NVR.

hikload is the ISAPI vocabulary (its device, channel and search documents and their
dict form); the wire is ours (`taskclient.hikwire` binds hikload to the task's `NVR`:
digest headers, no redirects, timeouts, TLS choices, bounded answers). One attempt:
1. device info, then the device's clock (`System/time`, cached per worker process):
   its offset and zone go into the result, with a warning beyond a minute; with the
   task's `timezone: auto`, the task's UTC times are turned into device-local times
   with the device's own POSIX zone rule;
2. the channel list: every requested camera must exist, else the task fails for good;
   no cameras means every channel's main stream; the channels' names are kept;
3. the listing (`taskclient.listing`): our own paging, each recording once, of the
   row's record types; pictures (track x03) when the row asks for them. A device that
   refuses a record type filter or has no pictures gives a note, not a failure;
4. the pieces (`taskclient.pieces`): whole files, or each file's part of the window;
5. with `mode: list`, a dry run: the listing's counts and sizes, nothing downloaded;
6. the outputs (`taskclient.export`): paths from the host's layout, reserved in its
   ledger; the free-space check (outputs still missing must fit above --min-free,
   else the task goes back to the queue as a host fault); then each missing output is
   downloaded and, when the host asks for MP4/MKV or the row for an exact window,
   made playable with ffmpeg. A retry skips outputs already complete. The task
   succeeds only when every output is on disk; the manifest lists them.
The task's own folder is not used: files go where the layout puts them in --downloads
(the folder the worker hands over sits directly in it).
"""
from __future__ import annotations

import logging
import shutil
import threading
from datetime import datetime
from pathlib import Path

from hikload.hikvisionapi import HikvisionException

from ..device import Clock, check_tracks, clock_warning, read_channels, read_clock
from ..errors import Cancelled, HostFault, NotSupported, TaskFailed
from ..export import Exporter
from ..footage import Footage
from ..hikwire import bound
from ..isapi import NVR
from ..ledger import Ledger
from ..listing import Recording, Unsupported, search
from ..pieces import Piece, cut
from ..tls import TLSChoice
from ..untrusted import clean_text
from . import Progress

log = logging.getLogger("taskclient.hikload")
MB = 1_000_000


class HikloadRunner:
    """Export recordings with hikload's ISAPI vocabulary over the task's own wire, downloads verified."""

    name = "hikload"

    def __init__(self, timeout: float = 30.0, ca_file: str | None = None, verify: str | None = None,
                 insecure: bool = False, fingerprints: dict[str, str] | None = None, min_free: int = 0,
                 footage: dict | None = None):
        self.timeout = timeout
        self.tls = TLSChoice(ca_file, insecure, dict(fingerprints or {}))
        self.check_video = verify == "ffprobe"  # also compare each file's duration with its time span
        self.min_free = min_free
        self.footage = Footage(**(footage or {}))
        self.layout = self.footage.check()  # a host that cannot do what it is set to do refuses to start

    def run(self, task: dict, folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        """List the task's recordings, then export the missing ones (or only count them: `mode: list`)."""
        export = self.footage.for_task(task)
        nvr = NVR(task["server"], task["username"], task["password"], self.timeout, self.tls,
                  task.get("tls_fingerprint"))
        try:
            with bound(nvr) as server:
                return self._run(nvr, server, task, export, folder.parent, progress, cancel)
        except HikvisionException as exc:
            raise TaskFailed(f"{nvr.label}: {nvr.what or 'a request'} failed: {clean_text(exc)}") from None
        except (ValueError, TypeError, KeyError, AttributeError, SyntaxError) as exc:  # hikload meeting odd XML
            raise TaskFailed(f"{nvr.label}: unexpected answer to the {nvr.what or 'device'} request"
                             f" ({type(exc).__name__}); listing is unreliable") from None
        finally:
            nvr.close()

    def checksums(self, downloads: Path) -> None:
        """Rewrite the host's SHA256SUMS (after --upload-delete moved files away)."""
        Ledger(downloads).checksums()

    def discard(self, task: dict, downloads: Path) -> tuple[int, int]:
        """Remove the files a task wrote wherever the layout put them (a cancelled task); files and bytes."""
        return Ledger(downloads).discard(Exporter.owner_of(task))

    def _run(self, nvr: NVR, server, task: dict, export, downloads: Path, progress: Progress,
             cancel: threading.Event) -> dict:
        warnings: list[str] = []
        notes: list[str] = []
        with nvr.doing("device info"):
            server.System.getDeviceInfo()
        with nvr.doing("device clock"):
            clock = read_clock(server, nvr.base, nvr.label)
        for warning in filter(None, [clock_warning(clock, nvr.label)]):
            warnings.append(warning)
            log.warning("task %s: %s", task["id"], warning)
        start, end = task_range(task, clock, nvr.label)
        cameras, names = self._cameras(nvr, server, task, warnings)
        listing = self._listing(nvr, server, task, export, cameras, start, end, cancel, notes)
        pieces = cut(listing, start, end, export.window, task.get("takes_earlier", True))
        progress.update(total=len(pieces), done=0, cameras=len(cameras))
        result = {"cameras": list(cameras), "device": clock.report(), "warnings": warnings}
        if notes:
            result["notes"] = notes
        if task.get("mode") == "list":
            return {"files": 0, "bytes": 0, "listing": summary(pieces, cameras), **result}
        exporter = Exporter(nvr, task, export, self.layout, downloads, names, progress, cancel, self.check_video)
        outputs = exporter.plan(pieces)
        progress.update(total=len(outputs))
        self._check_space(downloads, exporter.missing(outputs))
        exporter.reserve(outputs)
        manifest, written = exporter.run(outputs)
        result.update(files=len(manifest), bytes=sum(f["size"] for f in manifest), downloaded=written,
                      skipped=len(manifest) - written, window=export.window, manifest=manifest)
        if not pieces:
            result["note"] = "; ".join(notes) if notes else \
                "the NVR lists no recordings for these cameras in this time range"
        elif task.get("cameras"):  # some found nothing while others did: say which, or "done" hides it
            found = {int(p.rec.track) // 100 for p in pieces}  # channels (video x01, x02 and pictures x03)
            for camera in [c for c in cameras if int(c) // 100 not in found]:
                name = f" ({names[camera]})" if names.get(camera) else ""
                warnings.append(f"camera {camera}{name} has no recording in this time range on {nvr.label}")
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

    def _listing(self, nvr: NVR, server, task: dict, export, cameras: list[str], start: datetime | None,
                 end: datetime | None, cancel: threading.Event, notes: list[str]) -> list[Recording]:
        """Every recording (and picture) of the task's cameras in its range, of the row's record types."""
        found: dict[str, Recording] = {}
        searches = [(camera, "video") for camera in cameras if export.video]
        searches += [(f"{int(camera) // 100}03", "picture") for camera in cameras if export.pictures]
        for camera, content in searches:
            for record_type in export.record_types:
                if cancel.is_set():
                    raise Cancelled("cancelled")
                try:
                    with nvr.doing(f"search of camera {camera}"):
                        recs = search(server, nvr.base, nvr.label, camera, start, end, budget=10 * self.timeout,
                                      cancelled=cancel.is_set, content=content, record_type=record_type)
                except Unsupported as exc:
                    note = f"{exc}: no {'pictures' if content == 'picture' else 'video'} exported" + (
                        f" for record type {record_type}" if record_type and content == "video" else "")
                    if note not in notes:
                        notes.append(note)
                    break
                found.update((r.identity, r) for r in recs)
        if cancel.is_set():
            raise Cancelled("cancelled")
        return list(found.values())

    def _check_space(self, downloads: Path, needed: int) -> None:
        """The outputs still missing must fit on the disk above --min-free; else it is the host's fault."""
        if not needed:
            return
        where = next(p for p in (downloads, *downloads.parents) if p.exists())
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


def summary(pieces: list[Piece], cameras: list[str]) -> dict:
    """A dry run's answer: recordings (pieces of them) and bytes in all and per camera."""
    per = {c: {"recordings": 0, "bytes": 0} for c in cameras}
    for piece in pieces:
        entry = per.setdefault(piece.rec.track, {"recordings": 0, "bytes": 0})
        entry["recordings"] += 1
        entry["bytes"] += piece.estimate()
    return {"recordings": len(pieces), "bytes": sum(p.estimate() for p in pieces), "cameras": per}
