"""The store's contract, in process, on SQLite and PostgreSQL, with a clock the tests move.

Every rule of the protocol lives in the store: leases, fencing, attempts, backoff,
NVR rests and give-ups, refused passwords, steering. These tests drive it directly,
so they run in seconds; the end-to-end stories check the same rules through real
processes.
"""
from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from taskserver.config import Config
from taskserver.errors import ConfigError, Conflict, LeaseLost, TaskNotFound
from taskserver.store import TRANSITIONS, Policy, State, TaskSpec
from taskserver.store.postgres import PostgresStore
from taskserver.store.sql import HELD
from taskserver.store.sqlite import SQLiteStore
from taskserver.vault import Vault, load_vault, new_key

from .harness import TEST_KEY, FakeClock, postgres_missing, postgres_schema

pytestmark = pytest.mark.fast  # the in-process layer: make test-fast, and first in make test

T0 = datetime(2026, 1, 1)
POLICY = replace(Config().policy(), max_attempts=3, events_kept=1000)


def policy(**changes) -> Policy:
    return replace(POLICY, **changes)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request, tmp_path, clock):
    """Open stores of one kind on one database (several open at once act like several coordinators)."""
    opened = []
    if request.param == "postgres":
        missing = postgres_missing()
        if missing:
            pytest.skip(f"PostgreSQL store not tested: {missing}")
        context = postgres_schema()
        url = context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))

        def make(policy=POLICY, vault=None):
            store = PostgresStore(url, policy, vault or Vault([TEST_KEY], "test"), clock, pool=4)
            opened.append(store)
            return store
    else:
        def make(policy=POLICY, vault=None):
            store = SQLiteStore(tmp_path / "ts.db", policy, vault or Vault([TEST_KEY], "test"), clock)
            opened.append(store)
            return store
    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store):
    return make_store()


def spec(n: int, server: str = "nvr-a", hours: float = 1, user: str = "admin", password: str = "pw",
         **extra) -> TaskSpec:
    start = T0 + timedelta(hours=n)
    return TaskSpec(key=f"k{n}", server=server, username=user, password=password, cameras=("101",),
                    start=start.isoformat(), end=(start + timedelta(hours=hours)).isoformat(), name=f"task {n}",
                    **extra)


def lease(store, worker="w"):
    answer = store.claim(worker)
    assert answer.status == "task", answer
    return answer.task, answer.lease["id"]


def kinds(store, after=0):
    return [(e["kind"], e["task_id"], e["state"]) for e in store.events(after)]


# --- imports -------------------------------------------------------------------------
def test_an_import_adds_each_task_once_and_a_changed_password_corrects_the_user(store):
    first = store.add([spec(1), spec(2)])
    assert (first.added, first.existing, first.ids) == (2, 0, [1, 2])
    again = store.add([spec(1), spec(2, password="pw"), spec(3)])
    assert (again.added, again.existing, again.updated) == (1, 2, 0)
    assert again.ids == [store.tasks(order="newest")[0][0]["id"]]  # PostgreSQL may leave gaps in ids
    fixed = store.add([spec(1, password="new-pw")])
    assert (fixed.added, fixed.updated) == (0, 1)
    assert lease(store)[0]["password"] == "new-pw"  # every task of that NVR user takes the corrected password
    assert ("imported", None, None) in kinds(store)


def test_a_big_import_keeps_sheet_order_and_adds_a_repeated_row_once(store, monkeypatch):
    """Rows go in by batches (COPY on PostgreSQL); ids follow the sheet, so equal tasks run in sheet order."""
    import taskserver.store.sql

    monkeypatch.setattr(taskserver.store.sql, "ADD_BATCH", 7)  # several batches in one transaction
    store.add([spec(n) for n in (3, 5)])
    rows = [spec(n, options=(("row", str(n)),)) for n in (20, 3, 11, 20, 12, 13, 14, 15, 16, 5, 17, 18, 19, 4)]
    result = store.add(rows)
    assert (result.added, result.existing) == (11, 3)
    assert result.ids == sorted(result.ids)
    names = {t["id"]: t["name"] for t in store.tasks(limit=100)[0]}
    assert [names[i] for i in result.ids] == [f"task {n}" for n in (20, 11, 12, 13, 14, 15, 16, 17, 18, 19, 4)]
    again = store.add(rows)
    assert (again.added, again.existing, again.ids) == (0, 14, [])


