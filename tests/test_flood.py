"""Someone on the network floods the coordinator with idle connections and slowloris requests, with no
token at all, while real workers are exporting: the coordinator stays up and the run completes."""
from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import psutil
import pytest

from .harness import HEADER, T, api, start_client, start_coordinator, status, wait_for, write_sheet

pytestmark = pytest.mark.slow
IDLE = 2000  # twice the default --connections, and past select()'s 1024 descriptors
SLOW = 200


@pytest.fixture
def open_files():
    """The test itself holds a few thousand sockets."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = IDLE + SLOW + 500
    if soft < needed:
        if hard < needed:
            pytest.skip(f"the flood needs {needed} open files; this process may open {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def slowloris(address: tuple[str, int], sockets: list[socket.socket], stop: threading.Event) -> None:
    """Start requests and send their headers a byte a second, never finishing them."""
    for sock in sockets:
        try:
            sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        except OSError:
            pass
    while not stop.wait(1.0):
        for sock in sockets:
            try:
                sock.send(b"a")
            except OSError:
                pass  # the coordinator closed it: that is the point


def test_the_coordinator_outlasts_a_connection_flood_while_workers_finish_the_run(procs, tmp_path, open_files):
    rows = [[f"10.6.0.{n % 4}", "admin", "Flood-pw-1", 101, T, T.replace(hour=1, minute=n), f"task {n}"]
            for n in range(60)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--header-timeout", "3")
    url = coordinator.url
    address = (urlsplit(url).hostname, urlsplit(url).port)
    client = start_client(procs, url, tmp_path / "dl", 2, "--runner", "command", "--command", "sleep 0.3")
    wait_for(lambda: status(url)["counts"]["done"] >= 1, what="the workers to get going")

    flood, slow = [], []
    stop = threading.Event()
    try:
        for sockets, count in ((flood, IDLE), (slow, SLOW)):
            for _ in range(count):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(address)  # in progress; beyond the backlog the kernel keeps retrying it
                sockets.append(sock)
        for sock in slow:
            sock.setblocking(True)
            sock.settimeout(5)
        attacker = threading.Thread(target=slowloris, args=(address, slow, stop), daemon=True)
        attacker.start()
        coordinator_process = psutil.Process(coordinator.pid)
        # The flood reaches the coordinator: about a thousand descriptors open, where select() gave up.
        wait_for(lambda: coordinator_process.num_fds() >= 1000, timeout=60, what="the flood to fill the coordinator")
        # Meanwhile the workers, on the connections they keep alive, finish every task.
        wait_for(lambda: client.popen.poll() is not None or coordinator.popen.poll() is not None, timeout=150,
                 what="the run to end")
        assert coordinator.popen.poll() is None, f"the coordinator died:\n{coordinator.output()[-3000:]}"
        assert client.wait() == 0, client.output()[-3000:]
    finally:
        stop.set()
        for sock in flood + slow:
            sock.close()
    final = status(url)
    assert final["drained"] and final["counts"]["done"] == len(rows)
    assert api(url, path="/healthz").json() == {"ok": True}  # and a new client is served afterwards
    assert "Traceback" not in coordinator.output()
