"""A web page the operator happens to open attacks the coordinator from the same machine, in real Chromium.

The page comes from another origin on 127.0.0.1 (another port) and tries every way a page has to reach
the coordinator: form posts, fetch with and without no-cors, image and script tags on the claim URL.
A DNS-rebinding page would reach it under a name of its own. None of it may change state or read a
claim. Then hostile values reported by a worker must show on the dashboard as text, running nothing.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from .harness import HEADER, T, api, start_coordinator, wait_for, write_sheet

pytestmark = pytest.mark.slow
PASSWORD = "Page-pw-5521"
XSS = "<img src=x onerror=\"window.__xss=(window.__xss||[]).concat('{}')\">"

ATTACK = """<!doctype html><html><body>
<iframe id="framed" src="DASHBOARD"></iframe><iframe name="f1"></iframe><iframe name="f2"></iframe><iframe name="f3"></iframe><iframe name="f4"></iframe>
<form id="f1" method="POST" action="C/api/pause" target="f1" enctype="text/plain"><input name='{"a":"' value='"}'></form>
<form id="f2" method="POST" action="C/api/tasks/1/cancel" target="f2"><input name="x" value="1"></form>
<form id="f3" method="POST" action="C/api/requeue" target="f3" enctype="multipart/form-data"></form>
<form id="f4" method="GET" action="C/api/claim" target="f4"><input name="worker" value="form"></form>
<script>
const C = "C";
function settled(name, promise, results) {
  return promise.then((v) => { results[name] = String(v); }, (e) => { results[name] = "error: " + e; });
}
function loaded(make) { return new Promise((done) => make(() => done("settled"))); }
async function attack() {
  const results = {};
  const post = (path, init) => fetch(C + path, {method: "POST", ...init});
  const tries = [
    settled("no-cors pause", post("/api/pause", {mode: "no-cors"}).then((r) => r.type), results),
    settled("no-cors cancel, text body", post("/api/tasks/2/cancel", {mode: "no-cors", body: "{}",
      headers: {"Content-Type": "text/plain"}}).then((r) => r.type), results),
    settled("no-cors requeue, form body", post("/api/requeue", {mode: "no-cors",
      body: new URLSearchParams({nvr: "x"})}).then((r) => r.type), results),
    settled("cors pause, JSON", post("/api/pause", {headers: {"Content-Type": "application/json"}, body: "{}"})
      .then((r) => r.status), results),
    settled("cors claim, read", fetch(C + "/api/claim?worker=fetch").then((r) => r.text()), results),
    settled("no-cors claim", fetch(C + "/api/claim?worker=nocors", {mode: "no-cors"}).then((r) => r.type), results),
    settled("image claim", loaded((done) => { const i = new Image(); i.onload = i.onerror = done;
      i.src = C + "/api/claim?worker=img"; }), results),
    settled("script claim", loaded((done) => { const s = document.createElement("script");
      s.onload = s.onerror = done; s.src = C + "/api/claim?worker=script"; document.body.append(s); }), results),
  ];
  for (const id of ["f1", "f2", "f3", "f4"]) {
    const frame = document.querySelector(`iframe[name=${id}]`);
    tries.push(settled("form " + id, new Promise((done) => { frame.onload = () => done("loaded"); }), results));
    document.getElementById(id).submit();
  }
  await Promise.all(tries);
  return results;
}
</script></body></html>"""


def serve_page(html: str) -> tuple[ThreadingHTTPServer, str]:
    """The attacker's site: one page, on another port of 127.0.0.1."""
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


