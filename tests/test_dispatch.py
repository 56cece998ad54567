"""Dispatch at steady state, on both stores: a completion carrying the next claim, and opt-in batches.

The contract is the single claim's: leases, fencing, caps and events are the same
whichever way a task is handed out. PostgreSQL does a completion and the next claim
in two round trips to the database (counted at the protocol level).
"""
from __future__ import annotations

import tempfile

import pytest

from taskclient.client import Coordinator
from taskserver.errors import LeaseLost, TaskNotFound
from taskserver.store.postgres import PostgresStore

from . import test_store as contract
from .harness import HEADER, T, api, start_coordinator, write_sheet
from .test_store import kinds, lease, policy, spec

# The contract suite's fixtures: each test runs on SQLite and on PostgreSQL, with a clock moved by hand.
clock, make_store, store = contract.clock, contract.make_store, contract.store


@pytest.mark.fast
def test_a_completion_carries_the_next_claim_with_its_own_lease_and_events(store):
    store.add([spec(1), spec(2, "nvr-b"), spec(3)])
    first, lease_id = lease(store, "h/w0")
    after = store.last_event()
    following = store.complete(first["id"], lease_id, {"files": 2, "bytes": 20}, next_for="h/w0")
    assert following.status == "task" and following.task["attempt"] == 1 and following.task["password"] == "pw"
    assert following.lease["id"] != lease_id
    assert kinds(store, after) == [("done", first["id"], "done"), ("leased", following.task["id"], "leased")]
    assert {w["name"]: w["task"] for w in store.status()["workers"]} == {"h/w0": following.task["id"]}
    with pytest.raises(LeaseLost):  # a stale completion leases nothing
        store.complete(following.task["id"], lease_id, {}, next_for="h/w0")
    assert store.status()["counts"]["leased"] == 1


@pytest.mark.fast
def test_a_completion_sees_a_lease_that_ran_out_elsewhere_before_it_claims(make_store, clock):
    store = make_store(policy(per_nvr=1, lease_seconds=60, max_attempts=3))
    store.add([spec(1), spec(2, "nvr-b")])
    gone, _ = lease(store, "gone")
    mine, lease_id = lease(store, "mine")
    clock.advance(61)
    with pytest.raises(LeaseLost):  # its own lease ran out too: refused, as a lone completion would be
        store.complete(mine["id"], lease_id, {}, next_for="mine")
    following = store.claim("mine")
    assert following.task["id"] in (gone["id"], mine["id"]) and following.task["attempt"] == 2
    assert ("expired", gone["id"], "queued") in kinds(store)


@pytest.mark.fast
def test_a_completion_frees_its_nvrs_place_for_the_next_claim_and_no_more(make_store):
    store = make_store(policy(per_nvr=1))
    store.add([spec(1), spec(2), spec(3)])
    task, lease_id = lease(store, "w1")
    assert store.claim("w2").status == "wait"  # nvr-a runs its cap
    following = store.complete(task["id"], lease_id, {}, next_for="w1")
    assert following.status == "task" and store.claim("w2").status == "wait"


@pytest.mark.fast
def test_postgresql_completes_and_claims_in_two_round_trips_with_the_same_events(make_store, request):
    store = make_store(policy(per_nvr=100))
    if not isinstance(store, PostgresStore):
        pytest.skip("round trips to a database server: PostgreSQL only")
    store.add([spec(n, f"nvr-{n % 3}") for n in range(1, 10)])
    claim = store.claim("w")
    first = store.last_event()
    conn = store._db().conn
    done = []
    with tempfile.TemporaryFile() as trace:
        conn.pgconn.trace(trace.fileno())
        for _ in range(4):
            done.append(claim.task["id"])
            claim = store.complete(claim.task["id"], claim.lease["id"], {}, next_for="w")
            assert claim.status == "task"
        conn.pgconn.untrace()
        trace.seek(0)
        directions = [line.split(b"\t")[1] for line in trace.read().splitlines() if line.count(b"\t") >= 2]
    round_trips = sum(1 for a, b in zip(directions, directions[1:], strict=False) if a == b"F" and b == b"B")
    assert round_trips <= 2 * 4
    # The feed says what the general path says: each completion, then the next lease with its attempt.
    events = [(e["kind"], e["task_id"], e["state"], e["worker"], e["detail"]) for e in store.events(first)]
    leased = store.tasks(state="leased")[0]
    expected = []
    for number, task_id in enumerate(done):
        following = done[number + 1] if number + 1 < len(done) else leased[0]["id"]
        expected += [("done", task_id, "done", "w", None), ("leased", following, "leased", "w", "attempt 1")]
    assert events == expected


