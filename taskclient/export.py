"""A task's pieces become files in the host's layout: downloaded, made playable, recorded.

One output per piece (or, with --join, one per camera): its path comes from the
layout and is reserved in the host's ledger before anything is written, so two
tasks never write the same path. Each piece is downloaded to a temporary name next
to its final place, the worker process's own (two attempts at one task may overlap on
a host); a raw output is renamed when complete (its SHA-256 taken while
streaming), an MP4/MKV one goes through ffmpeg first (its SHA-256 read once after
ffprobe has confirmed the duration). A retry skips outputs the ledger lists complete.
Whatever happens, no temporary file and no empty folder stays behind, and the files
finished so far are recorded in the ledger and the host's SHA256SUMS.
"""
from __future__ import annotations

import glob
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path, PurePosixPath

from .download import download, file_sha256
from .errors import Cancelled, TaskFailed
from .footage import Export
from .isapi import NVR
from .layout import Layout, fields, place, prune
from .ledger import Ledger
from .media import Remux, convert, probe, stream_codecs
from .pieces import Piece

# Files complete on disk are written into the host's ledger and SHA256SUMS at least this often while a
# task runs, not only at its end: a worker killed mid-task then leaves no complete file unrecorded.
RECORD_EVERY = 30.0

MAX_PREROLL = 20.0  # seconds a device may start before the window (its keyframe interval, with H.264+ long)


