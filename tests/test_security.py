"""Hostile clients against the real coordinator: foreign Host names, other origins, malformed and oversized
requests, forged log lines and worker reports built to break the dashboard or the report."""
from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from .harness import HEADER, PYTHON, T, api, start_client, start_coordinator, wait_for, write_sheet

PASSWORD = "Sec-pw-4417"
TOKEN = "Sec-token-0123456789"


@pytest.fixture
def sheet(tmp_path):
    rows = [[f"10.7.0.{n}", "admin", PASSWORD, 101, T, T.replace(hour=1), f"task {n}"] for n in range(1, 4)]
    return write_sheet(tmp_path / "tasks.xlsx", rows, HEADER)


def raw(url: str, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[int, bytes]:
    """Send bytes as they are (headers requests would refuse to send); the status and body of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_part, _, content = answer.partition(b"\r\n\r\n")
    return int(head_part.split()[1]), content


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def claim(url: str, token: str | None = None) -> dict:
    return api(url, path="/api/claim?worker=w1", token=token).json()


def test_a_foreign_host_name_is_refused_so_a_rebinding_page_reads_nothing(procs, tmp_path, sheet):
    url = start_coordinator(procs, sheet, tmp_path / "ts.db", "--public-host", "coord.example.com").url
    for path in ("/api/claim?worker=w1", "/api/status", "/api/tasks/1", "/"):
        answer = requests.get(url + path, headers={"Host": "evil.example"}, timeout=10)
        assert answer.status_code == 421, path
        assert "evil.example" in answer.json()["message"] and PASSWORD not in answer.text
    assert api(url).json()["counts"]["queued"] == 3  # the refused claim leased nothing
    # Its own names still work: IP literals, localhost, and the names it was told about.
    port = urlsplit(url).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "coord.example.com", f"[::1]:{port}"):
        assert requests.get(url + "/api/status", headers={"Host": host}, timeout=10).status_code == 200, host
    assert requests.get(url + "/healthz", headers={"Host": "lb-probe.internal"}, timeout=10).json() == {"ok": True}
    # Behind a proxy that keeps its own Host, the dashboard's Origin is the public name, on its default port only.
    for origin, expected in (("https://coord.example.com", 200), ("https://coord.example.com:8443", 403),
                             (f"http://localhost:{port}", 403)):
        answer = requests.post(url + "/api/resume", headers={"Origin": origin}, timeout=10)
        assert answer.status_code == expected, origin


def test_state_changes_and_claims_from_another_origin_are_refused_with_or_without_a_token(procs, tmp_path, sheet):
    for extra in ((), ("--token", TOKEN)):
        url = start_coordinator(procs, sheet, tmp_path / f"ts{len(extra)}.db", *extra).url
        token = TOKEN if extra else None
        auth = {"Authorization": f"Bearer {TOKEN}"} if extra else {}
        page = {"Origin": "http://127.0.0.1:9"}  # another port is another origin
        for method, path in (("POST", "/api/pause"), ("POST", "/api/tasks/1/cancel"), ("POST", "/api/requeue"),
                             ("GET", "/api/claim?worker=w1")):
            for headers in (page, {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"},
                            {"Origin": "null"}):
                answer = requests.request(method, url + path, headers={**auth, **headers}, timeout=10)
                assert answer.status_code == 403, (method, path, headers)
        # An HTML form can send only these content types: no JSON call accepts them.
        for kind, body in (("text/plain", '{"nvr": "x"}'), ("application/x-www-form-urlencoded", "a=b"),
                           ("multipart/form-data; boundary=x", "--x--")):
            answer = requests.post(url + "/api/requeue", data=body, headers={**auth, "Content-Type": kind}, timeout=10)
            assert answer.status_code == 415, kind
        status = api(url, token=token).json()
        assert not status["paused"] and status["counts"]["queued"] == 3
        # The coordinator's own page, and programs, which send no Origin, go through.
        own = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
        assert requests.post(url + "/api/pause", headers={**auth, **own}, timeout=10).json()["paused"] is True
        assert requests.post(url + "/api/resume", headers=auth, json={}, timeout=10).json()["paused"] is False
        assert claim(url, token)["status"] == "task"
        assert api(url, token=token).headers["X-Content-Type-Options"] == "nosniff"  # never read as a script


def test_malformed_requests_get_a_4xx_json_answer_never_a_500(procs, tmp_path, sheet, db):
    url = start_coordinator(procs, sheet, db, "--token", TOKEN).url
    lease = claim(url, TOKEN)["lease"]["id"]

    def post(path, body):
        return requests.post(url + path, data=body if isinstance(body, str) else json.dumps(body), timeout=10,
                             headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})

    cases = [
        ("/api/tasks/1/complete", {"lease": lease, "result": {"files": 1, "bytes": 2**64}}, "result.bytes"),
        ("/api/tasks/1/complete", {"lease": lease, "result": {"files": 1e308}}, "result.files"),
        ("/api/tasks/1/complete", {"lease": lease, "result": {"files": "3"}}, "result.files"),
        ("/api/tasks/1/complete", {"lease": lease, "result": "done"}, "'result' must be an object"),
        ("/api/tasks/1/complete", {"lease": lease, "result": {"listing": [1]}}, "'result.listing' must be an object"),
        *(("/api/tasks/1/complete", {"lease": lease, "result": {"files": 1, "manifest": [entry]}}, field) for entry, field in (
            ({"path": "../../etc/shadow", "size": 1}, "result.manifest[0].path"),
            ({"path": "/etc/shadow", "size": 1}, "result.manifest[0].path"),
            ({"path": "C:/Windows/x.mp4", "size": 1}, "result.manifest[0].path"),
            ({"path": "cam\\..\\x.mp4", "size": 1}, "result.manifest[0].path"),
            ({"path": "cam/x.mp4\x1b[31m", "size": 1}, "result.manifest[0].path"),
            ({"path": "cam/x.mp4", "size": -1}, "result.manifest[0].size"),
            ({"path": "cam/x.mp4", "size": 1, "sha256": "=HYPERLINK(1)"}, "result.manifest[0].sha256"),
            ({"path": "cam/x.mp4", "size": 1, "start": "zzz"}, "result.manifest[0].start"),
            ({"path": "cam/x.mp4", "size": 1, "host": ["a"]}, "result.manifest[0].host"),
            ({"path": 7, "size": 1}, "result.manifest[0].path"))),
        ("/api/tasks/1/complete", {"lease": lease, "result": {"listing": {"recordings": 1, "bytes": -5}}},
         "result.listing.bytes"),
        ("/api/tasks/1/complete", {"lease": lease, "result": {"listing": {"recordings": 1, "bytes": 1, "cameras": {
            "101": {"recordings": "<b>9</b>", "bytes": 1}}}}}, "result.listing.cameras.101.recordings"),
        ("/api/tasks/1/complete", {"lease": lease, "result": {}, "next": "yes"}, "'next'"),
        ("/api/tasks/1/heartbeat", {"lease": lease, "progress": {"done": 2**70}}, "progress.done"),
        ("/api/tasks/1/heartbeat", {"lease": lease, "progress": {"total": "<img src=x>"}}, "progress.total"),
        ("/api/tasks/1/heartbeat", {"lease": lease, "progress": {"current": ["x"]}}, "progress.current"),
        ("/api/tasks/1/heartbeat", {"lease": lease, "progress": {"Bad Key": 1}}, "field names"),
        ("/api/tasks/1/heartbeat", {"lease": lease + "\x00"}, "'lease'"),
        ("/api/tasks/1/fail", {"lease": lease, "error": ["x"]}, "'error'"),
        ("/api/tasks/1/fail", {"lease": lease, "error": "x", "permanent": 2}, "'permanent'"),
        ("/api/tasks/1/heartbeat", "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("/api/tasks/1/heartbeat", '{"lease": ' + "[" * 40 + "]" * 40 + "}", "nested too deeply"),
        ("/api/tasks/1/heartbeat", '{"lease": "a", "progress": {"rate": 1e400}}', "too large"),
        ("/api/tasks/1/heartbeat", '{"lease": NaN}', "not valid JSON"),
        ("/api/tasks/1/heartbeat", b'{"lease": "\xff"}'.decode("latin-1"), "not valid JSON"),
        ("/api/requeue", {"nvr": ["10.7.0.1"]}, "nvr"),
        ("/api/requeue", {"nvr": "10.7.0.1\x00"}, "nvr"),
        ("/api/tasks/1/complete", {"lease": lease, "result": {"files": 1, "manifest": "x" * (5 * 1024 * 1024)}},
         "at most 4 MB"),
    ]
    for path, body, message in cases:
        answer = post(path, body)
        assert answer.status_code == 400 and message in answer.json()["message"], (path, str(body)[:80], answer.text)
    for path in ("/api/tasks/18446744073709551616", "/api/tasks/99999999999999999999999/result",
                 "/api/tasks/-1"):
        answer = api(url, path=path, token=TOKEN)
        assert answer.status_code == 404 and answer.json()["error"] == "Not Found", path
    assert post("/api/tasks/18446744073709551616/complete", {"lease": lease}).status_code == 404
    for query in ("/api/tasks/done?after=99999999999999999999", "/api/tasks?q=%00", "/api/tasks?nvr=a%00b",
                  "/api/events?after=99999999999999999999", "/api/events?after=%EF%BC%91"):
        answer = api(url, path=query, token=TOKEN)
        assert answer.status_code == 400 and answer.json()["message"], query
    # A token that is not ASCII is simply wrong: 401, not a crash in the comparison.
    for token in ("wrong-\xe9".encode("latin-1"), "wrong-\u20ac".encode()):
        status, body = raw(url, b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                b"Authorization: Bearer " + token)
        assert status == 401 and json.loads(body)["error"] == "Unauthorized"
    # Text in a progress report (often an NVR's, such as a recording's name) is cut, never refused.
    beat = post("/api/tasks/1/heartbeat", {"lease": lease, "progress": {"done": 1, "current": "x\x00" * 5000}})
    assert beat.status_code == 200
    assert api(url, path="/api/tasks/1", token=TOKEN).json()["progress"]["current"] == "x\ufffd" * 150
    # After all of that the task is still the worker's, and its real report is taken.
    files = [{"path": f"nvr/{i:06}.mp4", "size": 5} for i in range(2)]
    result = {"files": 2, "bytes": 10, "note": "done", "manifest": files}
    assert post("/api/tasks/1/complete", {"lease": lease, "result": result}).json() == {"ok": True}
    assert api(url, path="/api/tasks/1/result", token=TOKEN).json()["result"] == {"files": 2, "bytes": 10,
                                                                                   "note": "done"}
    kept = api(url, path="/api/tasks/1/files", token=TOKEN).json()["files"]
    assert [(f["path"], f["size"]) for f in kept] == [(f["path"], f["size"]) for f in files]


def test_a_body_is_read_only_with_the_token_and_only_up_to_the_limit(procs, tmp_path, sheet):
    url = start_coordinator(procs, sheet, tmp_path / "ts.db", "--token", TOKEN).url  # --max-body: 8 MiB
    head = (b"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1073741824")
    # Without the token, a body is refused from the headers alone, whatever its size: nothing of it is read.
    chunked = head.replace(b"Content-Length: 1073741824", b"Transfer-Encoding: chunked")
    for auth in (b"", b"\r\nAuthorization: Bearer wrong"):
        for request, start in ((head, b""), (chunked, b"10\r\n" + b"x" * 16 + b"\r\n")):
            status, body = raw(url, request + auth, start)  # the body is never finished: the answer comes anyway
            assert status == 401 and json.loads(body)["error"] == "Unauthorized"
    status, body = raw(url, head.replace(b"1073741824", b"2") + b"\r\nConnection: close", b"{}")
    assert status == 401
    # With the token, a declared 1 GB body is refused as too large, unread; a chunked one is cut past the limit.
    auth = f"\r\nAuthorization: Bearer {TOKEN}".encode()
    status, body = raw(url, head + auth)
    assert status == 413 and json.loads(body)["error"] == "Request Entity Too Large"
    # (what was sent beyond --max-body sat in the kernel's socket buffers, a few MB on loopback)
    assert chunked_bytes_taken(url, auth) < 32 * 1024 * 1024, "the coordinator kept reading past --max-body"
    assert api(url, path="/api/status", token=TOKEN).status_code == 200


def chunked_bytes_taken(url: str, auth: bytes) -> int:
    """Stream a chunked body of up to 64 MiB; how much went out before the coordinator cut the connection."""
    parts = urlsplit(url)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(b"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked" + auth + b"\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
    return sent


def test_untrusted_text_cannot_forge_a_line_in_the_coordinators_log(procs, tmp_path, sheet):
    coordinator = start_coordinator(procs, sheet, tmp_path / "ts.db")
    url = coordinator.url
    watch = procs.start("watch", [PYTHON, "-m", "taskserver", "watch", "--url", url], ready=r"(-- )queued")
    lease = claim(url)["lease"]["id"]
    forged = "2026-01-01 00:00:00,000 taskserver INFO task 1 done: 9 file(s)"
    error = f"NVR said: busy\n{forged}\r\x1b[2K\u2028{forged}"
    assert api(url, "POST", "/api/tasks/1/fail", json={"lease": lease, "error": error}).json()["ok"]
    refused = requests.post(url + "/api/pause%0a" + forged.replace(" ", "%20"), headers={"Origin": "http://evil"},
                            timeout=10)
    assert refused.status_code == 403

    def logged():
        text = coordinator.output()
        return text if "NVR said" in text and "refused POST" in text else None
    log = wait_for(logged, what="the failure and the refusal logged")
    lines = log.splitlines()
    assert not any(line.startswith(forged[:20]) for line in lines), log[-2000:]
    assert "NVR said: busy\\n2026-01-01" in log and "\\x1b[2K\\u2028" in log
    assert "/api/pause\\n2026-01-01" in log
    # `taskserver watch` prints the same text to a terminal: escaped too, so it cannot move the cursor either.
    shown = wait_for(lambda: (text := watch.output()) and "NVR said" in text and text, what="watch to show it")
    assert "NVR said: busy\\n2026-01-01" in shown and "\x1b" not in shown
    # The task itself keeps the text as the worker sent it (the dashboard escapes it; the report cleans it).
    assert api(url, path="/api/tasks/1").json()["last_error"] == error


def test_a_worker_host_with_a_token_no_coordinator_can_accept_exits_3(procs, tmp_path, sheet):
    url = start_coordinator(procs, sheet, tmp_path / "ts.db", "--token", TOKEN).url
    for token in ("wrong-\xe9", "wrong-\u20ac", TOKEN[:-1]):
        client = start_client(procs, url, tmp_path / "dl", 1, "--token", token)
        assert client.wait(60) == 3, client.output()[-2000:]
    assert api(url, token=TOKEN).json()["counts"]["queued"] == 3
