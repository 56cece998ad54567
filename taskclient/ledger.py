"""The host's record of its exported files: who owns each path, and the checksum file.

Every worker process of a host writes into the same --downloads folder, and layouts
may give two tasks the same path (two rows of the same camera and day under a
template without {start}). So paths are reserved before anything is written: under
a lock file, in `.taskclient/ledger.json`, each path (without its extension) belongs
to one task and one piece. A path another task holds, or a file already on disk that
the ledger does not know, makes the new one unique (`_task<id>` is added). A retry of
the same task finds its own paths again, and skips files the ledger lists complete.

When a task's files are complete, their sizes and SHA-256 digests go into the ledger
and `SHA256SUMS` in --downloads is rewritten (to a temporary file, then renamed), so
`sha256sum -c SHA256SUMS` run in --downloads verifies every file this host exported.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from filelock import FileLock

from .errors import SetupError
from .layout import place, prune

FOLDER = ".taskclient"
SUMS = "SHA256SUMS"
EXTENSIONS = (".ps", ".mp4", ".mkv", ".bin", ".jpg")  # what exports are named: a file with any of these is taken


class Ledger:
    """Path reservations and completed files of one downloads folder, shared by the host's processes."""

    def __init__(self, downloads: Path, timeout: float = 120.0):
        self.downloads = downloads.resolve()
        self.folder = self.downloads / FOLDER
        self.path = self.folder / "ledger.json"
        self.lock = FileLock(str(self.folder / "ledger.lock"), timeout=timeout)

    @contextmanager
    def _open(self):
        """The ledger's entries, locked for this process; written back when the block ends without error."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.lock:
            try:
                entries = json.loads(self.path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                entries = {}
            except (ValueError, OSError) as exc:
                raise SetupError(f"{self.path} is unreadable ({exc}); move it away to start a new ledger") from None
            before = json.dumps(entries, sort_keys=True)
            yield entries
            if json.dumps(entries, sort_keys=True) != before:
                _write_atomic(self.path, json.dumps(entries, ensure_ascii=False, indent=0, sort_keys=True))

    def reserve(self, owner: str, suffix: str, wanted: list[tuple[str, str]]) -> dict[str, str]:
        """For each (item, stem) the stem this item may write: its own from an earlier attempt, the wanted
        one if free, else the wanted one made unique with `suffix`. Returns item -> stem."""
        granted = {}
        with self._open() as entries:
            mine = {(e["owner"], e["item"]): stem for stem, e in entries.items()}
            for item, stem in wanted:
                if (owner, item) in mine:
                    granted[item] = mine[(owner, item)]
                    continue
                candidate, n = stem, 1
                while candidate in entries or self._on_disk(candidate):
                    n += 1
                    candidate = f"{stem}_{suffix}" + (f"_{n - 1}" if n > 2 else "")
                entries[candidate] = {"owner": owner, "item": item}
                granted[item] = candidate
        return granted

    def entries(self) -> dict:
        """The ledger as it is now (read without the lock: the file is only ever replaced whole)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}

    def done(self, stem: str, entries: dict | None = None) -> dict | None:
        """The entry of a complete file still on disk with its recorded size, else None (reads only)."""
        entry = (self.entries() if entries is None else entries).get(stem)
        if not entry or not entry.get("sha256"):
            return None
        try:
            size = (self.downloads / entry["path"]).stat().st_size
        except OSError:
            return None
        return entry if size == entry["size"] else None

    def complete(self, files: list[dict]) -> None:
        """Record complete files ({stem, path, size, sha256}) and rewrite SHA256SUMS with every complete file."""
        with self._open() as entries:
            for f in files:
                entry = entries.setdefault(f["stem"], {"owner": "", "item": ""})
                entry.update(path=f["path"], size=f["size"], sha256=f["sha256"])
            self._write_sums(entries)

    def checksums(self) -> None:
        """Rewrite SHA256SUMS now (files were moved away, by --upload-delete)."""
        with self._open() as entries:
            self._write_sums(entries)

    def _write_sums(self, entries: dict) -> None:
        """SHA256SUMS: every complete file still here (one moved away drops out); none when no file is left."""
        lines = sorted((e["path"], e["sha256"]) for e in entries.values()
                       if e.get("sha256") and (self.downloads / e["path"]).is_file())
        if not lines:
            (self.downloads / SUMS).unlink(missing_ok=True)
            return
        _write_atomic(self.downloads / SUMS, "".join(f"{digest}  {path}\n" for path, digest in lines))

    def discard(self, owner: str) -> tuple[int, int]:
        """Remove the files an owner wrote and its reservations (a cancelled task); return files and bytes."""
        removed = size = 0
        with self._open() as entries:
            for stem in [s for s, e in entries.items() if e.get("owner") == owner]:
                entry = entries.pop(stem)
                if not entry.get("path"):
                    continue
                path = place(self.downloads, entry["path"], "")
                try:
                    size += path.stat().st_size
                    path.unlink()
                    removed += 1
                except OSError:
                    continue
                prune(self.downloads, path)
            self._write_sums(entries)
        return removed, size

    def _on_disk(self, stem: str) -> bool:
        """A file of this stem exists already (made by hand, or before the ledger was lost)."""
        base = self.downloads.joinpath(*PurePosixPath(stem).parts)
        return any(base.with_name(base.name + ext).exists() for ext in EXTENSIONS)


def _write_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all: a temporary file, fsynced, renamed over the old one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