@pytest.mark.fast
def test_postgresql_a_head_gone_before_its_lease_keeps_the_completion_once_and_claims_again(make_store, monkeypatch):
    """Between the two round trips an admin may cancel the head the first one found: the completion
    is committed alone, and the general path records nothing twice and leases the next task."""
    store = make_store(policy(per_nvr=100))
    if not isinstance(store, PostgresStore):
        pytest.skip("the two-round-trip path: PostgreSQL only")
    store.add([spec(n, f"nvr-{n % 2}") for n in range(1, 6)])
    task, lease_id = lease(store)
    first = store.last_event()
    general_head = store._head_sql
    gone = iter([True])  # only the fast path's first lease finds its head gone

    def head_sql(columns, server, now):
        sql, params = general_head(columns, server, now)
        return (sql.replace(" WHERE ", " WHERE false AND ", 1) if next(gone, False) else sql), params

    monkeypatch.setattr(store, "_head_sql", head_sql)
    following = store.complete(task["id"], lease_id, {"files": 2, "bytes": 20}, next_for="w")
    assert following.status == "task" and following.task["id"] != task["id"]
    done = [(k, t) for k, t, _ in kinds(store, first) if k == "done"]
    assert done == [("done", task["id"])]  # one completion event
    assert store.task(task["id"])["state"] == "done"
    nvr = next(n for n in store.status()["nvrs"] if n["server"] == task["server"])
    assert (nvr["files"], nvr["bytes"]) == (2, 20)  # its figures counted once
    assert [a["outcome"] for a in store.task(task["id"])["attempt_log"]] == ["done"]


# --- opt-in batches ------------------------------------------------------------------------
@pytest.mark.fast
def test_a_batch_leases_each_task_with_its_own_lease_within_the_nvr_caps(make_store, clock):
    store = make_store(policy(per_nvr=2, lease_seconds=60))
    store.add([spec(n, f"nvr-{n % 3}") for n in range(1, 13)])
    outcomes, claims = store.exchange("w", [], 10)
    assert outcomes == [] and len(claims) == 6 and all(c.status == "task" for c in claims)
    assert sorted(c.task["server"] for c in claims) == ["nvr-0", "nvr-0", "nvr-1", "nvr-1", "nvr-2", "nvr-2"]
    assert len({c.lease["id"] for c in claims}) == 6
    assert store.claim("other").status == "wait"  # every NVR runs its cap
    clock.advance(40)
    assert store.heartbeat(claims[0].task["id"], claims[0].lease["id"], None) == 60
    clock.advance(30)  # the others ran out: each lease is fenced on its own
    stale = [(c.task["id"], c.lease["id"], {}) for c in claims]
    outcomes, again = store.exchange("w", stale + [(999, "nope", {})], 1)
    assert outcomes[0] is None and all(isinstance(o, LeaseLost) for o in outcomes[1:6])
    assert isinstance(outcomes[6], TaskNotFound)
    assert store.task(claims[0].task["id"])["state"] == "done" and again[0].task["attempt"] in (1, 2)


@pytest.mark.fast
def test_batches_drain_the_queue_and_say_so(store):
    store.add([spec(n) for n in range(1, 4)])
    _, claims = store.exchange("w", [], 2)
    assert len(claims) == 2
    _, waiting = store.exchange("other", [], 5)
    assert [c.status for c in waiting] == ["wait"]
    done = [(c.task["id"], c.lease["id"], {"files": 1, "bytes": 5}) for c in claims]
    outcomes, last = store.exchange("w", done, 5)
    assert outcomes == [None, None] and [c.status for c in last] == ["task"]
    outcomes, end = store.exchange("w", [(last[0].task["id"], last[0].lease["id"], {})], 5)
    assert outcomes == [None] and [c.status for c in end] == ["drained"]
    assert store.status()["counts"]["done"] == 3


@pytest.mark.slow
def test_a_worker_may_run_short_tasks_in_batches_over_http(procs, tmp_path, db):
    rows = [[f"nvr-{h % 4}", "admin", "pw", "101", T.replace(hour=h), T.replace(hour=h, minute=30)] for h in range(20)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), db, "--per-nvr", "3")
    client = Coordinator([coordinator.url], "host/w0")
    seen, answer = [], client.exchange([], 8)
    while answer["status"] == "task":
        assert len(answer["tasks"]) <= 8 and all(t["lease"]["id"] for t in answer["tasks"])
        seen += [t["task"]["id"] for t in answer["tasks"]]
        done = [{"id": t["task"]["id"], "lease": t["lease"]["id"], "result": {"files": 0, "bytes": 0}}
                for t in answer["tasks"]]
        answer = client.exchange(done, 8)
        assert all(d["ok"] for d in answer["done"])
    assert answer["status"] == "drained" and sorted(seen) == list(range(1, 21))
    refused = api(coordinator.url, "POST", "/api/batch", json={"worker": "w", "claim": 1000})
    assert refused.status_code == 400 and "'claim'" in refused.json()["message"]
