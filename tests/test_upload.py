"""Footage in one place: worker hosts upload each done task's files with rclone, verified, before reporting done.

The SFTP stories run OpenSSH's sshd on a spare loopback port with key authentication
(apt-get install openssh-server rclone); without them they are skipped with the reason.
"""
from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from taskclient.errors import SetupError
from taskclient.upload import Uploader, join, remote_name

from .harness import (
    HEADER,
    SIM_PASSWORD,
    api,
    at,
    free_port,
    start_client,
    start_coordinator,
    start_nvr,
    task_files,
    wait_for,
    write_sheet,
)

SSHD = "/usr/sbin/sshd"


def needs(*programs: str) -> None:
    for program in programs:
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed (apt-get install rclone openssh-server); the upload tests need it")



@pytest.fixture
def sftp(procs, tmp_path):
    """An SFTP server on loopback (OpenSSH, key auth only) and the RCLONE_* variables naming it as remote `site`."""
    needs(SSHD, "ssh-keygen", "rclone")
    try:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    except OSError as exc:
        pytest.skip(f"sshd needs /run/sshd, which cannot be made here ({exc})")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "user.pub").read_text())
    port = free_port()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {(keys / 'host.pub').read_text()}")
    (keys / "sshd_config").write_text(
        f"HostKey {keys / 'host'}\nListenAddress 127.0.0.1\nPort {port}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
        f"AllowUsers {getpass.getuser()}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPidFile none\nSubsystem sftp internal-sftp\n")
    procs.start("sshd", [SSHD, "-D", "-e", "-f", str(keys / "sshd_config")], ready=r"Server (listening) on 127")
    (tmp_path / "rclone.conf").write_text("")  # nothing from this machine's own rclone config
    return {"RCLONE_CONFIG": str(tmp_path / "rclone.conf"), "RCLONE_CONFIG_SITE_TYPE": "sftp",
            "RCLONE_CONFIG_SITE_HOST": "127.0.0.1", "RCLONE_CONFIG_SITE_PORT": str(port),
            "RCLONE_CONFIG_SITE_USER": getpass.getuser(), "RCLONE_CONFIG_SITE_KEY_FILE": str(keys / "user"),
            "RCLONE_CONFIG_SITE_KNOWN_HOSTS_FILE": str(keys / "known_hosts")}


def one_task(procs, tmp_path, **nvr):
    server = start_nvr(procs, channels=1, hours=1, **nvr)
    sheet = write_sheet(tmp_path / "t.xlsx", [[server.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "lobby"]],
                        HEADER)
    return server, start_coordinator(procs, sheet, tmp_path / "ts.db")


def files_of(url: str) -> list[dict]:
    return api(url, path="/api/tasks/1/files").json()["files"]


