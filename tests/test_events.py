"""Following a run as it happens: the event stream, `taskserver watch`, and streams never starving workers."""
from __future__ import annotations

import json
import threading

import requests

from .harness import HEADER, PYTHON, api, at, start_coordinator, wait_for, write_sheet


def rows(n: int) -> list[list]:
    return [[f"nvr-{i}", "admin", "Ev3nt-secret", 101, at(0), at(1), f"task {i}"] for i in range(n)]


class Stream:
    """An open /api/events stream read in a background thread (it ends when the coordinator is stopped)."""

    def __init__(self, url: str, last: str | None = None):
        headers = {"Last-Event-ID": last} if last else {}
        self.response = requests.get(f"{url}/api/events", stream=True, timeout=30, headers=headers)
        self.events: list[dict] = []
        self.summaries: list[dict] = []
        self.raw: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind = None
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                self.raw.append(line)
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    (self.events if kind == "task" else self.summaries).append(json.loads(line[6:]))
        except (requests.RequestException, AttributeError):
            pass



def test_every_change_is_streamed_and_a_reconnect_resumes_where_it_left_off(procs, tmp_path, db):
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows(2), HEADER), db).url
    stream = Stream(url)
    wait_for(lambda: stream.summaries, what="the first summary")
    assert stream.summaries[0]["counts"]["queued"] == 2

    first = api(url, path="/api/claim?worker=host/w0").json()
    api(url, "POST", "/api/tasks/1/complete", json={"lease": first["lease"]["id"], "result": {"files": 1}})
    wait_for(lambda: len(stream.events) >= 2, what="two task events")
    assert [(e["task_id"], e["kind"], e["state"], e["worker"]) for e in stream.events] == [
        (1, "leased", "leased", "host/w0"), (1, "done", "done", "host/w0")]
    last = next(line[4:] for line in reversed(stream.raw) if line.startswith("id: "))

    second = api(url, path="/api/claim?worker=host/w1").json()
    api(url, "POST", "/api/tasks/2/fail", json={"lease": second["lease"]["id"], "error": "NVR busy"})
    resumed = Stream(url, last)
    wait_for(lambda: len(resumed.events) >= 2, what="the events missed while away")
    assert [(e["task_id"], e["kind"], e["state"]) for e in resumed.events] == [
        (2, "leased", "leased"), (2, "retry", "waiting")]
    assert "Ev3nt-secret" not in "\n".join(stream.raw + resumed.raw)


def test_twenty_open_streams_leave_workers_answered_promptly(procs, tmp_path, db):
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows(30), HEADER), db,
                            "--streams", "20", "--threads", "4").url
    streams = [Stream(url) for _ in range(20)]
    wait_for(lambda: all(s.summaries for s in streams), what="20 streams open")
    assert requests.get(f"{url}/api/events", timeout=10).status_code == 503  # the 21st waits its turn

    for worker in range(30):  # every stream holds a thread of its own: the workers' threads stay free
        answer = api(url, path=f"/api/claim?worker=w{worker}").json()
        done = api(url, "POST", f"/api/tasks/{answer['task']['id']}/complete", json={"lease": answer["lease"]["id"]})
        assert done.json() == {"ok": True}
    wait_for(lambda: all(len(s.events) == 60 for s in streams), what="every stream to see all 60 changes")


def test_taskserver_watch_prints_changes_as_they_happen(procs, tmp_path, db):
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows(1), HEADER), db,
                            "--token", "tok").url
    watch = procs.start("watch", [PYTHON, "-m", "taskserver", "watch", "--url", url], env={"TASKSERVER_TOKEN": "tok"})
    wait_for(lambda: "-- queued 1; 0 files, 0 B; 0 worker(s)" in watch.output(), what="watch to connect")
    answer = api(url, path="/api/claim?worker=site-a/w3", token="tok").json()
    api(url, "POST", "/api/tasks/1/complete", token="tok", json={"lease": answer["lease"]["id"]})
    wait_for(lambda: "task 1 done by site-a/w3" in watch.output(), what="watch to print the completion")
    assert "task 1 leased by site-a/w3: attempt 1" in watch.output()


def test_the_feed_keeps_only_the_newest_changes(procs, tmp_path, db):
    url = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows(110), HEADER), db,
                            "--events-kept", "20", "--per-nvr", "1").url
    answer = api(url, path="/api/claim?worker=host/w0").json()
    while answer["status"] == "task":  # 110 tasks, each leased and done: 221 changes with the import
        answer = api(url, "POST", f"/api/tasks/{answer['task']['id']}/complete",
                     json={"lease": answer["lease"]["id"], "next": True, "worker": "host/w0"}).json()["next"]
    assert answer["status"] == "drained"

    from_start = Stream(url, "0")
    wait_for(lambda: from_start.summaries, what="a summary")
    ids = [int(line[4:]) for line in from_start.raw if line.startswith("id: ")]
    # Pruned now and then, not at every write: the oldest changes are gone, the newest all there.
    assert ids == list(range(ids[0], 222)) and 20 < 222 - ids[0] < 100
    assert from_start.events[-1]["kind"] == "done" and from_start.events[-1]["task_id"] == 110
