"""A malicious NVR attacks the worker host: paths, passwords, redirects, XXE, endless paging, cut files, log forging.

Each story runs the real coordinator, a real worker host and nvrsim with hostile switches.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from taskclient.errors import SetupError
from taskclient.paths import confine, safe_component, task_folder

from .harness import (
    HEADER,
    SIM_PASSWORD,
    api,
    at,
    exported,
    leftovers,
    start_client,
    start_coordinator,
    start_nvr,
    task_files,
    write_sheet,
)


def export(procs, tmp_path, nvr, *extra_client, password=SIM_PASSWORD, name="hostile", attempts="1", camera=101):
    """One row for `nvr`, one coordinator, one worker, run to the sentinel; the task as the API shows it."""
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", password, camera, at(0), at(1), name]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db", "--max-attempts", attempts)
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1, *extra_client)
    assert client.wait(90) == 0, client.output()[-3000:]
    return api(coordinator.url, path="/api/tasks/1").json(), coordinator, client


# --- paths -------------------------------------------------------------------------------
@pytest.mark.fast
def test_folder_names_keep_letters_and_stay_confined_on_windows_and_posix(tmp_path):
    assert safe_component("Entrée, hall") == "Entrée_hall"
    assert safe_component("Вход/../../etc") == "Вход_.._.._etc"
    assert safe_component("CON") == "_CON" and safe_component("nul.txt") == "_nul.txt"
    assert safe_component('a<b>c:d"e|f?g*h\\i\x00j\x1bk') == "a_b_c_d_e_f_g_h_i_j_k"
    assert safe_component("trailing dots... ") == "trailing_dots"
    assert safe_component("../..") == "task" and safe_component("") == "task"
    assert len(safe_component("x" * 500)) == 80
    folder = task_folder(tmp_path, {"id": 7, "name": "../../../etc/cron.d", "server": "s"})
    assert folder.parent == tmp_path.resolve() and folder.name == "000007-etc_cron.d"
    with pytest.raises(SetupError):
        confine(tmp_path, "../outside")
    with pytest.raises(SetupError):
        confine(tmp_path, "/etc/passwd")


@pytest.mark.slow
@pytest.mark.parametrize("field, value", [
    ("startTime", "./../../../../x/owned"),
    ("trackID", "../../../../x/owned"),
])
def test_a_hostile_time_or_track_in_a_search_answer_writes_nothing_outside_downloads(procs, tmp_path, field, value):
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(hostile={field: value}, no_size=False)
    task, _, _ = export(procs, tmp_path, nvr)
    assert task["state"] == "failed"
    assert "unusable" in task["last_error"], task["last_error"]
    assert not list(tmp_path.rglob("owned*")) and not (tmp_path / "x").exists()
    assert task_files(tmp_path / "dl") == {}


@pytest.mark.slow
def test_a_hostile_name_in_playback_uris_never_reaches_a_path(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(hostile={"name": "../../../../x/owned"})
    task, _, _ = export(procs, tmp_path, nvr, "--layout", "{nvr_label}/{camera_name}_{date}_{start}-{end}",
                        name="Entrée/../../x")
    assert task["state"] == "done", task["last_error"]
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))
    assert {p.relative_to(tmp_path / "dl").parts[0] for p in exported(tmp_path / "dl")} == {"Entrée_.._.._x"}
    assert not list(tmp_path.rglob("owned*"))


# --- credentials and redirects --------------------------------------------------------------
@pytest.mark.slow
def test_a_password_with_url_characters_works(procs, tmp_path):
    password = "p#w/r?d@x:y%41 z"
    nvr = start_nvr(procs, channels=1, hours=1, password=password)
    task, coordinator, client = export(procs, tmp_path, nvr, password=password)
    assert task["state"] == "done", task["last_error"]
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))
    assert password not in coordinator.output() + client.output()


class Recorder(BaseHTTPRequestHandler):
    """The attacker's server: records every request and asks for a digest login."""

    seen: list

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Digest realm="x", qop="auth", nonce="abc", algorithm=MD5')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_a_redirect_to_another_host_is_refused_and_no_login_leaves(procs, tmp_path):
    seen: list = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("R", (Recorder,), {"seen": seen}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        nvr = start_nvr(procs, channels=1, hours=1)
        nvr.faults(redirect_to=f"http://127.0.0.1:{server.server_address[1]}")
        task, _, _ = export(procs, tmp_path, nvr, attempts="3")
    finally:
        server.shutdown()
    assert seen == [], "the worker followed the NVR's redirect"
    assert task["state"] == "failed" and task["attempts"] == 1  # a configuration error: no retries
    assert "redirect (HTTP 302)" in task["last_error"] and "never followed" in task["last_error"]


# --- answers that attack the parser or the memory --------------------------------------------
@pytest.mark.slow
def test_an_external_entity_in_an_answer_is_refused_unread(procs, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-FILE-CONTENT")
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(xxe=secret.as_uri())
    task, coordinator, client = export(procs, tmp_path, nvr)
    assert task["state"] == "failed"
    assert "DOCTYPE/ENTITY" in task["last_error"]
    assert "TOP-SECRET" not in task["last_error"] + coordinator.output() + client.output()


@pytest.mark.slow
def test_a_search_that_answers_more_forever_stops_at_the_page_limit(procs, tmp_path):
    from taskclient.listing import MAX_PAGES

    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(endless_more=True)
    task, _, _ = export(procs, tmp_path, nvr)
    assert task["state"] == "failed"
    assert "still answers MORE after" in task["last_error"], task["last_error"]
    # The work really stopped: no abandoned thread kept paging after the attempt ended.
    searches = nvr.stats()["searches"]
    assert searches <= MAX_PAGES + 2
    assert nvr.stats()["searches"] == searches


@pytest.mark.slow
def test_an_answer_that_drips_forever_is_cut_at_its_deadline(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(drip=0.05)  # a byte every 50 ms: every read succeeds, the answer never ends
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db", "--nvr-give-up", "2")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--nvr-timeout", "1")
    assert client.wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "failed"
    assert task["last_error"].endswith(f"NVR {nvr.address}: the answer to device info took longer than 2 s")
    assert task["attempt_log"][0]["outcome"] == "nvr unreachable"  # the device, not the task: no attempt spent


# --- downloads whose end cannot be trusted ------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("switches, outcome", [
    ({"drop_after": 30000, "drop_count": 1}, "download cut after 30000 of"),  # size= given
    ({"no_size": True, "drop_after": 30000, "drop_count": 1}, "download cut after 30000 of"),  # Content-Length only
    ({"no_size": True, "framing": "chunked", "chunk_end": False}, "chunked encoding ended before its last chunk"),
    ({"no_size": True, "framing": "chunked", "drop_after": 30000, "drop_count": 1}, "chunked encoding ended"),
    ({"no_size": True, "framing": "close", "drop_after": 30000}, "announces no length"),  # neither: refused
])
def test_a_download_cut_by_a_clean_close_never_takes_its_final_name(procs, tmp_path, switches, outcome):
    nvr = start_nvr(procs, channels=1, hours=1, size=60_000)
    nvr.faults(**switches)
    task, _, _ = export(procs, tmp_path, nvr, attempts="2")
    errors = [a["error"] or "" for a in task["attempt_log"]]
    assert outcome in errors[0], errors
    if "announces no length" in outcome:
        assert task["state"] == "failed" and task["attempts"] == 1  # retrying cannot help
        assert task_files(tmp_path / "dl") == {}
    elif switches.get("chunk_end") is False:
        assert task["state"] == "failed"
    else:
        assert task["state"] == "done"
        assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))
    assert leftovers(tmp_path / "dl") == []