@dataclass
class Output:
    """One file to write: its pieces (several when joined) and where it goes."""

    pieces: list[Piece]
    item: str  # the same on every attempt: reserves the same path
    wanted: str  # the layout's path for it (without extension)
    stem: str = ""  # the path reserved for it

    @property
    def first(self) -> Piece:
        return self.pieces[0]

    @property
    def content(self) -> str:
        return self.first.rec.content


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class Exporter:
    """Writes one task's outputs under --downloads."""

    def __init__(self, nvr: NVR, task: dict, export: Export, layout: Layout, downloads: Path,
                 names: dict[str, str], progress, cancel: threading.Event, check_video: bool):
        self.nvr, self.task, self.export, self.layout = nvr, task, export, layout
        self.downloads = downloads.resolve()
        self.ledger = Ledger(self.downloads)
        self.names = {int(track) // 100: name for track, name in names.items()}  # a channel's streams share its name
        self.progress, self.cancel, self.check_video = progress, cancel, check_video

    def plan(self, pieces: list[Piece]) -> list[Output]:
        """The task's outputs (their paths are reserved by `reserve`)."""
        options = self.task.get("options") or {}
        label = str(options.get("label") or self.task.get("name") or "")
        row = str(options.get("row") or "")
        outputs = []
        for (track, content), group in groupby(pieces, key=lambda p: (p.rec.track, p.rec.content)):
            group = list(group)
            video = content == "video"
            fmt = self.export.video_format if video else "raw"
            sets = [group] if video and self.export.join else [[p] for p in group]
            for chunk in sets:
                values = fields(self.nvr.netloc, label, track, self._name(track), chunk[0].start, chunk[-1].end,
                                row, self.task["id"], content)
                item = f"{fmt}{'+join' if len(sets) == 1 and video and self.export.join else ''}:" + "|".join(
                    p.identity for p in chunk)
                outputs.append(Output(chunk, item, self.layout.stem(values)))
        return outputs

    @property
    def owner(self) -> str:
        return self.owner_of(self.task)

    @staticmethod
    def owner_of(task: dict) -> str:
        """Who a path belongs to in the ledger: the task (id and key)."""
        return f"{task['id']}:{task.get('key') or ''}"

    def reserve(self, outputs: list[Output]) -> None:
        """Reserve each output's path in the host's ledger (its own again on a retry, else a free one)."""
        granted = self.ledger.reserve(self.owner, f"task{self.task['id']}", [(o.item, o.wanted) for o in outputs])
        for output in outputs:
            output.stem = granted[output.item]

    def missing(self, outputs: list[Output]) -> int:
        """Bytes the outputs not yet complete will take while being written (raw download and remux)."""
        entries = self.ledger.entries()
        mine = {e.get("item"): stem for stem, e in entries.items() if e.get("owner") == self.owner}
        factor = 1 if self.export.video_format == "raw" and not self.export.join else 2
        return sum(p.estimate() * (factor if o.content == "video" else 1) for o in outputs
                   if o.item not in mine or self.ledger.done(mine[o.item], entries) is None for p in o.pieces)

    def run(self, outputs: list[Output]) -> tuple[list[dict], int]:
        """Write every output not yet complete; return the manifest and how many were written now."""
        finished: list[dict] = []
        manifest = []
        written = 0
        known = self.ledger.entries()  # read once: a ledger may list a host's every file
        recorded = time.monotonic()
        try:
            for done, output in enumerate(outputs):
                if self.cancel.is_set():
                    raise Cancelled("cancelled")
                self.progress.update(current=PurePosixPath(output.stem).name)
                entry = self.ledger.done(output.stem, known)
                if entry is None:
                    entry = self._write(output)
                    finished.append(entry)
                    written += 1
                    if time.monotonic() - recorded >= RECORD_EVERY:
                        self.ledger.complete(finished)
                        finished, recorded = [], time.monotonic()
                manifest.append(self._manifest(output, entry))
                self.progress.update(done=done + 1)
        finally:
            if finished:
                self.ledger.complete(finished)
        return manifest, written

    def _write(self, output: Output) -> dict:
        """Download the output's pieces and make its file; temporary files go whatever happens."""
        final_base = place(self.downloads, output.stem, "")
        name = final_base.name
        _sweep(final_base.parent, name)
        temps: list[Path] = []
        try:
            fmt = self.export.video_format if output.content == "video" else "raw"
            fetched = []
            if fmt != "raw" and len(output.pieces) == 1 and self.export.window != "exact":
                done = self._remux_while_downloading(output, final_base, temps)
                if isinstance(done, dict):
                    return done
                fetched.append(done)  # not a program stream: in its temporary file, for convert()
            for i, piece in enumerate(output.pieces[len(fetched):]):
                part = _temporary(final_base, f"{name}{'.' + str(i) if len(output.pieces) > 1 else ''}")
                temps.append(part)
                fetched.append(download(self.nvr, piece.request(), part, name, self.progress, self.cancel,
                                        self.check_video))
            if fmt == "raw":
                final = place(self.downloads, output.stem, fetched[0].extension)
                self._rename(temps[0], final)
                return self._entry(output, final, fetched[0].size, fetched[0].sha256)
            final = place(self.downloads, output.stem, f".{fmt}")
            target = _temporary(final, final.name)
            temps.append(target)
            head, length = self._trim(output, temps[0]) if self.export.window == "exact" else (0.0, None)
            codecs = [stream_codecs(f.head) if f.extension == ".ps" else None for f in fetched]
            known = None
            if all(codecs) and len(set(codecs)) == 1:  # program streams that name their codecs: no probe needed
                known = (codecs[0], sum(p.span for p in output.pieces), MAX_PREROLL * len(output.pieces))
            convert(temps[:len(output.pieces)], target, fmt, self.nvr.label, self.cancel, head, length,
                    self.export.transcode, known, asked=sum(p.span for p in output.pieces))
            return self._seal(output, target, final)
        except BaseException:
            for temp in temps:
                temp.unlink(missing_ok=True)
            prune(self.downloads, final_base)
            raise
        finally:
            for temp in temps:
                temp.unlink(missing_ok=True)

    def _remux_while_downloading(self, output: Output, final_base: Path, temps: list[Path]):
        """One piece, no trim: the download goes straight into ffmpeg; the manifest entry. When the device's
        stream is no program stream ffmpeg can read from a pipe, it lands in the piece's temporary file
        (the first of `temps`) and its Fetched is returned, for `convert`."""
        fmt = self.export.video_format
        final = place(self.downloads, output.stem, f".{fmt}")
        target = _temporary(final, final.name)
        part = _temporary(final_base, final_base.name)
        temps += [part, target]
        remux = Remux(target, fmt, self.nvr.label, self.export.transcode)
        try:
            fetched = download(self.nvr, output.first.request(), part, final_base.name, self.progress, self.cancel,
                               pipe=remux.start)
        except BrokenPipeError:  # ffmpeg stopped reading: its own words say why
            if remux.proc is None:
                raise
            remux.finish(self.cancel, output.first.span, MAX_PREROLL)
            raise TaskFailed(f"{self.nvr.label}: ffmpeg stopped reading {final.name}") from None
        except BaseException:
            remux.abort()
            raise
        if remux.proc is None:
            return fetched
        remux.wait(self.cancel)
        return self._seal(output, target, final, lambda: remux.check(output.first.span, MAX_PREROLL))

    def _seal(self, output: Output, target: Path, final: Path, check=None) -> dict:
        """An ffmpeg output: its SHA-256 read once while it is fsynced and `check`ed (ffprobe), then renamed.

        The three overlap (each waits on the disk or another process); the rename comes
        only after all of them succeeded.
        """
        with ThreadPoolExecutor(2) as pool:
            synced = pool.submit(_fsync, target)
            checked = pool.submit(check) if check is not None else None
            digest = file_sha256(target)
            synced.result()
            if checked is not None:
                checked.result()
        size = target.stat().st_size
        self._rename(target, final)
        return self._entry(output, final, size, digest)

    def _rename(self, temporary: Path, final: Path) -> None:
        """A finished file takes its place, unless the task was taken away meanwhile (cancelled, or its
        lease lost while this host could not reach the coordinator): then it goes with the other temporaries."""
        if self.cancel.is_set():
            raise Cancelled("cancelled")
        os.replace(temporary, final)

    def _trim(self, output: Output, first: Path) -> tuple[float, float]:
        """(head, length) of an exact window: what the device sent before the window, and the window's length."""
        piece = output.first
        sent = probe(first, self.nvr.label).duration
        if sent is None:
            raise TaskFailed(f"{self.nvr.label}: {output.stem}: ffprobe finds no duration in what the device sent")
        asked = piece.span
        if sent < asked - max(0.5, 0.02 * asked):
            raise TaskFailed(f"{self.nvr.label}: {output.stem}: the device sent {sent:.1f} s of video for the"
                             f" {asked:.1f} s asked")
        if sent - asked > MAX_PREROLL:
            raise TaskFailed(f"{self.nvr.label} sent {sent:.0f} s of video for a {asked:.0f} s window: it does not"
                             " cut recordings to the playback URI's times; use window device or whole for it",
                             permanent=True)
        return max(0.0, sent - asked), sum(p.span for p in output.pieces)

    def _name(self, track: str) -> str | None:
        return self.names.get(int(track) // 100)

    def _entry(self, output: Output, final: Path, size: int, digest: str) -> dict:
        return {"stem": output.stem, "path": final.relative_to(self.downloads).as_posix(), "size": size,
                "sha256": digest}

    def _manifest(self, output: Output, entry: dict) -> dict:
        track = output.first.rec.track
        return {"path": entry["path"], "size": entry["size"], "sha256": entry["sha256"], "camera": track,
                "camera_name": self._name(track), "start": output.first.start.isoformat(),
                "end": output.pieces[-1].end.isoformat(), "kind": output.content, "location": None}


def _temporary(beside: Path, name: str) -> Path:
    """The temporary name of a file being made: hidden, and this process's own.

    Two attempts at one task can overlap on one host (a lease lost while the host
    could not reach the coordinator, the task taken by another of its workers):
    with names of their own neither truncates, removes or renames the other's file.
    """
    return beside.with_name(f".{name}.{os.getpid()}.part")


def _sweep(folder: Path, name: str) -> None:
    """Remove the temporaries of `name` left by worker processes that are gone (killed, or the host restarted)."""
    try:
        leftovers = list(folder.glob(f".{glob.escape(name)}*.part"))
    except OSError:
        return
    for leftover in leftovers:
        pid = leftover.name[:-len(".part")].rpartition(".")[2]
        if pid.isascii() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether a process runs with this id; when in doubt, yes (its file then stays).

    Windows has no signal 0 (os.kill would send Ctrl-C to the console): there the
    hidden leftovers of killed workers are not swept, and stay until removed by hand.
    """
    if os.name == "nt" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True
    return True
