"""What people and workers read, in process on both stores with a clock the tests move: a cancelled lease and
who cancelled it, an honest ETA, "done, nothing found", ISO times beside epoch ones, rows that say what came of them.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from taskserver.config import Config
from taskserver.errors import TaskNotFound
from taskserver.store import TaskSpec, open_store
from taskserver.vault import Vault

from .harness import TEST_KEY, FakeClock

pytestmark = pytest.mark.fast  # the in-process layer: make test-fast, and first in make test
T0 = datetime(2026, 1, 1)
POLICY = replace(Config().policy(), lease_seconds=60, max_attempts=3, per_nvr=10, login_trials=10)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def store(db, clock):
    opened = open_store(db, POLICY, Vault([TEST_KEY], "test"), clock=clock)
    yield opened
    opened.close()


def spec(n: int, group: str = "", server: str = "nvr-a", **extra) -> TaskSpec:
    start = T0 + timedelta(hours=n)
    return TaskSpec(key=f"k{n}", server=server, username="admin", password="pw", cameras=("101",),
                    start=start.isoformat(), end=(start + timedelta(hours=1)).isoformat(), name=f"task {n}",
                    group=group, **extra)


def claim(store, worker: str = "host/w0") -> tuple[int, str]:
    answer = store.claim(worker)
    assert answer.status == "task", answer
    return answer.task["id"], answer.lease["id"]


def test_a_running_worker_reads_whether_its_lease_holds_and_who_cancelled_it(store, clock):
    store.add([spec(1), spec(2), spec(3), spec(4)])
    task, lease = claim(store)
    assert store.lease_state(task, lease) == {"current": True, "state": "leased", "reason": None, "detail": None}
    last = store.last_event()
    store.cancel(task, by="by an admin from 10.0.0.9")
    assert store.lease_state(task, lease) == {"current": False, "state": "cancelled", "reason": "cancelled",
                                              "detail": "cancelled by an admin from 10.0.0.9"}
    # The change feed and the attempt log say who cancelled, for watch, the dashboard and the worker.
    assert [(e["kind"], e["detail"]) for e in store.events(last)] == [
        ("cancelled", "cancelled by an admin from 10.0.0.9")]
    assert store.task(task)["attempt_log"][-1]["error"] == "cancelled by an admin from 10.0.0.9"

    # A lease that ran out is reported expired by the read alone, before any write has expired it ...
    second, second_lease = claim(store)
    clock.advance(61)
    before = store.last_event()
    assert store.lease_state(second, second_lease)["reason"] == "expired"
    assert store.events(before) == []  # the read wrote nothing
    # ... and once the task went to another worker, it was taken over.
    claimed = [claim(store, "host/w1") for _ in range(3)]
    assert second in [t for t, _ in claimed]
    assert store.lease_state(second, second_lease)["reason"] == "taken over"
    third, third_lease = next((t, lease) for t, lease in claimed if t != second)
    store.complete(third, third_lease, {"files": 1, "bytes": 5})
    assert store.lease_state(third, third_lease)["reason"] == "finished"
    assert store.lease_state(third, "no-such-lease")["reason"] == "unknown"
    with pytest.raises(TaskNotFound):
        store.lease_state(99, lease)


def test_the_eta_counts_only_the_time_the_run_has_worked_and_none_while_paused(store, clock):
    store.add([spec(n) for n in range(40)])
    clock.advance(3600)  # an hour after the import, the run starts
    done = []
    for _ in range(2):
        task, lease = claim(store)
        store.complete(task, lease, {"files": 1, "bytes": 1})
        done.append(task)
    early = store.progress()
    assert not early["measured"] and early["eta_seconds"] is None  # two tasks in no time: no rate yet
    for _ in range(4):
        clock.advance(30)
        task, lease = claim(store)
        clock.advance(0.5)
        store.complete(task, lease, {"files": 1, "bytes": 1})
    # 6 done in the 122 s the run has worked: about 3 a minute, not 6 spread over ten minutes (0.6).
    progress = store.progress()
    assert progress["measured"] and progress["rate_per_minute"] == pytest.approx(6 / 122 * 60, rel=0.01)
    assert progress["eta_seconds"] == pytest.approx(34 / (6 / 122), rel=0.01)
    store.set_paused(True)
    paused = store.progress()
    assert paused["paused"] and paused["eta_seconds"] is None


def test_done_with_nothing_found_is_told_apart_in_every_view(store, clock):
    store.add([spec(1, "row-a"), spec(2, "row-a"), spec(3, "row-b"), spec(4, "row-c", server="nvr-b"),
               spec(5, "row-c", server="nvr-b"), spec(6, "row-d", mode="list")])
    after = store.last_event()
    found = {}
    for _ in range(6):
        task, lease = claim(store)
        if task == 2:
            store.cancel(task)
            continue
        files = {1: 3, 3: 0, 4: 0, 5: 0, 6: 0}[task]
        store.complete(task, lease, {"files": files, "bytes": files * 10})
        found[task] = files
    views = {t: store.task(t) for t in range(1, 7)}
    assert [t for t, v in views.items() if v["nothing_found"]] == [3, 4, 5]  # a dry run downloads nothing by design
    done_events = {e["task_id"]: e["detail"] for e in store.events(after) if e["kind"] == "done"}
    assert done_events == {1: None, 3: "nothing found", 4: "nothing found", 5: "nothing found", 6: None}
    status = store.status()
    assert status["counts"]["done"] == 5 and status["nothing_found"] == 3
    assert {n["server"]: n["nothing_found"] for n in status["nvrs"]} == {"nvr-a": 1, "nvr-b": 2}
    rows, _ = store.rows()
    assert {r["grp"]: (r["state"], r["nothing_found"]) for r in rows} == {
        "row-a": ("partly cancelled", 0),  # drained, one chunk cancelled: not "in progress"
        "row-b": ("done, nothing found", 1), "row-c": ("done, nothing found", 2), "row-d": ("done", 0)}


def test_times_come_as_iso_8601_beside_the_epoch_figures(store, clock):
    clock.now = datetime(2027, 1, 15, 8, 0, 0, 250000).timestamp()
    store.add([spec(1)])
    task, lease = claim(store)
    clock.advance(30)
    store.complete(task, lease, {"files": 1, "bytes": 1})
    view = store.task(task)
    stamp = datetime.fromtimestamp(view["created"]).astimezone()
    assert datetime.fromisoformat(view["created_iso"]) == stamp and view["created_iso"].endswith("Z")
    attempt = view["attempt_log"][0]
    assert datetime.fromisoformat(attempt["ended_iso"]).timestamp() == pytest.approx(attempt["ended"], abs=0.001)
    assert datetime.fromisoformat(view["finished_iso"]).timestamp() == pytest.approx(view["finished"], abs=0.001)
    events = store.events(0)
    assert all(datetime.fromisoformat(e["at_iso"]).timestamp() == pytest.approx(e["at"], abs=0.001) for e in events)
    status = store.status()
    assert datetime.fromisoformat(status["at_iso"]).timestamp() == pytest.approx(clock.now, abs=0.001)
    assert status["workers"][0]["last_seen_iso"].endswith("Z")


def test_an_api_batch_learns_the_ids_of_its_tasks_that_were_there_already(store):
    first = store.add([spec(1), spec(2)])
    assert store.task_ids(["k2", "nope", "k1"]) == [first.ids[1], first.ids[0]]


def test_a_dry_runs_row_says_what_its_export_would_bring_chunks_added_up(store, clock):
    store.add([spec(1, "list:r2", mode="list"), spec(2, "list:r2", mode="list"), spec(3, "list:r2", mode="list"),
               spec(4, "r2")])
    listings = {1: {"recordings": 2, "bytes": 300, "cameras": {"101": {"recordings": 2, "bytes": 300}}},
                2: {"recordings": 1, "bytes": 50, "cameras": {"101": {"recordings": 1, "bytes": 50}}}}
    for _ in range(2):
        task, lease = claim(store)
        store.complete(task, lease, {"files": 0, "bytes": 0, "listing": listings[task]})
    rows = {r["grp"]: r for r in store.rows()[0]}
    # While a chunk is still to list, the figure is a partial one and the row is in progress.
    assert (rows["list:r2"]["state"], rows["list:r2"]["dry_run"], rows["list:r2"]["would_export"]) == (
        "in progress", True, {"recordings": 3, "bytes": 350})
    assert (rows["r2"]["dry_run"], rows["r2"]["would_export"]) == (False, None)  # the real export of the row
    task, lease = claim(store)
    store.complete(task, lease, {"files": 0, "listing": {"recordings": 0, "bytes": 0, "cameras": {}}})
    row = next(r for r in store.rows()[0] if r["grp"] == "list:r2")
    # A dry run found nothing on purpose: it is done, not "done, nothing found".
    assert (row["state"], row["would_export"]) == ("done", {"recordings": 3, "bytes": 350})
    assert store.task(1)["result"]["listing"] == listings[1]


def test_an_nvr_row_says_why_its_tasks_failed_for_as_long_as_they_stay_failed(store, clock):
    store.add([spec(1), spec(2), spec(3, server="nvr-b")])
    task, lease = claim(store)
    store.fail(task, lease, "NVR nvr-a has no camera 101201; it has 101, 201", permanent=True)
    task, lease = claim(store)
    clock.advance(5)
    store.complete(task, lease, {"files": 1, "bytes": 10})  # the NVR answers well: its own error clears ...
    rows = {n["server"]: n for n in store.status()["nvrs"]}
    # ... but the row still says why one of its tasks failed, and a healthy NVR says nothing.
    assert rows["nvr-a"]["last_error"] == "NVR nvr-a has no camera 101201; it has 101, 201"
    assert rows["nvr-b"]["last_error"] is None
    assert store.requeue([1]) == [1]
    assert {n["server"]: n["last_error"] for n in store.status()["nvrs"]}["nvr-a"] is None
