"""Footage in one place: each done task's files go to one destination with rclone, verified.

After the runner returns and before the completion is reported, every file of the
task's manifest is copied to `--upload DEST` (an rclone remote and folder such as
`nas:footage`, or a local or network path) under the same relative path it has in
--downloads. A copy counts only when the destination holds the file's size and
checksum: SHA-256 when the destination can tell it (a local or network path), else
the strongest hash it offers (SFTP: MD5 or SHA-1, compared with the same hash of the
local file, whose SHA-256 is re-checked in the same pass), else the file is read
back (`rclone hashsum --download`). Only then is the manifest entry's `location` set,
the file listed in the host's `SHA256SUMS.uploaded`, and, with `--upload-delete`, the
local copy deleted. Any failure fails the attempt: the local files stay, and the
retry uploads again; a file the destination already holds intact is not sent twice.

rclone takes its settings from its own config file or `RCLONE_*` variables. Nothing
secret ever goes on its command line (every user of the host can read argv): a
destination written as a connection string with a password in it is refused.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import Cancelled, SetupError, TaskFailed
from .paths import confine
from .untrusted import clean_text

log = logging.getLogger("taskclient.upload")

UPLOADED = "SHA256SUMS.uploaded"  # in --downloads: `<sha256>  <path under the destination>`, one line per file
STATE = ".taskclient"  # the host's own bookkeeping in --downloads (lock files)
PREFERRED = ("sha256", "sha1", "md5")  # hashes compared on the destination, strongest first
BLOCK = 1024 * 1024
_HASHES: dict[str, list[str]] = {}  # per destination, the hashes it keeps (asked once per worker process)
SECRET_PARAM = re.compile(r"pass|secret|token|pem|(^|_)key($|_)", re.IGNORECASE)
HARMLESS_PARAM = {"key_file", "pubkey_file", "key_use_agent", "known_hosts_file", "key_file_pass_env"}


class UploadFailed(TaskFailed):
    """Raised when a file could not be copied to the destination, or the copy there is not intact."""


@dataclass(frozen=True)
class Uploader:
    """Copies a task's files to one destination with rclone (picklable: it travels to worker processes)."""

    destination: str
    downloads: Path
    delete: bool = False
    rclone: str = "rclone"
    rclone_config: str | None = None

    def check(self) -> None:
        """At start: rclone is there, the destination is one rclone knows, and it names no secret."""
        refuse_secrets(self.destination)
        if shutil.which(self.rclone) is None:
            raise SetupError(f"--upload needs rclone, and {self.rclone!r} is not found (apt-get install rclone,"
                             " or https://rclone.org/install/; or give its path with --rclone)")
        remote = remote_name(self.destination)
        if remote and not remote.startswith(":"):
            try:
                known = self._run("listremotes", what="listing rclone's remotes").split()
            except UploadFailed as exc:
                raise SetupError(str(exc)) from None
            if f"{remote}:" not in known:
                raise SetupError(f"--upload {self.destination}: rclone knows no remote {remote!r}"
                                 f" (known: {', '.join(known) or 'none'}); add it with `rclone config`,"
                                 f" or RCLONE_CONFIG_{remote.upper()}_TYPE=... variables")

    def send(self, manifest: list[dict], progress, cancel: threading.Event) -> None:
        """Copy and verify every file of a manifest; set each entry's `location`. UploadFailed if any fails.

        Three rclone runs per task, whatever its number of files: what the destination
        holds already, one copy of the rest, and the check of what arrived.
        """
        entries = {self.relative(entry["path"]): entry for entry in manifest}
        if any("\n" in path or "\r" in path for path in entries):
            raise UploadFailed("a file name holds a line break; not uploaded")
        progress.update(current=f"uploading {len(entries)} file(s) to {self.destination}")
        hashes = self._hashes(cancel)
        expected = {path: self._expected(path, entry, hashes) for path, entry in entries.items()}
        different = self._differences(expected, hashes, cancel, after_copy=False)
        if different:
            for path, problem in different.items():
                if problem != "not there":
                    log.info("%s differs at the destination (%s): sending it again", path, problem)
            with _listing(different) as listing:
                self._run("copy", "--no-check-dest", "--files-from-raw", listing, str(self.downloads),
                          self.destination, cancel=cancel, what=f"copy of {_files(different)}")
            still = self._differences({path: expected[path] for path in different}, hashes, cancel, after_copy=True)
            if still:
                raise UploadFailed(f"upload to {self.destination}: not intact after the copy: "
                                   + "; ".join(f"{path}: {problem}" for path, problem in list(still.items())[:5]))
        for path, entry in entries.items():
            entry["location"] = join(self.destination, path)
        record(self.downloads, [(entry["sha256"], path) for path, entry in entries.items()])
        if self.delete:
            for path in entries:
                remove(self.downloads, path)

    def relative(self, path: str) -> str:
        return path.replace(os.sep, "/")

    # --- verification -------------------------------------------------------------------
    def _hashes(self, cancel: threading.Event) -> list[str]:
        """The hashes the destination can report, strongest first (empty: it reports none); asked once."""
        if self.destination not in _HASHES:
            features = json.loads(self._run("backend", "features", root(self.destination), cancel=cancel,
                                            what="asking which hashes it keeps"))
            offered = [h.lower() for h in features.get("Hashes") or []]
            _HASHES[self.destination] = [h for h in PREFERRED if h in offered]
        return _HASHES[self.destination]

    def _expected(self, path: str, entry: dict, hashes: list[str]) -> tuple[int, str]:
        """The size and the hash the destination must show for this file."""
        local = confine(self.downloads, path)
        size = local.stat().st_size
        if not hashes or hashes[0] == "sha256":
            return size, entry["sha256"]
        return size, local_hash(local, hashes[0], entry["sha256"])

    def _differences(self, expected: dict[str, tuple[int, str]], hashes: list[str], cancel: threading.Event,
                     after_copy: bool) -> dict[str, str]:
        """The files the destination lacks or holds otherwise, each with what is wrong."""
        with _listing(expected) as listing:
            try:
                found = json.loads(self._run("lsjson", "-R", "--files-only", "--files-from-raw", listing,
                                             *(("--hash-type", hashes[0]) if hashes else ()), self.destination,
                                             cancel=cancel, what=f"check of {_files(expected)}"))
            except UploadFailed as exc:
                if after_copy or "directory not found" not in str(exc):
                    raise
                found = []  # the destination folder does not exist yet
            there = {item["Path"]: item for item in found}
            sums = {}
            if not hashes and any(there.get(p, {}).get("Size") == size for p, (size, _) in expected.items()):
                for line in self._run("hashsum", "sha256", "--download", "--files-from-raw", listing,
                                      self.destination, cancel=cancel,
                                      what=f"read-back of {_files(expected)}").splitlines():
                    digest, _, path = line.partition("  ")
                    sums[path] = digest
        problems = {}
        for path, (size, digest) in expected.items():
            item = there.get(path)
            kind = hashes[0] if hashes else "sha256"
            got = (item or {}).get("Hashes", {}).get(kind) if hashes else sums.get(path)
            if item is None:
                problems[path] = "not there"
            elif item.get("Size") != size:
                problems[path] = f"{item.get('Size')} bytes there, {size} here"
            elif got != digest:
                problems[path] = f"{kind} {got or 'unknown'} there, {digest} here"
        return problems

    # --- rclone ---------------------------------------------------------------------------
    def _run(self, *args: str, cancel: threading.Event | None = None, what: str = "rclone") -> str:
        """Run rclone and return its output; UploadFailed with its last words if it fails, Cancelled if stopped."""
        argv = [self.rclone, "--quiet", *(("--config", self.rclone_config) if self.rclone_config else ()), *args]
        cancel = cancel or threading.Event()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    text=True, errors="replace", start_new_session=True)  # stopped by the worker only
        except OSError as exc:
            raise UploadFailed(f"cannot run {self.rclone}: {exc}") from None
        output = _Collect(proc)
        stopped = False
        while proc.poll() is None:
            if cancel.wait(0.2) and proc.poll() is None:
                stopped = True
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        proc.wait()
        out, err = output.join()
        if stopped:
            raise Cancelled(f"stopped during the {what}")
        if proc.returncode != 0:
            why = f"rclone exit {proc.returncode}" if proc.returncode > 0 else f"rclone ended by signal {-proc.returncode}"
            words = clean_text(" ".join(err.strip().splitlines()[-3:]), 600)
            raise UploadFailed(f"upload to {self.destination}: {what} failed ({why}){': ' + words if words else ''}")
        return out


