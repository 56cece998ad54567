"""Real processes on loopback for the tests: the simulator, the coordinator, worker hosts.

Each process writes to its own log file under the test's tmp_path; a process is
ready when its log shows its address. Every process is killed at teardown.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests
from openpyxl import Workbook

from nvrsim import Catalogue

PYTHON = sys.executable
SIM_PASSWORD = "S1m-Secret-pw"
# The key that seals NVR passwords in the tests' databases; coordinators and commands the
# tests start inherit it (PostgreSQL stores need one; SQLite ones would make a key file).
TEST_KEY = "kT0M1qgR5Yy2Yt6dvl9p0mN1Qk3o4vJx5C8T2q5Zc0E="
os.environ.setdefault("TASKSERVER_SECRET_KEY", TEST_KEY)
T = datetime(2026, 1, 1)  # the simulated NVRs' recordings start here


# The PostgreSQL the tests use; each test gets a schema of its own in it.
POSTGRES = os.environ.get("TASKSERVER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_missing() -> str | None:
    """Why the tests cannot use PostgreSQL here, or None if they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'taskserver[postgres]')"
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        return f"no PostgreSQL at {POSTGRES} ({str(exc).strip().splitlines()[0]}); set TASKSERVER_TEST_POSTGRES"
    return None


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL whose tables live in a new, empty schema; dropped afterwards."""
    import psycopg

    schema = "taskserver_test_" + secrets.token_hex(4)
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES else "?"
    try:
        yield f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


class FakeClock:
    """A clock the tests move by hand: the store's time, without sleeping."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class OffsetClock:
    """The real clock moved to another moment: time flows as usual, and the test jumps it ahead."""

    def __init__(self, start: datetime):
        self.offset = 0.0
        self.jump_to(start)

    def __call__(self) -> float:
        return time.time() + self.offset

    def jump_to(self, moment: datetime) -> None:
        self.offset = moment.timestamp() - time.time()


@contextmanager
def coordinator_in_process(db, clock, **settings) -> Iterator[str]:
    """The coordinator under waitress in this process, on `clock` (for stories that span days); yields its URL."""
    import threading

    import waitress

    from taskserver.app import create_app
    from taskserver.config import Config

    config = Config.from_env(**{"db": str(db), "tasks": "", "host": "127.0.0.1", "port": 0, **settings})
    app = create_app(config, clock=clock)
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=8)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        app.extensions["taskserver.stop"].set()
        server.close()
        app.extensions["taskserver.store"].close()


def at(h: int, m: int = 0) -> datetime:
    """A time on the simulated NVRs' first day."""
    return T.replace(hour=h, minute=m)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Proc:
    """A started process and its log."""

    popen: subprocess.Popen
    log: Path
    url: str | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self, pattern: str, timeout: float = 30.0) -> str:
        """Wait until the log shows `pattern`; its first group is the process's URL."""
        def address():
            match = re.search(pattern, self.output())
            if match is None and self.popen.poll() is not None:
                raise AssertionError(f"{self.log.stem} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")
            return match
        self.url = wait_for(address, timeout, what=f"{self.log.stem} to start").group(1)
        return self.url

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process did not exit within {timeout} s; log:\n{self.output()[-3000:]}") from None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)


@dataclass
class Processes:
    """Starts processes for one test and kills them all at the end."""

    tmp: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: list[str], ready: str | None = None, env: dict | None = None,
              timeout: float = 30.0, cwd: Path | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        n = 1
        while log.exists():
            n += 1
            log = self.tmp / f"{name}-{n}.log"
        handle = open(log, "wb")
        popen = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                 cwd=cwd or self.tmp, start_new_session=True)
        handle.close()
        proc = Proc(popen, log)
        self.started.append(proc)
        if ready:
            proc.ready(ready, timeout)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait(10)


class NVR:
    """A running nvrsim and what it holds."""

    def __init__(self, proc: Proc, catalogue: Catalogue, password: str):
        self.proc = proc
        self.catalogue = catalogue
        self.password = password
        self.url = proc.url
        self.address = proc.url.removeprefix("http://")  # the sheet's server column; https:// stays
        self.hostport = proc.url.split("://", 1)[1]
        found = re.search(r"certificate SHA-256 ([0-9a-f]{64})", proc.output())
        self.fingerprint = found.group(1) if found else None

    def stats(self) -> dict:
        return requests.get(f"{self.url}/sim/stats", timeout=5, verify=False).json()

    def faults(self, **changes) -> dict:
        response = requests.post(f"{self.url}/sim/faults", json=changes, timeout=5, verify=False)
        response.raise_for_status()
        return response.json()

    def expected(self, track: int, start: datetime, end: datetime, camera: str | None = None) -> dict[str, bytes]:
        """File name (in the default layout) -> bytes of every recording of `track` overlapping [start, end)."""
        return {file_name(r, camera): r.content() for r in self.catalogue.recordings(track, start, end)}


def file_name(rec, camera: str | None = None, extension: str = ".bin") -> str:
    """A whole recording's file name in the default layout: camera name, date, start-end (synthetic: .bin)."""
    camera = camera or f"Camera_{rec.track // 100:02d}"
    return f"{camera}_{rec.start:%Y-%m-%d}_{rec.start:%H%M%S}-{rec.end:%H%M%S}{extension}"