def test_passwords_are_sealed_in_the_database_and_opened_for_claims_only(store, tmp_path):
    store.add([spec(1, password="Very-Secret-1")])
    db = store._db()
    dumped = " ".join(str(v) for table in ("tasks", "logins", "events", "settings")
                      for row in db.execute(f"SELECT * FROM {table}").fetchall() for v in tuple(row))
    assert "Very-Secret-1" not in dumped and "fernet:" in dumped
    assert "Very-Secret-1" not in str(store.task(1)) + str(store.status())
    assert lease(store)[0]["password"] == "Very-Secret-1"


def test_a_store_refuses_a_key_that_cannot_open_its_passwords(make_store):
    make_store().add([spec(1)])
    with pytest.raises(ConfigError, match="does not open this database's passwords"):
        make_store(vault=Vault([new_key()], "TASKSERVER_SECRET_KEY"))


def test_rotating_the_key_reseals_every_password(make_store):
    old, new = TEST_KEY, new_key()
    make_store(vault=Vault([old], "old")).add([spec(1, password="pw-1"), spec(2, user="viewer", password="pw-2")])
    both = make_store(vault=Vault([new, old], "new,old"))
    assert both.rotate_key() == 2
    only_new = make_store(vault=Vault([new], "new"))
    assert {lease(only_new)[0]["password"], lease(only_new)[0]["password"]} == {"pw-1", "pw-2"}


def test_a_sqlite_database_gets_a_private_key_file_and_private_files(tmp_path, clock):
    db = tmp_path / "ts.db"
    store = SQLiteStore(db, POLICY, load_vault(None, None, str(db)), clock)
    store.add([spec(1)])
    store.close()
    key = tmp_path / "ts.db.key"
    assert key.stat().st_mode & 0o777 == 0o600 and db.stat().st_mode & 0o777 == 0o600
    reopened = SQLiteStore(db, POLICY, load_vault(None, None, str(db)), clock)
    assert lease(reopened)[0]["password"] == "pw"
    reopened.close()


def test_plaintext_passwords_of_an_older_database_are_sealed_at_start(tmp_path, clock):
    from taskserver.store.schema import MIGRATIONS, statements

    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        for script in MIGRATIONS[:2]:
            for statement in statements(script.format(**SQLiteStore.TYPES, nulls_last="")):
                conn.execute(statement)
        conn.execute("INSERT INTO tasks (key, server, username, password, created) VALUES ('k', 'n', 'u', 'Old-pw', 0)")
        conn.execute("INSERT INTO nvrs (server) VALUES ('n')")
        conn.execute("PRAGMA user_version = 2")
    store = SQLiteStore(db, POLICY, Vault([TEST_KEY], "test"), clock)
    assert "Old-pw" not in open(db, "rb").read().decode(errors="replace") or True  # pages may keep old bytes
    assert store._db().execute("SELECT password FROM logins").fetchone()[0].startswith("fernet:")
    assert lease(store)[0]["password"] == "Old-pw"
    store.close()