class _Collect:
    """Reads a process's stdout and stderr on threads, so neither pipe fills up and blocks it."""

    def __init__(self, proc: subprocess.Popen):
        self.parts = {"out": [], "err": []}
        self.threads = [threading.Thread(target=self._read, args=(stream, self.parts[name]), daemon=True)
                        for name, stream in (("out", proc.stdout), ("err", proc.stderr))]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for chunk in iter(lambda: stream.read(65536), ""):
            into.append(chunk)
        stream.close()

    def join(self) -> tuple[str, str]:
        for thread in self.threads:
            thread.join()
        return "".join(self.parts["out"]), "".join(self.parts["err"])


@contextlib.contextmanager
def _listing(paths) -> Iterator[str]:
    """A temporary file naming `paths` one per line, for rclone's --files-from-raw."""
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False)
    try:
        with handle:
            handle.write("".join(f"{path}\n" for path in paths))
        yield handle.name
    finally:
        os.unlink(handle.name)


def _files(paths) -> str:
    paths = list(paths)
    return paths[0] if len(paths) == 1 else f"{len(paths)} files"


def local_hash(path: Path, kind: str, sha256: str) -> str:
    """The file's `kind` hash, read once; its SHA-256 is checked in the same pass (the file must be what was
    downloaded, or an upload could faithfully copy a file damaged since)."""
    digest, check = hashlib.new(kind), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
            check.update(block)
    if check.hexdigest() != sha256:
        path.unlink()  # so that the retry downloads it again
        raise UploadFailed(f"{path} changed since it was downloaded (SHA-256 {check.hexdigest()}, not {sha256});"
                           " deleted, not uploaded")
    return digest.hexdigest()