@pytest.mark.slow
def test_a_chunked_download_with_its_last_chunk_is_complete(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, size=60_000)
    nvr.faults(no_size=True, framing="chunked")
    task, _, _ = export(procs, tmp_path, nvr)
    assert task["state"] == "done", task["last_error"]
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


# --- log forging ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_nvr_error_text_cannot_forge_log_lines(procs, tmp_path):
    forged = "INFO taskserver: task 99 done: 1000 file(s)"
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(download_error=500, error_text=f"Device Error\n{forged}\x1b[2J" + "x" * 5000)
    task, coordinator, client = export(procs, tmp_path, nvr)
    assert task["state"] == "failed"
    error = task["last_error"]
    assert "\n" not in error and "\x1b" not in error and len(error) < 600
    assert "Device Error" in error
    for log in (coordinator.output(), client.output()):
        assert not any(line.startswith(forged) for line in log.splitlines()), log[-2000:]


# --- what ffmpeg is given, and the names and sizes a device claims -----------------------------
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (apt-get install ffmpeg)")


def someone_elses_video(folder: Path) -> tuple[Path, str]:
    """Another site's footage on this host, cut in DASH segments, and a manifest that points at it."""
    folder.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=4", "-t", "60",
                    "-c:v", "libx264", "-g", "8", str(folder / "other.mp4")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(folder / "other.mp4"), "-c", "copy", "-f", "dash",
                    "-seg_duration", "10", str(folder / "m.mpd")], check=True, cwd=folder)
    manifest = (folder / "m.mpd").read_text()
    return folder / "other.mp4", manifest.replace('initialization="', f'initialization="{folder}/').replace(
        'media="', f'media="{folder}/')