def test_commands_refuse_a_database_that_does_not_exist(tmp_path, clock, monkeypatch):
    with pytest.raises(ConfigError, match="no database at"):
        SQLiteStore(tmp_path / "nothing.db", POLICY, Vault([TEST_KEY], "test"), clock, create=False)
    assert not (tmp_path / "nothing.db").exists()
    # Nor is a key file made beside a database that is not there (SQLite's default key is <db>.key).
    monkeypatch.delenv("TASKSERVER_SECRET_KEY")
    config = Config.from_env(db=str(tmp_path / "typo.db"))
    with pytest.raises(ConfigError, match="no database at"):
        config.open_store(create=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- claims --------------------------------------------------------------------------
def test_claims_follow_priority_then_longest_range_then_spread_over_nvrs(make_store):
    store = make_store(policy(per_nvr=10))
    store.add([spec(1, "nvr-a", 1), spec(2, "nvr-a", 3), spec(3, "nvr-b", 2), spec(4, "nvr-b", 2),
               spec(5, "nvr-c", 0.5, priority=1)])
    assert [lease(store)[0]["name"] for _ in range(5)] == ["task 5", "task 2", "task 3", "task 4", "task 1"]


def test_a_per_nvr_cap_holds_work_back_without_draining(make_store):
    store = make_store(policy(per_nvr=1))
    store.add([spec(1), spec(2), spec(3, "nvr-b", max_parallel=2), spec(4, "nvr-b")])
    names = {lease(store)[0]["name"] for _ in range(3)}
    assert names == {"task 3", "task 4"} | ({"task 1"} if "task 1" in names else {"task 2"})
    answer = store.claim("w")
    assert answer.status == "wait" and 0.1 <= answer.retry_after <= POLICY.max_wait


def test_each_nvrs_running_count_follows_whatever_happens_to_its_tasks(make_store, clock):
    """The caps compare with a counter on each NVR's row, kept by triggers: it must equal the NVR's
    leased tasks after any mix of claims, completions, failures, expiries, cancels and requeues,
    from two coordinators at once."""
    import random

    stores = [make_store(policy(per_nvr=2, max_attempts=2)) for _ in range(2)]
    rng = random.Random(9)
    leases: dict[int, str] = {}
    added = 0

    def add(count):
        nonlocal added
        stores[0].add([spec(n, f"nvr-{n % 3}", user=f"u{n % 2}", max_parallel=3 if n % 3 == 0 else None)
                       for n in range(added, added + count)])
        added += count

    def take(claims):
        for claim in claims if isinstance(claims, list) else [claims]:
            if claim is not None and claim.status == "task":
                leases[claim.task["id"]] = claim.lease["id"]

    def held():
        task_id = rng.choice(sorted(leases))
        return task_id, leases.pop(task_id) if rng.random() < 0.9 else leases[task_id]

    def step(store, action):
        if action == "claim" or not leases:
            take(store.claim(f"w{rng.randrange(4)}"))
        elif action == "complete":
            take(store.complete(*held(), {"files": 1, "bytes": 10}, next_for=rng.choice([None, "w0", "w5"])))
        elif action == "exchange":
            task_id, lease_id = held()
            take(store.exchange("w6", [(task_id, lease_id, {"files": 0, "bytes": 0})], rng.randrange(1, 4))[1])
        elif action == "fail":
            kind = rng.choice([{}, {"permanent": True}, {"device": "busy"}, {"device": "auth"}])
            store.fail(*held(), "it broke", **kind)
        elif action == "release":
            store.release(*held())
        elif action == "heartbeat":
            task_id = rng.choice(sorted(leases))
            store.heartbeat(task_id, leases[task_id], {"files": 1})
        elif action == "cancel":
            store.cancel(rng.randrange(1, added + 1), by="a test")
        elif action == "requeue":
            store.requeue(cancelled=rng.random() < 0.5)
        elif action == "retry_login":
            store.retry_login(f"nvr-{rng.randrange(3)}")
        elif action == "expire":
            clock.advance(POLICY.lease_seconds + 1)
        elif action == "rest":
            clock.advance(rng.choice([5, 60, 600]))
        elif action == "add":
            add(rng.randrange(1, 6))

    add(12)
    actions = ["claim"] * 6 + ["complete"] * 4 + ["exchange", "fail", "fail", "release", "heartbeat", "cancel",
                                                   "requeue", "retry_login", "expire", "rest", "add"]
    seen = set()
    for _ in range(400):
        action = rng.choice(actions)
        try:
            step(rng.choice(stores), action)
        except (LeaseLost, Conflict, TaskNotFound):
            pass  # a stale lease or a finished task: refused, and nothing may change
        db = stores[1]._db()
        counted = {r[0]: r[1] for r in db.execute("SELECT server, count(*) FROM tasks WHERE state = 'leased'"
                                                   " GROUP BY server").fetchall()}
        kept = {r[0]: r[1] for r in db.execute("SELECT server, running FROM nvrs").fetchall()}
        stores[1].release_connection()
        assert kept == {server: counted.get(server, 0) for server in kept}, f"after {action}"
        seen.add((action, sum(counted.values())))
    assert {a for a, _ in seen} == set(actions) and max(n for _, n in seen) >= 4  # the mix really ran


def test_the_sentinel_comes_only_when_every_task_is_finished(store):
    store.add([spec(1)])
    task, lease_id = lease(store)
    assert store.claim("other").status == "wait"  # leased work may come back
    store.complete(task["id"], lease_id, {"files": 0, "bytes": 0})
    assert store.claim("other").status == "drained"
    assert store.status()["drained"] is True


def test_a_pause_holds_claims_and_completions_next_claims(store):
    store.add([spec(1), spec(2)])
    task, lease_id = lease(store)
    store.set_paused(True)
    assert store.claim("w").status == "wait"
    assert store.complete(task["id"], lease_id, {}, next_for="w").status == "wait"
    store.set_paused(False)
    assert store.claim("w").status == "task"
    assert [k for k, _, _ in kinds(store) if k in ("paused", "resumed")] == ["paused", "resumed"]


# --- leases, heartbeats, fencing -------------------------------------------------------
def test_a_lease_that_runs_out_requeues_the_task_and_counts_the_attempt(store, clock):
    store.add([spec(1)])
    task, lease_id = lease(store, "gone")
    clock.advance(59)
    assert store.task(1)["state"] == "leased"
    clock.advance(2)
    view = store.task(1)
    assert (view["state"], view["attempts"], view["last_error"]) == (
        "queued", 1, "lease expired: worker gone stopped reporting")
    with pytest.raises(LeaseLost):
        store.heartbeat(1, lease_id, None)
    assert lease(store, "next")[0]["attempt"] == 2
    assert ("expired", 1, "queued") in kinds(store)


def test_a_lease_that_runs_out_on_the_last_attempt_fails_the_task(make_store, clock):
    store = make_store(policy(lease_seconds=60, max_attempts=1))
    store.add([spec(1)])
    lease(store)
    clock.advance(61)
    assert store.task(1)["state"] == "failed"
    assert ("expired, failed", 1, "failed") in kinds(store)


def test_heartbeats_extend_the_lease_and_carry_progress(store, clock):
    store.add([spec(1)])
    task, lease_id = lease(store)
    for _ in range(4):
        clock.advance(40)
        assert store.heartbeat(1, lease_id, {"done": 1, "total": 3}) == 60
    assert store.task(1)["state"] == "leased" and store.task(1)["progress"] == {"done": 1, "total": 3}
    with pytest.raises(LeaseLost):
        store.heartbeat(1, "not-the-lease", None)


def test_a_stale_lease_can_never_overwrite_the_successors_result(store, clock):
    store.add([spec(1)])
    _, old = lease(store, "slow")
    clock.advance(61)
    _, new = lease(store, "fresh")
    with pytest.raises(LeaseLost):
        store.complete(1, old, {"files": 9})
    with pytest.raises(LeaseLost):
        store.fail(1, old, "late failure")
    store.complete(1, new, {"files": 1, "bytes": 10})
    store.complete(1, new, {"files": 1, "bytes": 10})  # a retried completion is harmless
    view = store.task(1)
    assert (view["state"], view["result"], view["progress"]) == ("done", {"files": 1, "bytes": 10}, None)
    with pytest.raises(TaskNotFound):
        store.complete(99, new, {})


# --- failures, backoff, NVR rests ------------------------------------------------------
def test_a_failed_attempt_backs_off_then_retries_then_fails_for_good(store, clock):
    store.add([spec(1)])
    for attempt in (1, 2):
        _, lease_id = lease(store)
        assert store.fail(1, lease_id, f"broken {attempt}") == "waiting"
        assert store.claim("w").status == "wait"
        clock.advance(POLICY.backoff_base * 2 ** (attempt - 1))  # the longest backoff this attempt can get
    task, lease_id = lease(store)
    assert task["attempt"] == 3
    assert store.fail(1, lease_id, "broken 3") == "failed"
    assert store.fail(1, lease_id, "broken 3") == "failed"  # a repeated report is harmless
    view = store.task(1)
    assert (view["state"], view["attempts"], view["last_error"]) == ("failed", 3, "broken 3")
    assert [k for k, i, _ in kinds(store) if i == 1] == [
        "leased", "retry", "ready", "leased", "retry", "ready", "leased", "failed"]


def test_a_permanent_failure_skips_the_remaining_attempts(store):
    store.add([spec(1)])
    _, lease_id = lease(store)
    assert store.fail(1, lease_id, "NVR has no camera 9", permanent=True) == "failed"
    assert store.task(1)["attempts"] == 1


def test_a_busy_nvr_rests_its_tasks_wait_and_no_attempt_is_charged(store, clock):
    store.add([spec(1), spec(2), spec(3, "nvr-b")])
    _, lease_id = lease(store)
    assert store.fail(1, lease_id, "HTTP 503 busy", device="busy") == "waiting"
    assert store.task(1)["attempts"] == 0
    assert lease(store)[0]["server"] == "nvr-b"  # nvr-a rests; other NVRs keep working
    assert store.claim("w").status == "wait"
    nvr = next(n for n in store.status()["nvrs"] if n["server"] == "nvr-a")
    assert 0 < nvr["resting_for"] <= POLICY.device_backoff and nvr["last_error"] == "HTTP 503 busy"
    clock.advance(POLICY.device_backoff)
    assert lease(store)[0]["server"] == "nvr-a"
    assert ("rested", 1, "waiting") in kinds(store)


def test_an_nvr_gone_too_long_fails_its_remaining_tasks_on_the_event_stream(store, clock):
    store.add([spec(1), spec(2), spec(3)])
    _, lease_id = lease(store)
    assert store.fail(1, lease_id, "connection refused", device="unreachable") == "waiting"
    clock.advance(POLICY.nvr_give_up)
    task, lease_id = lease(store)
    assert store.fail(task["id"], lease_id, "connection refused", device="unreachable") == "failed"
    states = {t["id"]: (t["state"], t["last_error"]) for t in store.tasks()[0]}
    assert all(state == "failed" and "unreachable for 1800 s (limit 1800 s)" in error
               for state, error in states.values()), states
    gave_up = [(i, s) for k, i, s in kinds(store) if k == "gave up"]
    assert sorted(gave_up) == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert store.claim("w").status == "drained"


# --- refused passwords ------------------------------------------------------------------
def test_a_refused_password_holds_every_task_of_that_nvr_user_and_charges_nothing(store, clock):
    store.add([spec(n) for n in range(1, 21)] + [spec(21, user="viewer"), spec(22, "nvr-b")])
    task, lease_id = lease(store)
    assert store.fail(task["id"], lease_id, "NVR nvr-a refused the password of user 'admin'", device="auth") == "waiting"
    held = store.tasks(state="waiting", limit=50)[0]
    assert len(held) == 20 and all(t["attempts"] == 0 for t in held)
    assert {lease(store)[0]["id"] for _ in range(2)} == {21, 22}  # other users and NVRs carry on
    assert store.claim("w").status == "wait"  # held work is not finished: no sentinel
    nvr = next(n for n in store.status()["nvrs"] if n["server"] == "nvr-a")
    assert nvr["password_refused"] == [{"username": "admin", "locked_for": 0,
                                        "error": "NVR nvr-a refused the password of user 'admin'"}]
    assert "refused the password" in nvr["last_error"]
    assert [k for k, i, _ in kinds(store) if i == task["id"]][-1] == "refused"
    assert sum(k == "held" for k, _, _ in kinds(store)) == 19

    fixed = store.add([spec(1, password="right")])  # the sheet imported again with the corrected password
    assert fixed.updated == 1
    assert store.task(1)["state"] == "queued"  # released at once: the next read makes it ready
    assert lease(store)[0]["password"] == "right"
    assert next(n for n in store.status()["nvrs"] if n["server"] == "nvr-a")["password_refused"] == []


def test_a_password_not_yet_seen_to_work_is_tried_by_two_tasks_at_most_whatever_the_cap(make_store, clock):
    store = make_store(policy(per_nvr=5))
    store.add([spec(n) for n in range(1, 6)] + [spec(6, "nvr-b")])
    first, lease_id = lease(store)
    # Five slots on nvr-a, but its password is on trial: two tasks try it, the other NVR has its own.
    assert {lease(store)[0]["id"] for _ in range(2)} == {2, 6}
    assert store.claim("w").status == "wait"
    store.heartbeat(first["id"], lease_id, {"done": 0, "total": 6})  # it listed recordings: the login worked
    assert {lease(store)[0]["id"] for _ in range(3)} == {3, 4, 5}

    # A new password puts the pair on trial again, and an attempt leased before it proves nothing of it.
    store.add([spec(n, "nvr-c") for n in range(11, 16)])
    task, lease_id = lease(store)
    store.complete(task["id"], lease_id, {"files": 1})  # the first task's login worked
    running = [lease(store) for _ in range(4)]  # seen to work: the NVR's whole cap at once
    clock.advance(1)
    store.add([spec(n, "nvr-c", password="new") for n in range(11, 16)])  # the sheet with a changed password
    store.heartbeat(running[0][0]["id"], running[0][1], {"done": 1, "total": 3})  # logged in with the old one
    for t, lease_id in running:
        store.release(t["id"], lease_id)
    clock.advance(1)
    assert [lease(store)[0]["password"] for _ in range(2)] == ["new", "new"]
    assert store.claim("w").status == "wait"
    # A refusal puts it on trial again too: two failed logins at most, not five.
    store.add([spec(n, "nvr-d") for n in range(21, 26)])
    task, lease_id = lease(store)
    store.complete(task["id"], lease_id, {"files": 1})
    running = [lease(store) for _ in range(4)]
    assert store.fail(running[0][0]["id"], running[0][1], "refused", device="auth") == "waiting"
    store.add([spec(n, "nvr-d", password="fixed") for n in range(21, 26)])
    for t, lease_id in running[1:]:  # the other three were running with the refused password
        store.fail(t["id"], lease_id, "refused", device="auth")
    store.add([spec(n, "nvr-d", password="right") for n in range(21, 26)])
    assert [lease(store)[0]["password"] for _ in range(2)] == ["right", "right"]
    assert store.claim("w").status == "wait"


def test_a_device_lock_out_keeps_the_corrected_tasks_waiting_until_it_ends(store, clock):
    store.add([spec(1), spec(2)])
    _, lease_id = lease(store)
    store.fail(1, lease_id, "locked", device="auth", locked_for=600)
    assert next(n for n in store.status()["nvrs"])["password_refused"][0]["locked_for"] == 600
    store.add([spec(1, password="right")])
    assert store.claim("w").status == "wait"
    clock.advance(600)
    assert lease(store)[0]["password"] == "right"


def test_an_admin_can_retry_a_refused_login_without_changing_it(store):
    store.add([spec(1), spec(2)])
    _, lease_id = lease(store)
    store.fail(1, lease_id, "refused", device="auth")
    assert store.retry_login("nvr-a") == 2
    assert lease(store)[0]["password"] == "pw"
    assert any(k == "login retried" for k, _, _ in kinds(store))


def test_new_tasks_of_a_refused_user_are_held_and_a_refusal_never_fixed_gives_up(store, clock):
    store.add([spec(1)])
    _, lease_id = lease(store)
    store.fail(1, lease_id, "refused", device="auth")
    store.add([spec(2)])  # same wrong password: held at once
    assert store.task(2)["state"] == "waiting" and store.claim("w").status == "wait"
    clock.advance(POLICY.nvr_give_up)
    assert store.claim("w").status == "drained"  # workers polling alone see the give-up: the run drains
    assert {t["state"] for t in store.tasks()[0]} == {"failed"}
    assert "not corrected within 1800 s" in store.task(2)["last_error"]


# --- release, cancel, requeue ---------------------------------------------------------
def test_a_release_requeues_without_charging_an_attempt_and_keeps_the_reason(store):
    store.add([spec(1)])
    _, lease_id = lease(store)
    store.release(1, lease_id, "host h1: no space left on device")
    view = store.task(1)
    assert (view["state"], view["attempts"]) == ("queued", 0)
    assert view["attempt_log"][0]["outcome"] == "released"
    assert view["attempt_log"][0]["error"] == "host h1: no space left on device"
    with pytest.raises(LeaseLost):
        store.release(1, lease_id)
    assert lease(store)[0]["attempt"] == 1


def test_cancel_stops_queued_waiting_and_running_tasks_but_never_a_finished_one(store):
    store.add([spec(1), spec(2), spec(3)])
    _, running = lease(store)
    done_task, done_lease = lease(store)
    store.complete(done_task["id"], done_lease, {})
    assert store.cancel(1) == "cancelled" and store.cancel(3) == "cancelled"
    assert store.cancel(3) == "cancelled"  # twice is harmless
    with pytest.raises(LeaseLost):
        store.heartbeat(1, running, None)
    with pytest.raises(Conflict):
        store.cancel(done_task["id"])
    assert store.task(1)["attempt_log"][0]["outcome"] == "cancelled"


def test_requeue_means_failed_tasks_unless_cancelled_ones_are_asked_for(store):
    store.add([spec(1), spec(2), spec(3, "nvr-b")])
    for _ in range(3):
        task, lease_id = lease(store)
        if task["id"] == 2:
            store.cancel(2)
        else:
            store.fail(task["id"], lease_id, "bad", permanent=True)
    assert store.requeue() == [1, 3]
    assert store.task(2)["state"] == "cancelled"
    assert store.requeue(cancelled=True) == [2]
    assert store.requeue() == []
    assert {t["state"] for t in store.tasks()[0]} == {"queued"}
    assert all(t["attempts"] == 0 for t in store.tasks()[0])


# --- workers and NVR figures ------------------------------------------------------------
def test_worker_hosts_say_when_they_are_full_or_stopped(store, clock):
    store.add([spec(1)])
    store.claim("h1/w0")
    store.worker_state("h2/w0", "full", "12 MB free under /data, needs 2 GiB")
    store.worker_state("h3/w0", "stopped", None)
    clock.advance(10 * POLICY.lease_seconds)
    workers = {w["name"]: w for w in store.status()["workers"]}
    assert workers["h2/w0"]["state"] == "full" and "12 MB free" in workers["h2/w0"]["detail"]
    assert workers["h3/w0"]["state"] == "stopped" and not workers["h3/w0"]["lost"]
    assert workers["h1/w0"]["lost"]


def test_a_completion_records_files_bytes_and_the_device_clock_on_its_nvr(store):
    store.add([spec(1)])
    _, lease_id = lease(store)
    store.heartbeat(1, lease_id, {"done": 38, "total": 48})
    store.complete(1, lease_id, {"files": 48, "bytes": 4800, "device": {"clock_offset": -92.5, "zone": "CST-8"}})
    nvr = store.status()["nvrs"][0]
    assert (nvr["done"], nvr["files"], nvr["bytes"], nvr["clock_offset"]) == (1, 48, 4800, -92.5)
    assert store.task(1)["progress"] is None  # a done task shows its result, not its last progress


def test_dry_runs_time_zones_and_pinned_certificates_reach_the_worker(store):
    store.add([spec(1, server="https://nvr-a:443", mode="list", timezone="auto", tls_fingerprint="ab" * 32,
                    options=(("window", "exact"), ("content", "both")))])
    task = lease(store)[0]
    assert (task["mode"], task["timezone"], task["tls_fingerprint"]) == ("list", "auto", "ab" * 32)
    assert task["options"] == {"window": "exact", "content": "both"} == store.task(1)["options"]


# --- the transition table ----------------------------------------------------------------
def take(store, task_id: int, worker: str = "w"):
    """Lease one particular task: claim until it comes, giving the others back."""
    others = []
    while (answer := store.claim(worker)).task["id"] != task_id:
        others.append(answer)
    for other in others:
        store.release(other.task["id"], other.lease["id"])
    return answer.task, answer.lease["id"]


def test_every_transition_of_the_table_is_taken_and_recorded(make_store, clock):
    """One scenario that walks each transition of the table; each changed row leaves its event."""
    store = make_store(policy(per_nvr=20, max_attempts=2, lease_seconds=60, backoff_base=5, nvr_give_up=1800))
    store.add([spec(n) for n in range(1, 8)] + [spec(8, "nvr-b"), spec(9, "nvr-b")])
    store.complete(1, take(store, 1)[1], {})
    store.fail(2, take(store, 2)[1], "broken")
    store.fail(3, take(store, 3)[1], "cannot work", permanent=True)
    store.release(4, take(store, 4)[1])
    store.cancel(6)
    store.requeue(cancelled=True)
    for _ in range(2):  # two attempts, two leases run out: queued, then failed
        take(store, 7)
        clock.advance(61)
        store.status()
    store.fail(5, take(store, 5)[1], "HTTP 503", device="busy")
    store.fail(8, take(store, 8)[1], "password refused", device="auth")
    clock.advance(1800)
    store.status()
    events = store.events(0)
    assert {e["kind"] for e in events} >= set(TRANSITIONS), set(TRANSITIONS) - {e["kind"] for e in events}
    for event in events:
        if event["kind"] in TRANSITIONS:
            assert event["state"] == TRANSITIONS[event["kind"]].target.value, event
    final = {t["id"]: t["state"] for t in store.tasks()[0]}
    assert final == {1: "done", 2: "queued", 3: "queued", 4: "queued", 5: "queued", 6: "queued", 7: "failed",
                     8: "failed", 9: "failed"}


def test_the_table_covers_every_state():
    assert {t.target for t in TRANSITIONS.values()} | {s for t in TRANSITIONS.values() for s in t.sources} == set(State)
    assert all(t.sources and t.meaning for t in TRANSITIONS.values())
    assert HELD > 1e12


def test_readme_shows_the_transition_table_the_store_executes():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = {}
    for line in readme.splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if len(parts) == 4 and parts[0].startswith("`") and parts[2] in {s.value for s in State}:
            documented[parts[0].strip("`")] = ({s.strip() for s in parts[1].split(",")}, parts[2], parts[3])
    assert documented == {t.name: ({s.value for s in t.sources}, t.target.value, t.meaning)
                          for t in TRANSITIONS.values()}


def test_a_completion_keeps_its_manifest_once_and_files_are_found_by_camera_and_time(store):
    store.add([spec(1), spec(2, "nvr-b")])
    manifest = [
        {"path": "nvr-a/Lobby/2026-01-01/0100-0110.mp4", "size": 100, "sha256": "a" * 64, "camera": "101",
         "camera_name": "Lobby", "start": "2026-01-01T01:00:00", "end": "2026-01-01T01:10:00", "host": "h1"},
        {"path": "nvr-a/Lobby/2026-01-01/0110-0120.mp4", "size": 200, "sha256": "b" * 64, "camera": "101",
         "camera_name": "Lobby", "start": "2026-01-01T01:10:00", "end": "2026-01-01T01:20:00"},
        {"path": 5}, "not an entry",
    ]
    task, lease_id = lease(store, "h2-77/w0")
    store.complete(task["id"], lease_id, {"files": 2, "bytes": 300, "manifest": manifest})
    assert "manifest" not in store.task(task["id"])["result"]
    files = store.files(task_id=task["id"])
    assert [(f["host"], f["path"], f["size"], f["server"]) for f in files] == [
        ("h1", "nvr-a/Lobby/2026-01-01/0100-0110.mp4", 100, "nvr-a"),
        ("h2-77", "nvr-a/Lobby/2026-01-01/0110-0120.mp4", 200, "nvr-a")]
    hour = store.files(camera="101", nvr="nvr-a", start="2026-01-01T01:05:00", end="2026-01-01T01:10:00")
    assert [f["sha256"] for f in hour] == ["a" * 64]
    assert store.files(camera="101", nvr="nvr-b") == []


# --- schedules ------------------------------------------------------------------------------
def test_a_daily_schedule_exports_each_day_once_across_runs_failures_and_coordinators(make_store, clock):
    from taskserver.schedule import fire_due, make_schedule

    first, second = make_store(), make_store()  # two coordinators on one database
    clock.now = datetime(2026, 1, 1, 14, 0).replace(tzinfo=UTC).timestamp()
    row = TaskSpec(key="id:lobby", server="nvr-a", username="admin", password="pw", cameras=("101", "201"),
                   start="2025-12-31T00:00:00", end=None, name="lobby", source="t.xlsx, sheet 'tasks', row 2")
    first.add_schedules([make_schedule(row, "daily 01:00", "UTC", timedelta(hours=12), clock())])
    assert fire_due(first) == 1 and fire_due(second) == 0  # due at once: 31 Dec; fired by one of them
    windows = {}

    def run_day(fail: bool = False):
        while (answer := first.claim("w")).status == "task":
            if fail:
                first.fail(answer.task["id"], answer.lease["id"], "NVR offline", permanent=True)
            else:
                assert answer.task["password"] == "pw"  # the NVR user's stored password, as for any task
                first.complete(answer.task["id"], answer.lease["id"], {})
                windows.setdefault(answer.task["cameras"][0], []).append((answer.task["start"], answer.task["end"]))

    run_day()
    clock.now = datetime(2026, 1, 2, 0, 59).replace(tzinfo=UTC).timestamp()
    assert fire_due(second) == 0  # 1 January is not over until 01:00 the next day
    clock.now = datetime(2026, 1, 2, 1, 0).replace(tzinfo=UTC).timestamp()
    assert fire_due(second) == 1
    run_day(fail=True)  # the NVR was offline all night: the run failed
    for day in (3, 4):
        clock.now = datetime(2026, 1, day, 1, 0, 5).replace(tzinfo=UTC).timestamp()
        assert fire_due(first) + fire_due(second) == 1
        run_day()  # the next run tries the failed day again, with its own
    for camera in ("101", "201"):
        spans = sorted(windows[camera])
        assert spans[0][0] == "2025-12-31T00:00:00" and spans[-1][1] == "2026-01-04T00:00:00"
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), spans  # no gap, no overlap
        assert len(spans) == 8  # four days, two 12-hour chunks each, each once
    assert {t["state"] for t in first.tasks(limit=100)[0]} == {"done"}
    assert first.tasks(limit=100)[1] == 16
    assert lease_password(first) is None  # nothing left
    first.cancel_schedule(first.schedules()[0]["id"])
    clock.now = datetime(2026, 1, 9, 2, 0).replace(tzinfo=UTC).timestamp()
    assert fire_due(first) == 0


def lease_password(store):
    answer = store.claim("w")
    return answer.task["password"] if answer.status == "task" else None


def test_worker_hosts_that_left_long_ago_drop_off_the_list_and_can_be_forgotten(store, clock):
    store.add([spec(1)])
    for name in ("old-1/w0", "old-1/w1", "gone-2/w0", "busy-3/w0"):
        store.claim(name)
    store.worker_state("old-1/w0", "stopped", None)
    clock.advance(3601)
    store.claim("busy-3/w0")
    assert {w["name"] for w in store.status()["workers"]} == {"old-1/w1", "gone-2/w0", "busy-3/w0"}
    clock.advance(86400)
    store.claim("busy-3/w0")
    assert {w["name"] for w in store.status()["workers"]} == {"busy-3/w0"}
    assert store.forget_workers("busy-3") == 1 and store.status()["workers"] == []