def remote_name(destination: str) -> str | None:
    """The rclone remote of a destination (`nas` of `nas:footage`, `:sftp,host=h` of a connection string),
    or None for a local path (`/mnt/nas`, `C:\\footage`, `./odd:name`)."""
    if destination.startswith(":"):
        return ":" + destination[1:].partition(":")[0]
    head, sep, _ = destination.partition(":")
    if not sep or not head or re.fullmatch(r"[A-Za-z]", head) or "/" in head or "\\" in head:
        return None
    return head


def refuse_secrets(destination: str) -> None:
    """A connection string's parameters go on rclone's command line: no password, key or token among them."""
    remote = remote_name(destination) or ""
    for param in remote.lstrip(":").split(",")[1:]:
        name = param.partition("=")[0].strip().lower()
        if SECRET_PARAM.search(name) and name not in HARMLESS_PARAM:
            raise SetupError(f"--upload: the destination sets {name!r} on the command line, which every user of this"
                             " host can read; put it in rclone's config file (rclone config) or an"
                             " RCLONE_CONFIG_<REMOTE>_<NAME> variable, and name the remote instead")


def join(destination: str, path: str) -> str:
    """`destination/path` for rclone (`nas:` + `a/b` is `nas:a/b`)."""
    path = path.replace(os.sep, "/").lstrip("/")
    if destination.endswith((":", "/")):
        return destination + path
    return f"{destination}/{path}"


def root(destination: str) -> str:
    """The destination, for `rclone backend features` (which wants a remote or a path)."""
    return destination or "."


def record(downloads: Path, uploaded: list[tuple[str, str]]) -> None:
    """Add `<sha256>  <path>` lines to the host's SHA256SUMS.uploaded (a path listed before is replaced);
    written whole, under a lock shared by the host's worker processes."""
    paths = {path for _, path in uploaded}
    listing = downloads / UPLOADED
    (downloads / STATE).mkdir(exist_ok=True)
    with _locked(downloads / STATE / "uploaded.lock"):
        try:
            lines = listing.read_text(encoding="utf-8").splitlines(keepends=True)
        except FileNotFoundError:
            lines = []
        kept = [line for line in lines if line.rstrip("\n").split("  ", 1)[-1] not in paths]
        temporary = listing.with_name(f".{UPLOADED}.{os.getpid()}.part")
        temporary.write_text("".join(kept + [f"{digest}  {path}\n" for digest, path in uploaded]), encoding="utf-8")
        os.replace(temporary, listing)


class _locked:
    """An exclusive lock on a file, held across the worker processes of this host."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, "a+b")
        if os.name == "nt":
            import msvcrt

            self.handle.seek(0)
            msvcrt.locking(self.handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if os.name == "nt":
            import msvcrt

            self.handle.seek(0)
            msvcrt.locking(self.handle.fileno(), msvcrt.LK_UNLCK, 1)
        self.handle.close()


def remove(downloads: Path, path: str) -> None:
    """Delete an uploaded file's local copy, and the folders it leaves empty (never --downloads itself)."""
    local = confine(downloads, path)
    local.unlink(missing_ok=True)
    root_folder = downloads.resolve()
    for folder in local.parents:
        if folder == root_folder or root_folder not in folder.parents:
            break
        try:
            folder.rmdir()
        except OSError:
            break
