"""HTTPS through a real proxy: Debian's nginx, with a certificate from a throwaway CA, in front of two coordinators.

nginx runs with README's configuration (deploy/nginx/taskserver.conf), only its addresses
and file paths replaced. Without nginx (apt-get install nginx-light) the stories are
skipped with the reason.
"""
from __future__ import annotations

import re
import shutil
import signal
import socket
from pathlib import Path

import pytest
import requests

from .harness import (
    HEADER,
    SIM_PASSWORD,
    T,
    api,
    free_port,
    start_client,
    start_coordinator,
    start_nvr,
    status,
    task_files,
    wait_for,
    write_sheet,
)
from .tlsca import make_ca, make_server_cert

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx" / "taskserver.conf"
TOKEN = "proxy-test-token"


def readme_nginx() -> str:
    """The nginx configuration README shows (the block after 'With nginx')."""
    text = (ROOT / "README.md").read_text()
    found = re.search(r"With nginx[^\n]*\n\n```nginx\n(.*?)```", text, re.DOTALL)
    assert found, "README should show the nginx configuration in a ```nginx block after 'With nginx'"
    return found.group(1)


def test_readme_shows_exactly_the_nginx_configuration_that_is_run():
    assert readme_nginx() == SITE.read_text()



def start_nginx(procs, tmp_path: Path, coordinators: list[str], crt: Path, key: Path) -> str:
    """nginx in the foreground with README's site, on a free loopback port; returns its https URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed (apt-get install nginx-light); the proxy test needs it")
    port = free_port()
    site = readme_nginx()
    replaced = {"coord1:8080": coordinators[0].removeprefix("http://"),
                "coord2:8080": coordinators[1].removeprefix("http://"),
                "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
                "/etc/nginx/tls/exports.crt": str(crt), "/etc/nginx/tls/exports.key": str(key)}
    for old, new in replaced.items():
        assert old in site
        site = site.replace(old, new)
    run = tmp_path / "nginx"
    run.mkdir()
    (run / "site.conf").write_text(site)
    temp = " ".join(f"{kind}_temp_path {run / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (run / "nginx.conf").write_text(
        f"user root;\nworker_processes 1;\npid {run / 'nginx.pid'};\nerror_log {run / 'error.log'} info;\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{ access_log {run / 'access.log'}; {temp} include {run / 'site.conf'}; }}\n")
    procs.start("nginx", [nginx, "-e", str(run / "error.log"), "-p", str(run), "-c", str(run / "nginx.conf"),
                          "-g", "daemon off;"])

    def accepting():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(accepting, 30, what="nginx to listen")
    return f"https://127.0.0.1:{port}"


def test_workers_run_through_nginx_with_tls_while_a_coordinator_dies_and_a_wrong_ca_is_refused_at_once(
        procs, tmp_path, postgres):
    nvr = start_nvr(procs, channels=2, hours=3, size=100_000, extra=("--delay", "0.1"))
    rows = [[nvr.address, "admin", SIM_PASSWORD, track, T.replace(hour=h), T.replace(hour=h + 1), f"t{track}h{h}"]
            for track in (101, 201) for h in range(3)]
    sheet = write_sheet(tmp_path / "t.xlsx", rows, HEADER)
    coord1 = start_coordinator(procs, sheet, postgres, "--token", TOKEN)
    coord2 = start_coordinator(procs, None, postgres, "--token", TOKEN)
    tls = tmp_path / "tls"
    tls.mkdir()
    site_ca = make_ca(tls, "site-ca")
    make_ca(tls, "other-ca")
    crt, key = make_server_cert(tls, site_ca)
    proxy = start_nginx(procs, tmp_path, [coord1.url, coord2.url], crt, key)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    # The event stream passes through without being held back: one small event arrives on its own.
    with requests.get(f"{proxy}/api/events", headers=headers, stream=True, timeout=30,
                      verify=str(tls / "site-ca.pem")) as stream:
        assert stream.status_code == 200
        assert requests.post(f"{proxy}/api/pause", headers=headers, json={}, timeout=10,
                             verify=str(tls / "site-ca.pem")).status_code == 200
        seen = []
        for line in stream.iter_lines(decode_unicode=True):
            seen.append(line)
            if seen[-2:-1] == ["event: task"] and "paused" in line:
                break
    api(coord2.url, "POST", "/api/resume", token=TOKEN, json={})

    # A worker host given another CA stops at once, says why, and names its exit code; nothing is retried.
    wrong = start_client(procs, proxy, tmp_path / "wrong", 1, "--token", TOKEN, "--ca-file",
                         str(tls / "other-ca.pem"))
    assert wrong.wait(60) == 5, wrong.output()[-2000:]
    assert wrong.output().count(f"{proxy}: TLS refused: its certificate is signed by a CA this worker does not"
                                " trust; give the CA that signed it with --ca-file (TASKCLIENT_CA_FILE)") == 1
    assert status(coord1.url, token=TOKEN)["counts"]["queued"] == len(rows)

    # The right CA: the run completes through nginx although one coordinator is killed mid-run.
    # A CA bundle variable set for other programs must not override --ca-file.
    client = start_client(procs, proxy, tmp_path / "dl", 2, "--token", TOKEN, "--ca-file", str(tls / "site-ca.pem"),
                          env={"REQUESTS_CA_BUNDLE": str(tls / "other-ca.pem")})
    def mid_run():
        counts = status(coord2.url, token=TOKEN)["counts"]
        return counts["done"] >= 1 and counts["queued"] + counts["leased"] >= 2
    wait_for(mid_run, 60, what="the run to be under way")
    coord1.kill(signal.SIGKILL)
    assert client.wait(120) == 0, client.output()[-3000:]
    final = status(coord2.url, token=TOKEN)
    assert final["counts"]["done"] == len(rows) and final["drained"]
    expected = {**nvr.expected(101, T, T.replace(hour=3)), **nvr.expected(201, T, T.replace(hour=3))}
    assert task_files(tmp_path / "dl") == expected
    assert "GET /api/claim?worker=" in (tmp_path / "nginx" / "access.log").read_text()  # it all went through nginx