@pytest.mark.slow
def test_files_go_to_a_network_path_verified_and_the_local_copies_are_deleted_only_then(procs, tmp_path):
    needs("rclone")
    nvr, coordinator = one_task(procs, tmp_path)
    nas = tmp_path / "nas"  # a mounted share looks like this to the worker host
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--upload", str(nas), "--upload-delete",
                          env={"RCLONE_CONFIG": os.devnull})
    assert client.wait(60) == 0, client.output()[-3000:]
    assert task_files(nas) == nvr.expected(101, at(0), at(1))
    assert task_files(tmp_path / "dl") == {}  # deleted once verified, and no empty folder left behind
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == [".taskclient", "SHA256SUMS.uploaded"]
    files = files_of(coordinator.url)
    assert len(files) == len(nvr.expected(101, at(0), at(1)))
    assert all(f["location"] == f"{nas}/{f['path']}" and Path(f["location"]).is_file() for f in files)
    # The host's list of uploaded files proves the copies at the destination.
    listed = (tmp_path / "dl" / "SHA256SUMS.uploaded").read_text().splitlines()
    assert sorted(listed) == sorted(f"{f['sha256']}  {f['path']}" for f in files)
    check = subprocess.run(["sha256sum", "--strict", "-c", str(tmp_path / "dl" / "SHA256SUMS.uploaded")], cwd=nas,
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == len(files), check.stdout + check.stderr


@pytest.mark.slow
def test_files_go_to_an_sftp_server_and_keep_their_local_copies_unless_asked(procs, tmp_path, sftp):
    nvr, coordinator = one_task(procs, tmp_path)
    nas = tmp_path / "sftp-root"
    # A server that runs no commands (sftp only) offers no checksums: each copy is read back and hashed.
    sftp_only = {**sftp, "RCLONE_CONFIG_SITE_DISABLE_HASHCHECK": "true"}
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--upload", f"site:{nas}", env=sftp_only)
    assert client.wait(60) == 0, client.output()[-3000:]
    expected = nvr.expected(101, at(0), at(1))
    assert task_files(nas) == expected and task_files(tmp_path / "dl") == expected
    assert all(f["location"] == f"site:{nas}/{f['path']}" for f in files_of(coordinator.url))


@pytest.mark.slow
def test_an_upload_cut_mid_file_fails_the_attempt_and_the_retry_uploads_it_whole(procs, tmp_path, sftp):
    nvr, coordinator = one_task(procs, tmp_path, size=400_000)
    # The first copy crawls (20 KiB/s), so that it can be cut mid-file; rclone runs as usual afterwards.
    slow_once = tmp_path / "rclone-slow-once"
    slow_once.write_text(f'#!/bin/sh\nif [ "$1 $2" = "--quiet copy" ] && mkdir {tmp_path}/slowed 2>/dev/null;'
                         ' then exec rclone --bwlimit 20K "$@"; fi\nexec rclone "$@"\n')
    slow_once.chmod(0o755)
    nas = tmp_path / "sftp-root"
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--upload", f"site:{nas}", "--rclone",
                          str(slow_once), env=sftp)
    expected = nvr.expected(101, at(0), at(1))
    first = sorted(expected)[0]

    def copying_midway():
        partial = list(nas.rglob(first))
        return partial and 0 < partial[0].stat().st_size < len(expected[first])
    wait_for(copying_midway, 60, what="the first upload to be under way")
    (rclone,) = [p for p in psutil.Process(client.pid).children(recursive=True)
                 if "copy" in p.cmdline() and "--bwlimit" in p.cmdline()]
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "leased"  # not done while it uploads
    rclone.kill()

    assert client.wait(90) == 0, client.output()[-3000:]
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done" and task["attempts"] == 2
    cut, done = task["attempt_log"]
    assert cut["outcome"] == "failed" and done["outcome"] == "done"
    assert cut["error"] == f"upload to site:{nas}: copy of {len(expected)} files failed (rclone ended by signal 9)"
    assert task_files(nas) == expected  # whole, every one
    assert all(f["location"] == f"site:{nas}/{f['path']}" for f in files_of(coordinator.url))


@pytest.mark.fast
def test_a_destination_with_a_password_on_the_command_line_is_refused(tmp_path):
    for destination in (":sftp,host=nas,user=cctv,pass=0bscured:footage", "nas,password=x:footage",
                        ":s3,secret_access_key=abc:bucket", ":sftp,host=nas,key_pem=-----BEGIN:footage"):
        with pytest.raises(SetupError, match="which every user of this host can read"):
            Uploader(destination, tmp_path).check()
    assert remote_name("nas:footage") == "nas" and remote_name(":sftp,host=nas:footage") == ":sftp,host=nas"
    assert remote_name("/mnt/nas/footage") is None and remote_name("C:\\footage") is None
    assert remote_name("./odd:name") is None
    assert join("nas:", "a/b.mp4") == "nas:a/b.mp4" and join("nas:footage/", "a") == "nas:footage/a"
    assert join("/mnt/nas", "a/b.mp4") == "/mnt/nas/a/b.mp4"


@pytest.mark.fast
def test_a_host_without_rclone_or_with_an_unknown_remote_stops_at_start(tmp_path, monkeypatch):
    with pytest.raises(SetupError, match="--upload needs rclone, and '/nowhere/rclone' is not found"):
        Uploader("nas:footage", tmp_path, rclone="/nowhere/rclone").check()
    if shutil.which("rclone"):
        monkeypatch.setenv("RCLONE_CONFIG", os.devnull)
        with pytest.raises(SetupError, match="rclone knows no remote 'nowhere'"):
            Uploader("nowhere:footage", tmp_path).check()
