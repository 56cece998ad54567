"""The simulator itself: quiet when clients stop early, self-describing, and its certificate as printed."""
from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import sys

import requests
from requests.auth import HTTPDigestAuth

from .harness import SIM_PASSWORD, start_nvr, wait_for

BODY = ('<downloadRequest><playbackURI>rtsp://x/Streaming/tracks/101/?starttime=20260101T000000Z'
        '&amp;endtime=20260101T001000Z</playbackURI></downloadRequest>')


def test_a_client_that_stops_a_download_early_causes_no_traceback(procs):
    nvr = start_nvr(procs, channels=1, hours=1, size=3_000_000)
    for _ in range(5):
        with requests.get(f"{nvr.url}/ISAPI/ContentMgmt/download", data=BODY, stream=True, timeout=10,
                          auth=HTTPDigestAuth("admin", SIM_PASSWORD)) as response:
            assert response.status_code == 200
            response.raw.read(1000)
            response.raw._fp.fp.raw._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    wait_for(lambda: nvr.stats()["downloads_started"] == 5, what="five downloads started")
    wait_for(lambda: nvr.stats()["concurrent"] == 0, what="the simulator to notice the closed connections")
    assert "Traceback" not in nvr.proc.output() and "Error" not in nvr.proc.output()


def test_help_shows_every_default():
    out = subprocess.run([sys.executable, "-m", "nvrsim", "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "250"}).stdout
    flat = " ".join(out.split())
    for shown in ("--user USER the device's user (default: admin)", "(default: 4)", "(default: 2026-01-01 00:00:00)",
                  "(default: 600)", "(default: both)", "(default: 1800.0)", "(default: length)"):
        assert shown in flat, shown
    assert "sim-password" in flat  # named, as the fallback of $NVRSIM_PASSWORD


def test_https_serves_the_certificate_whose_fingerprint_it_printed(procs):
    nvr = start_nvr(procs, channels=1, hours=1, extra=("--https",))
    host, port = nvr.hostport.rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)), timeout=10)
    assert hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest() == nvr.fingerprint