def start_nvr(procs: Processes, channels: int = 2, hours: int = 4, interval: int = 600, size: int = 40_000,
              password: str = SIM_PASSWORD, extra: tuple[str, ...] = (), codec: str | None = None,
              resolution: str = "160x120", fps: int = 4, noise: int = 0) -> NVR:
    """Start nvrsim on a free port with recordings from 2026-01-01 00:00 for `hours` hours.

    With a `codec` (h264, h265) it serves the realistic payload (real video, keyframes every 2 s).
    """
    start = datetime(2026, 1, 1)
    end = datetime(2026, 1, 1, hours) if hours < 24 else datetime(2026, 1, 1 + hours // 24, hours % 24)
    pattern = None
    if codec:
        from nvrsim.payload import load_pattern

        pattern = load_pattern(codec, resolution, fps, 2, noise)  # made once here: the simulator finds it cached
        extra = ("--payload", "realistic", "--codec", codec, "--resolution", resolution, "--fps", str(fps),
                 "--noise", str(noise), *extra)
    catalogue = Catalogue(channels, start, end, interval, size, pattern=pattern)
    proc = procs.start("nvrsim", [
        PYTHON, "-m", "nvrsim", "--port", "0", "--user", "admin", "--channels", str(channels),
        "--start", start.isoformat(), "--end", end.isoformat(), "--interval", str(interval), "--size", str(size),
        *extra], ready=r"listening on (https?://\S+)", env={"NVRSIM_PASSWORD": password})
    return NVR(proc, catalogue, password)


def start_coordinator(procs: Processes, sheet: Path | None, db: Path | str, *extra: str, port: int = 0,
                      env: dict | None = None) -> Proc:
    """`taskserver serve` under waitress on 127.0.0.1; short leases and backoff unless overridden."""
    return procs.start("coordinator", coordinator_argv(sheet, db, *extra, port=port), ready=LISTENING, env=env)


LISTENING = r"listening on (http://\S+)"


def coordinator_argv(sheet: Path | None, db: Path | str, *extra: str, port: int = 0) -> list[str]:
    return [PYTHON, "-m", "taskserver", "serve", "--db", str(db), "--host", "127.0.0.1", "--port", str(port),
            "--tasks", str(sheet) if sheet else "", "--lease-seconds", "5", "--backoff-base", "0.2",
            "--backoff-max", "1", "--max-wait", "0.5", "--nvr-backoff", "0.3", *extra]


def start_client(procs: Processes, url: str, downloads: Path, workers: int = 2, *extra: str,
                 env: dict | None = None) -> Proc:
    """`python -m taskclient` with its own log."""
    argv = [PYTHON, "-m", "taskclient", "--server", url, "--workers", str(workers), "--downloads", str(downloads),
            "--nvr-timeout", "10", *extra]
    return procs.start("client", argv, env=env)


def write_sheet(path: Path, rows: list[list], header: list[str] | None = None, title: str = "tasks") -> Path:
    """An .xlsx with an optional header row, as a user would make it."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = title
    if header:
        sheet.append(header)
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


HEADER = ["server", "username", "password", "cameras", "starttime", "endtime", "name"]


def api(url: str, method: str = "GET", path: str = "/api/status", token: str | None = None, **kwargs):
    """One call to the coordinator's API."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, url + path, headers=headers, timeout=10, **kwargs)


def status(url: str, token: str | None = None) -> dict:
    return api(url, token=token).json()


def claims_held(url: str) -> float:
    """How many claims the coordinator holds open right now (its /metrics gauge)."""
    metrics = api(url, path="/metrics").text
    return float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("taskserver_claims_held ")))


def exported(downloads: Path) -> list[Path]:
    """Every exported file under the downloads folder (not the checksum files, the ledger or temporary files)."""
    return sorted(p for p in downloads.rglob("*") if p.is_file() and not p.name.startswith("SHA256SUMS")
                  and not any(part.startswith(".") for part in p.relative_to(downloads).parts))


def task_files(downloads: Path) -> dict[str, bytes]:
    """Every exported file under the downloads folder, by name (folders flattened)."""
    files = {}
    for path in exported(downloads):
        assert path.name not in files, f"{path.name} exported twice"
        files[path.name] = path.read_bytes()
    return files


def manifest_files(result: dict, downloads: Path) -> dict[str, bytes]:
    """The files a runner's result lists in its manifest, by name, read from downloads."""
    return {Path(f["path"]).name: (downloads / f["path"]).read_bytes() for f in result["manifest"]}


def files_of(url: str, task_id: int, downloads: Path) -> dict[str, bytes]:
    """The files a task's manifest lists, by name, read from downloads."""
    manifest = api(url, path=f"/api/tasks/{task_id}/files").json()["files"]
    return {Path(f["path"]).name: (downloads / f["path"]).read_bytes() for f in manifest}


def leftovers(downloads: Path) -> list[Path]:
    """Partial files left behind."""
    return [p for p in downloads.rglob("*") if p.name.endswith(".part")]


def dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


def worker_processes(client: Proc) -> list:
    """The worker processes of a taskclient (not multiprocessing's resource tracker)."""
    import psutil

    found = []
    for child in psutil.Process(client.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found



def free_port() -> int:
    """A loopback port free right now, for programs that cannot pick their own (sshd, nginx, containers)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