def test_a_hostile_page_can_neither_steer_the_run_nor_read_a_claim(procs, tmp_path, browser):
    rows = [[f"10.8.0.{n}", "admin", PASSWORD, 101, T, T.replace(hour=1), f"task {n}"] for n in range(1, 4)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db")
    url = coordinator.url  # loopback, no token: the default a page can reach
    site, page_url = serve_page(ATTACK.replace("C/api", f"{url}/api").replace('"C"', json.dumps(url))
                                .replace("DASHBOARD", url + "/"))
    try:
        page = browser.new_page()
        page.goto(page_url)
        results = page.evaluate("attack()")
    finally:
        site.shutdown()
        framed = page.frame_locator("#framed")
        # The dashboard refuses to be framed by another site (a framing page could trick clicks on Pause).
        assert framed.locator("#pause").count() == 0
    assert len(results) == 12, results
    assert all(PASSWORD not in value for value in results.values()), results
    assert results["cors claim, read"].startswith("error: TypeError")  # the page cannot read an answer
    status = api(url).json()
    assert not status["paused"] and status["counts"]["queued"] == 3, status  # nothing paused, cancelled, leased
    assert status["workers"] == []  # no claim reached the store, not even one answered "wait"
    # Each request that reached the coordinator was refused and logged; the CORS ones never left the browser.
    refused = [line for line in coordinator.output().splitlines() if "refused" in line]
    assert len(refused) >= 9, "\n".join(refused)
    assert {"POST /api/pause", "POST /api/tasks/1/cancel", "POST /api/tasks/2/cancel", "POST /api/requeue",
            "GET /api/claim"} <= {" ".join(line.split("refused ")[1].split()[:2]) for line in refused}

    # A DNS-rebinding page reaches the coordinator under its own name: refused before anything is read.
    rebound = requests.get(url + "/api/claim?worker=rebind", headers={"Host": "evil.example"}, timeout=10)
    assert rebound.status_code == 421 and PASSWORD not in rebound.text
    assert api(url).json()["counts"]["queued"] == 3

    # The coordinator's own page still steers it.
    own = browser.new_page()
    own.goto(url)
    own.wait_for_selector("[data-state=queued]")
    own.click("#pause")
    wait_for(lambda: api(url).json()["paused"], what="the dashboard's own Pause to work")


def test_hostile_values_reported_by_a_worker_show_as_text_and_run_nothing(procs, tmp_path, browser):
    rows = [["10.8.1.1", "admin", PASSWORD, 101, T, T.replace(hour=h), XSS.format(f"name{h}")] for h in (1, 2, 3)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), tmp_path / "ts.db",
                                    "--max-attempts", "1")
    url = coordinator.url

    def claim() -> tuple[int, str]:
        answer = api(url, path="/api/claim?worker=host-1/w0").json()
        return answer["task"]["id"], answer["lease"]["id"]

    def report(task_id: int, kind: str, body: dict):
        return api(url, "POST", f"/api/tasks/{task_id}/{kind}", json=body)

    running, lease = claim()
    # Values of the wrong type are refused at the API, with the field named.
    for progress in ({"done": XSS.format("done")}, {"total": [XSS]}, {"current": {"x": XSS}}):
        refused = report(running, "heartbeat", {"lease": lease, "progress": progress})
        assert refused.status_code == 400 and "progress." in refused.json()["message"]
    # Strings where strings are allowed reach the page, and must stay text there.
    assert report(running, "heartbeat", {"lease": lease, "progress": {
        "done": 1, "total": 3, "current": XSS.format("current")}}).json()["ok"]
    done, done_lease = claim()
    for result in ({"files": XSS.format("files"), "bytes": 1}, {"files": 1, "bytes": "1e9"}):
        assert report(done, "complete", {"lease": done_lease, "result": result}).status_code == 400
    assert report(done, "complete", {"lease": done_lease, "result": {
        "files": 2, "bytes": 2_000_000, "note": f"<script>window.__xss=['note']</script>{XSS.format('note')}"}}).json()
    failed, failed_lease = claim()
    assert report(failed, "fail", {"lease": failed_lease, "error": XSS.format("error"),
                                   "device": None}).json()["state"] == "failed"

    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(url)
    page.wait_for_selector(f"tr.task[data-id='{failed}']")
    for task_id in (running, done, failed):
        page.click(f"tr.task[data-id='{task_id}'] td:nth-child(1)")
        page.wait_for_selector(f"#detail >> text=task {task_id}:")
        text = page.inner_text("#detail")
        assert XSS.format(f"name{task_id}") in text, text
        if task_id == done:
            assert "2 files, 2.0 MB" in text
    page.click(f"tr.task[data-id='{running}'] td:nth-child(1)")
    page.wait_for_selector("#detail >> text=now <img")
    assert XSS.format("current") in page.inner_text("#detail")
    assert XSS.format("error") in page.inner_text("#tasks")
    assert page.inner_text(f"tr.task[data-id='{running}'] td.progress") == "1/3"
    assert page.evaluate("window.__xss") is None and dialogs == []
    assert page.locator("#tasks img, #detail img, #tasks script, #detail script").count() == 0

    # Values stored before these checks existed (written straight into the database here) are escaped
    # where the page renders them, numbers included.
    with sqlite3.connect(tmp_path / "ts.db") as db:
        db.execute("UPDATE tasks SET progress = ?, result = ? WHERE id = ?", (
            json.dumps({"done": XSS.format("old-done"), "total": XSS.format("old-total")}),
            json.dumps({"files": XSS.format("old-files"), "bytes": XSS.format("old-bytes")}), running))
    page.reload()
    page.wait_for_selector(f"tr.task[data-id='{running}']")
    page.click(f"tr.task[data-id='{running}'] td:nth-child(1)")
    page.wait_for_selector(f"#detail >> text=task {running}:")
    assert page.inner_text(f"tr.task[data-id='{running}'] td.progress") == "0/0"
    assert "0 files, 0.0 MB" in page.inner_text("#detail")
    assert page.evaluate("window.__xss") is None and dialogs == []
