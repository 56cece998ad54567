"""Real firmware differs: paging, spellings, methods, channel lists, busy answers, HTTPS. Every export holds.

Each switch of nvrsim models one documented firmware behaviour (see nvrsim --help);
the worker must export every recording exactly once, byte for byte, whatever it meets.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from taskclient.tls import pretty

from .harness import (
    HEADER,
    SIM_PASSWORD,
    api,
    at,
    file_name,
    files_of,
    leftovers,
    start_client,
    start_coordinator,
    start_nvr,
    status,
    task_files,
    write_sheet,
)
from .tlsca import make_ca, make_server_cert

pytestmark = pytest.mark.slow

# label -> (nvrsim switches, cameras in the row, tracks expected)
FIRMWARES = {
    "one-item last page": ({"page_cap": 5}, "101", (101,)),
    "MORE on every full page": ({"page_cap": 3}, "101", (101,)),
    "correct position spelling only": ({"page_cap": 4, "position_field": "searchResultPosition"}, "101", (101,)),
    "misspelt position and totalMatches": ({"page_cap": 4, "position_field": "searchResultPostion",
                                            "total_matches": True}, "101", (101,)),
    "trackIDList ignored": ({"ignore_track": True, "page_cap": 4}, "201", (201,)),
    "GET-only search, POST-only download": ({"search_methods": ["GET"], "download_methods": ["POST"]}, "101", (101,)),
    "POST-only search, GET-only download": ({"search_methods": ["POST"], "download_methods": ["GET"]}, "101", (101,)),
    "no Streaming/channels: IP list": ({"refuse_lists": ["streaming"]}, None, (101, 201)),
    "chunked downloads without size=": ({"framing": "chunked", "no_size": True}, "201", (201,)),
}


def test_listings_and_downloads_hold_across_firmwares(procs, tmp_path):
    nvrs = {}
    for label, (switches, _, _) in FIRMWARES.items():
        nvrs[label] = start_nvr(procs, channels=2, hours=1)
        nvrs[label].faults(**switches)
    hybrid = start_nvr(procs, channels=3, hours=1, extra=("--analog", "1", "--refuse-lists", "streaming"))
    rows = [[nvrs[label].address, "admin", SIM_PASSWORD, cams, at(0), at(1), label]
            for label, (_, cams, _) in FIRMWARES.items()]
    rows.append([hybrid.address, "admin", SIM_PASSWORD, None, at(0), at(1), "hybrid DVR, analog and IP lists"])
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--max-attempts", "1")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 3)
    assert client.wait(150) == 0, client.output()[-3000:]

    expectations = [(nvrs[label], tracks) for label, (_, _, tracks) in FIRMWARES.items()] + [(hybrid, (101, 201, 301))]
    for task_id, (nvr, tracks) in enumerate(expectations, start=1):
        task = api(coordinator.url, path=f"/api/tasks/{task_id}").json()
        assert task["state"] == "done", (task["name"], task["last_error"])
        expected = {}
        for track in tracks:
            expected.update(nvr.expected(track, at(0), at(1), "Analog_01" if (nvr, track) == (hybrid, 101) else None))
        got = files_of(coordinator.url, task_id, tmp_path / "dl")
        assert got == expected, task["name"]
        assert nvr.stats()["downloads_completed"] == len(expected), f"{task['name']}: a recording came twice"
    assert leftovers(tmp_path / "dl") == []

    # The manifest says where each file of the hybrid DVR went, what it holds, and its digest.
    files = api(coordinator.url, path=f"/api/tasks/{len(expectations)}/files").json()["files"]
    names = {101: "Analog_01", 201: "Camera_02", 301: "Camera_03"}
    recordings = {f"{hybrid.address.replace(':', '_')}/{r.track}_{names[r.track]}/2026-01-01/"
                  f"{file_name(r, names[r.track])}": r
                  for t in (101, 201, 301) for r in hybrid.catalogue.recordings(t, at(0), at(1))}
    assert sorted(f["path"] for f in files) == sorted(recordings)
    for f in files:
        rec = recordings[f["path"]]
        assert (f["size"], f["sha256"], f["camera"], f["start"], f["end"], f["kind"], f["host"]) == (
            rec.size, rec.sha256(), str(rec.track), rec.start.isoformat(), rec.end.isoformat(), "video",
            socket.gethostname())
        assert f["camera_name"] == {101: "Analog 01", 201: "Camera 02", 301: "Camera 03"}[rec.track]


def test_border_recordings_clipped_by_the_firmware_are_exported_once_across_chunks(procs, tmp_path):
    # 7-minute recordings, one-hour chunks: edges fall inside recordings, whose times the device clips.
    nvr = start_nvr(procs, channels=1, hours=3, interval=420, extra=("--clip",))
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101", at(0, 5), at(2, 55), "yard"]]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--chunk", "1h")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 2, "--window", "whole")
    assert client.wait(120) == 0
    assert status(coordinator.url)["counts"]["done"] == 3
    expected = nvr.expected(101, at(0, 5), at(2, 55))
    assert task_files(tmp_path / "dl") == expected  # fails on a recording downloaded by two chunks
    assert nvr.stats()["downloads_completed"] == len(expected)


@pytest.mark.parametrize("area", ["info", "search", "download"])
def test_a_busy_answer_inside_the_xml_rests_the_nvr_without_spending_attempts(procs, tmp_path, area):
    nvr = start_nvr(procs, channels=1, hours=1)
    nvr.faults(xml_busy=[area])
    sheet = write_sheet(tmp_path / "t.xlsx", [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1)]], HEADER)
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db", "--max-attempts", "1")
    client = start_client(procs, coordinator.url, tmp_path / "dl", 1)
    calm = threading.Event()

    def calm_down_after_two_busy_answers():
        while nvr.stats()["busy_answers"] < 2:
            calm.wait(0.05)
        nvr.faults(xml_busy=[])
    threading.Thread(target=calm_down_after_two_busy_answers, daemon=True).start()

    assert client.wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done" and task["attempts"] == 1, task["attempt_log"]
    outcomes = [a["outcome"] for a in task["attempt_log"]]
    assert set(outcomes[:-1]) == {"nvr busy"} and len(outcomes) >= 3
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


def test_an_https_nvr_with_a_self_signed_certificate_fails_fast_then_works_when_pinned(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, extra=("--https",))
    assert nvr.address.startswith("https://") and nvr.fingerprint
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "lobby"]]
    db = tmp_path / "ts.db"
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db, "--max-attempts", "5")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "failed" and task["attempts"] == 1  # a configuration error, not "unreachable"
    error = task["last_error"]
    assert "TLS refused: its certificate is self-signed and not trusted" in error
    assert pretty(nvr.fingerprint) in error and "--nvr-fingerprint" in error
    assert not list((tmp_path / "dl").iterdir())  # no empty task folder left behind

    taskserver = [sys.executable, "-m", "taskserver"]
    subprocess.run([*taskserver, "requeue", "--db", str(db)], check=True, capture_output=True)
    pin = f"{nvr.hostport}={pretty(nvr.fingerprint)}"
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1, "--nvr-fingerprint", pin).wait(60) == 0
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "done"
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


def test_an_https_nvr_signed_by_the_sites_own_ca_works_with_that_ca_and_only_with_it(procs, tmp_path):
    ca = make_ca(tmp_path, "site-ca")
    cert, key = make_server_cert(tmp_path, ca)
    nvr = start_nvr(procs, channels=1, hours=1, extra=("--https", "--cert", str(cert), str(key)))
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "lobby"]]
    db = tmp_path / "ts.db"
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db, "--max-attempts", "5")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "failed" and "TLS refused" in task["last_error"]  # the CA is nobody's but the site's

    subprocess.run([sys.executable, "-m", "taskserver", "requeue", "--db", str(db)], check=True, capture_output=True)
    # Every request (device info, channels, search, download) goes through the one session that trusts it.
    ca_file = str(tmp_path / "site-ca.pem")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1, "--nvr-ca-file", ca_file).wait(60) == 0
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "done"
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


def test_a_wrong_pin_is_refused_and_insecure_is_an_explicit_choice(procs, tmp_path):
    nvr = start_nvr(procs, channels=1, hours=1, extra=("--https",))
    rows = [[nvr.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "lobby"]]
    db = tmp_path / "ts.db"
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db)
    wrong = f"{nvr.hostport}={'ab' * 32}"
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1, "--nvr-fingerprint", wrong).wait(60) == 0
    assert "not the pinned one (fingerprint mismatch)" in api(coordinator.url, path="/api/tasks/1").json()["last_error"]
    subprocess.run([sys.executable, "-m", "taskserver", "requeue", "--db", str(db)], check=True, capture_output=True)
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1, "--nvr-insecure").wait(60) == 0
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))


def test_a_camera_the_nvr_does_not_have_fails_for_good_naming_the_cameras_it_has(procs, tmp_path, db):
    nvr = start_nvr(procs, channels=4, hours=1)
    # (A cell typed "101 201" that became the number 101201 is refused at import now; a track that
    # passes the sheet but names a channel the device lacks is caught by the worker.)
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101;1001", at(0), at(1), "lobby and channel 10"]]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db, "--max-attempts", "5")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "failed" and task["attempts"] == 1
    assert task["last_error"] == f"NVR {nvr.address} has no camera 1001; it has 101, 201, 301, 401"
    assert nvr.stats()["searches"] == 0
    assert not (tmp_path / "dl").exists() or not list((tmp_path / "dl").iterdir())


def test_a_certificate_pinned_in_the_sheet_is_accepted_and_any_other_is_refused(procs, tmp_path):
    good, other = (start_nvr(procs, channels=1, hours=1, extra=("--https",)) for _ in range(2))
    rows = [[good.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "pinned", pretty(good.fingerprint)],
            [other.address, "admin", SIM_PASSWORD, 101, at(0), at(1), "swapped", good.fingerprint]]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, [*HEADER, "tls_fingerprint"]),
                                    tmp_path / "ts.db")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 2).wait(60) == 0
    assert api(coordinator.url, path="/api/tasks/1").json()["state"] == "done"
    assert task_files(tmp_path / "dl") == good.expected(101, at(0), at(1))
    swapped = api(coordinator.url, path="/api/tasks/2").json()
    assert swapped["state"] == "failed" and swapped["attempts"] == 1
    assert "not the pinned one (fingerprint mismatch)" in swapped["last_error"]
    assert pretty(other.fingerprint) in swapped["last_error"]


def test_a_camera_that_recorded_nothing_beside_one_that_did_is_named_not_hidden_in_done(procs, tmp_path):
    nvr = start_nvr(procs, channels=2, hours=1)
    nvr.faults(silent=[2], names={"2": "Gate"})  # camera 201 was offline all night
    rows = [[nvr.address, "admin", SIM_PASSWORD, "101,201", at(0), at(1), "both"]]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db")
    assert start_client(procs, coordinator.url, tmp_path / "dl", 1).wait(60) == 0
    task = api(coordinator.url, path="/api/tasks/1").json()
    assert task["state"] == "done" and not task["nothing_found"]
    assert task_files(tmp_path / "dl") == nvr.expected(101, at(0), at(1))
    assert task["result"]["warnings"] == [f"camera 201 (Gate) has no recording in this time range on NVR {nvr.address}"]