@pytest.mark.slow
@needs_ffmpeg
def test_a_playlist_sent_as_a_recording_never_makes_ffmpeg_read_other_files(procs, tmp_path):
    other, manifest = someone_elses_video(tmp_path / "other-site")
    nvr = start_nvr(procs, channels=1, hours=1, interval=60)
    nvr.faults(body=manifest, no_size=True)
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(0, 1), "x"]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db", "--max-attempts", "1")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1, "--format", "mp4", "--window", "whole")
    assert client.wait(90) == 0, client.output()[-3000:]
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "failed"
    assert "is no video stream ffmpeg may read (it begins b'<?xml ve'); not kept" in task["last_error"]
    assert exported(tmp_path / "dl") == [] and leftovers(tmp_path / "dl") == []


@pytest.mark.slow
@needs_ffmpeg
def test_a_clip_shorter_than_the_recording_is_not_a_playable_export_of_it(procs, tmp_path):
    # The device sends a real MP4 (no program stream: ffprobe gives the length), 20 s for each 60 s recording.
    nvr = start_nvr(procs, channels=1, hours=1, interval=60, extra=("--video-seconds", "20"))
    task, _, _ = export(procs, tmp_path, nvr, "--format", "mp4", "--window", "whole")
    assert task["state"] == "failed"
    assert task["last_error"].endswith("the device sent 20.0 s of video for the 60.0 s asked; not kept")
    assert exported(tmp_path / "dl") == []


@pytest.mark.slow
def test_a_channel_name_in_four_byte_letters_is_shortened_and_keeps_the_times(procs, tmp_path):
    wide = "\U0001d404\U0001d427\U0001d42d\U0001d42b\U0001d41a\U0001d427\U0001d41c\U0001d41e" * 8  # 𝐄𝐧𝐭𝐫𝐚𝐧𝐜𝐞: 4 bytes each
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(names={"1": wide})
    task, _, client = export(procs, tmp_path, nvr)
    assert task["state"] == "done", task["last_error"]
    files = exported(tmp_path / "dl")
    assert len(files) == len(nvr.expected(101, at(0), at(1)))
    # Every level within 200 bytes (filesystems take 255), the extension and temporary names on top.
    assert all(len(part.encode()) <= 200 for f in files for part in f.with_suffix("").relative_to(tmp_path / "dl").parts)
    assert all(f.stem.startswith("\U0001d404") and f.stem[-13:].count("-") == 1 for f in files)  # name, then times
    assert "host fault" not in client.output()


@pytest.mark.slow
def test_a_listed_size_no_recording_could_have_does_not_make_hosts_think_their_disk_is_full(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(hostile={"size": "999999999999999"})
    task, _, client = export(procs, tmp_path, nvr)
    assert task["state"] == "done", task["last_error"]
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))
    assert "no space left" not in client.output()
