"""Nobody watches the dashboard at night: webhooks tell of failures, refused passwords, full hosts and the end."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .harness import HEADER, api, at, start_coordinator, status, wait_for, write_sheet


class Receiver:
    """A local webhook endpoint that records every POST it gets, by path."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append((self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def json(self, path: str) -> list[dict]:
        return [json.loads(body) for p, _, body in self.received if p == path]

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    hook = Receiver()
    yield hook
    hook.close()


def test_webhooks_tell_of_failures_refused_passwords_hosts_and_the_drained_run_once(procs, tmp_path, db, receiver):
    rows = [["nvr-a", "admin", "pw", 101, at(0), at(1), "lobby"],
            ["nvr-b", "viewer", "pw", 101, at(0), at(1), "gate"],
            ["nvr-c", "admin", "pw", 101, at(0), at(1), "yard"]]
    targets = f"{receiver.url}/json,slack:{receiver.url}/slack,ntfy:{receiver.url}/ntfy,teams:{receiver.url}/teams"
    sheet = write_sheet(tmp_path / "t.xlsx", rows, HEADER)
    coordinators = [start_coordinator(procs, sheet, db, "--notify", targets)]
    if not str(db).endswith(".db"):  # PostgreSQL: a second coordinator on the same database sends nothing twice
        coordinators.append(start_coordinator(procs, None, db, "--notify", targets))
    url = coordinators[0].url

    def claim(name):
        return api(url, path=f"/api/claim?worker=host1/{name}").json()

    tasks = {t["task"]["name"]: t for t in (claim("w0"), claim("w1"), claim("w2"))}
    api(url, "POST", f"/api/tasks/{tasks['lobby']['task']['id']}/fail",
        json={"lease": tasks["lobby"]["lease"]["id"], "error": "NVR has no camera 101 <!channel>", "permanent": True})
    api(url, "POST", f"/api/tasks/{tasks['gate']['task']['id']}/fail",
        json={"lease": tasks["gate"]["lease"]["id"], "error": "NVR nvr-b refused the password of user 'viewer'",
              "device": "auth"})
    # A host's processes say the same at once: one notice per host. A host stopping at the drain is no news.
    for worker in ("host2/w0", "host2/w1"):
        api(url, "POST", "/api/workers/state", json={"worker": worker, "state": "full", "detail": "120 MB free"})
    for worker in ("host1/w0", "host1/w1", "host1/w2"):
        api(url, "POST", "/api/workers/state", json={"worker": worker, "state": "stopped", "detail": "queue drained"})
    api(url, "POST", "/api/workers/state", json={"worker": "host3/w0", "state": "stopped", "detail": "host stopping"})
    api(url, "POST", f"/api/tasks/{tasks['yard']['task']['id']}/complete",
        json={"lease": tasks["yard"]["lease"]["id"], "result": {"files": 3, "bytes": 3000}})
    api(url, "POST", f"/api/tasks/{tasks['gate']['task']['id']}/cancel")  # nobody will fix that password tonight

    notices = wait_for(lambda: (n := receiver.json("/json")) and n[-1]["event"] == "drained" and n,
                       what="the drained notice")
    assert [n["event"] for n in notices] == ["failed", "refused", "worker full", "worker stopped", "drained"]
    assert notices[0]["task"]["name"] == "lobby" and "no camera 101" in notices[0]["text"]
    assert notices[1]["task"]["username"] == "viewer" and "pw" not in json.dumps(notices)
    assert notices[2]["host"] == "host2" and notices[2]["workers"] == ["host2/w0", "host2/w1"]
    assert notices[2]["text"] == "worker host full: host2 (w0, w1): 120 MB free"
    assert notices[3]["text"] == "worker host stopped: host3 (w0): host stopping"
    drained = notices[4]
    assert drained["counts"] == {"queued": 0, "leased": 0, "waiting": 0, "done": 1, "failed": 1, "cancelled": 1}
    assert (drained["files"], drained["bytes"]) == (3, 3000)
    assert [(t["name"], t["last_error"]) for t in drained["failed"]] == [("lobby", "NVR has no camera 101 <!channel>")]

    # Targets are posted to one after the other: wait for the last one to have the drained notice too.
    wait_for(lambda: sum(p == "/teams" for p, _, _ in receiver.received) == 5, what="every target's notices")
    slack = [json.loads(body) for p, _, body in receiver.received if p == "/slack"]
    assert len(slack) == 5 and "&lt;!channel&gt;" in slack[0]["text"] and "<!channel>" not in slack[0]["text"]
    # Teams Workflows take Adaptive Cards only.
    teams = [json.loads(body) for p, _, body in receiver.received if p == "/teams"]
    assert len(teams) == 5 and teams[0]["type"] == "message"
    card = teams[0]["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive" and card["content"]["type"] == "AdaptiveCard"
    assert card["content"]["body"][0]["text"].startswith("taskserver: task failed for good: task ")
    ntfy = [(headers, body.decode()) for p, headers, body in receiver.received if p == "/ntfy"]
    assert len(ntfy) == 5 and ntfy[4][0]["Title"] == "taskserver: drained" and "1 done" in ntfy[4][1]
    assert "queue drained: 1 done, 1 failed, 1 cancelled" in status(url)["last_drain"]["text"]
    assert "queue drained" in "".join(c.output() for c in coordinators)
