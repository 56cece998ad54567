"""Group commit on SQLite: concurrent changes share a commit, and none is answered before it is on disk.

A coordinator's threads queue for the one write connection; the changes of those
queued together are committed with one fsync. These tests hold the queue shut,
let several workers report at once, and look at the database file from an
independent connection the moment each report returns.
"""
from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from taskserver.config import Config
from taskserver.store import TaskSpec
from taskserver.store.sqlite import SQLiteStore
from taskserver.vault import Vault

from .harness import TEST_KEY, FakeClock, wait_for

pytestmark = pytest.mark.fast  # in process

T0 = datetime(2026, 1, 1)


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "ts.db", replace(Config().policy(), per_nvr=100, login_trials=100), Vault([TEST_KEY], "test"), FakeClock())
    store.add([TaskSpec(key=f"k{n}", server="nvr-a", username="admin", password="pw", cameras=("101",),
                        start=T0.isoformat(), end=(T0 + timedelta(hours=1)).isoformat()) for n in range(1, 9)])
    yield store
    store.close()


def state_on_disk(store, task_id: int) -> str:
    """The task's state as another process would read it: committed data only."""
    with sqlite3.connect(store.path) as other:
        return other.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]


def at_once(store, calls) -> list:
    """Run each call in a thread of its own, all queued behind the write lock, then let them go together.

    Each thread records, right after its call returns, what an independent connection sees.
    """
    outcomes: list = [None] * len(calls)

    def run(i, call):
        try:
            outcomes[i] = ("ok", call())
        except Exception as exc:
            outcomes[i] = ("error", exc)

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    with store._group.lock:
        for thread in threads:
            thread.start()
        wait_for(lambda: store._group.waiting == len(calls), what="every report to queue for the write lock")
    for thread in threads:
        thread.join(30)
    return outcomes


def test_workers_reporting_at_once_share_one_commit_and_each_answer_comes_after_it(store):
    leases = [store.claim(f"w{n}") for n in range(6)]
    assert all(c.status == "task" for c in leases)
    commits = store._group.commits

    def report(claim):
        def call():
            store.complete(claim.task["id"], claim.lease["id"], {"files": 1, "bytes": 1})
            return state_on_disk(store, claim.task["id"])  # what the worker may rely on once answered
        return call

    outcomes = at_once(store, [report(c) for c in leases])
    assert outcomes == [("ok", "done")] * 6
    assert store._group.commits == commits + 1  # six completions, one commit (one fsync)
    assert store._db().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: a commit waits for the disk


def test_a_change_that_fails_is_undone_alone_and_the_others_of_its_batch_are_kept(store):
    first, second = store.claim("w1"), store.claim("w2")

    def broken():
        with store._write() as db:
            db.execute("UPDATE tasks SET name = 'half-written' WHERE id = 3")
            raise RuntimeError("a bug halfway through a change")

    outcomes = at_once(store, [lambda: store.complete(first.task["id"], first.lease["id"], {}), broken,
                               lambda: store.complete(second.task["id"], second.lease["id"], {})])
    assert outcomes[0] == ("ok", None) and outcomes[2] == ("ok", None)
    assert outcomes[1][0] == "error" and "halfway" in str(outcomes[1][1])
    assert state_on_disk(store, first.task["id"]) == state_on_disk(store, second.task["id"]) == "done"
    assert store.task(3)["name"] == ""


def test_when_a_batch_cannot_be_committed_nobody_in_it_is_told_it_succeeded(store):
    claim = store.claim("w1")

    def violates_at_commit():
        with store._write() as db:  # a deferred constraint: this batch's COMMIT itself fails
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.execute("INSERT INTO attempts (task_id, lease_id, worker, started) VALUES (999, 'x', 'w', 0)")

    outcomes = at_once(store, [lambda: store.complete(claim.task["id"], claim.lease["id"], {}), violates_at_commit])
    assert [kind for kind, _ in outcomes] == ["error", "error"]
    assert "commit failed" in str(outcomes[0][1])
    assert state_on_disk(store, claim.task["id"]) == "leased"  # the worker was refused, and nothing was kept
    store.complete(claim.task["id"], claim.lease["id"], {})  # its retry succeeds
    assert state_on_disk(store, claim.task["id"]) == "done"


def test_a_write_inside_a_write_on_one_thread_is_refused_rather_than_deadlocking(store):
    with store._write():
        with pytest.raises(RuntimeError, match="inside another"):
            with store._write():
                pass
