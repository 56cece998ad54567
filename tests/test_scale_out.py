"""Several coordinators share one PostgreSQL database; a deployment moves from SQLite to PostgreSQL."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import timedelta

import psycopg
import pytest

from .harness import (
    HEADER,
    LISTENING,
    PYTHON,
    T,
    api,
    coordinator_argv,
    start_client,
    start_coordinator,
    status,
    wait_for,
    write_sheet,
)

pytestmark = pytest.mark.slow

# Stands in for an export: records how many tasks of its NVR run at this instant
# (under a lock shared by every worker process), then leaves.
TASK_SCRIPT = """
import fcntl, os, sys, time
folder, server, task = sys.argv[1:4]
lock = open(os.path.join(folder, "lock"), "w")
counter = os.path.join(folder, "running-" + server.replace(":", "_"))

def step(delta):
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        running = int(open(counter).read()) if os.path.exists(counter) else 0
        running += delta
        with open(counter, "w") as f:
            f.write(str(running))
        if delta > 0:
            with open(os.path.join(folder, "ran.log"), "a") as log:
                log.write(f"{task} {server} {running}\\n")
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)

step(1)
time.sleep(0.005)
step(-1)
"""


def test_three_coordinators_share_one_database_and_survive_losing_one(procs, tmp_path, postgres):
    nvrs = ["192.0.2.10:80", "192.0.2.11:80"]  # never contacted: the task script stands in for the export
    rows = [[nvrs[i % 2], "admin", "pw-never-shown", "101", T + timedelta(minutes=i), T + timedelta(minutes=i + 1)]
            for i in range(2000)]
    sheet = write_sheet(tmp_path / "t.xlsx", rows, HEADER)
    # All three start at once on an empty database and import the same sheet: one schema, 2000 tasks.
    coordinators = [procs.start("coordinator", coordinator_argv(sheet, postgres, "--lease-seconds", "3",
                                                                "--per-nvr", "2")) for _ in range(3)]
    urls = [c.ready(LISTENING) for c in coordinators]
    assert status(urls[0])["tasks"] == 2000

    script = tmp_path / "task.py"
    script.write_text(TASK_SCRIPT)
    command = f"{sys.executable} {script} {tmp_path} {{server}} {{id}}"
    clients = []
    for n in range(3):  # each host starts on its own coordinator and knows the other two
        order = urls[n:] + urls[:n]
        extra = [a for url in order[1:] for a in ("--server", url)]
        clients.append(start_client(procs, order[0], tmp_path / f"dl{n}", 2, "--runner", "command",
                                    "--command", command, *extra))

    wait_for(lambda: status(urls[0])["counts"]["done"] >= 500, timeout=60, what="500 tasks done")
    coordinators[1].kill(signal.SIGKILL)  # its workers fail over to the other two

    for client in clients:
        assert client.wait(120) == 0, client.output()[-2000:]
    assert f"coordinator {urls[1]} unreachable" in clients[1].output()  # it did fail over
    assert "HTTP 500" not in "".join(c.output() for c in clients)
    final = status(urls[0])
    assert final["drained"] and final["counts"]["done"] == 2000 and final["tasks"] == 2000

    runs = [line.split() for line in (tmp_path / "ran.log").read_text().splitlines()]
    ran = sorted(int(task) for task, _, _ in runs)
    with psycopg.connect(postgres) as conn:
        outcomes = conn.execute("SELECT task_id, outcome FROM attempts").fetchall()
        twice = sorted({t for t in ran if ran.count(t) > 1})
        detail = conn.execute("SELECT task_id, worker, started, ended, outcome, error FROM attempts"
                              " WHERE task_id = ANY(%s) ORDER BY id", (twice,)).fetchall()
    assert ran == list(range(1, 2001)), f"a task ran twice or never: {twice} {detail}"
    assert max(int(running) for _, _, running in runs) == 2, "an NVR ran more than its cap of 2 at once"
    done = sorted(task for task, outcome in outcomes if outcome == "done")
    assert done == list(range(1, 2001)), "a task was completed twice"
    # An attempt not done is a lease whose answer died with the killed coordinator: it expired.
    assert {outcome for _, outcome in outcomes} <= {"done", "expired"}
    assert "pw-never-shown" not in "".join(p.output() for p in procs.started)


def test_a_sqlite_deployment_moves_to_postgresql_with_its_leases(procs, tmp_path, postgres):
    rows = [["192.0.2.10:80", "admin", "pw-never-shown", "101", T + timedelta(hours=h), T + timedelta(hours=h + 1)]
            for h in range(4)]
    sqlite = tmp_path / "ts.db"
    old = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), sqlite, "--lease-seconds", "60")
    first = api(old.url, path="/api/claim", params={"worker": "w1"}).json()
    assert api(old.url, "POST", f"/api/tasks/{first['task']['id']}/complete",
               json={"lease": first["lease"]["id"], "result": {"files": 3, "bytes": 300}}).status_code == 200
    running = api(old.url, path="/api/claim", params={"worker": "w1"}).json()  # still running when we move
    before = [api(old.url, path=f"/api/tasks/{n}").json() for n in range(1, 5)]
    old.kill(signal.SIGTERM)
    old.wait(10)

    moved = subprocess.run([PYTHON, "-m", "taskserver", "migrate-db", "--from", f"sqlite:///{sqlite}",
                            "--to", postgres], capture_output=True, text=True, timeout=60)
    assert moved.returncode == 0, moved.stderr
    assert "4 tasks" in moved.stdout and "2 attempts" in moved.stdout

    new = start_coordinator(procs, None, postgres, "--lease-seconds", "60")

    def running_on_the_nvr():  # what its cap is compared with: moved as it was, and kept from then on
        with psycopg.connect(postgres, autocommit=True) as conn:
            return conn.execute("SELECT running FROM nvrs").fetchone()[0]

    assert running_on_the_nvr() == 1
    after = [api(new.url, path=f"/api/tasks/{n}").json() for n in range(1, 5)]
    for old_view, new_view in zip(before, after, strict=True):
        old_view.pop("lease_expires_in"), new_view.pop("lease_expires_in")
        assert new_view == old_view
    # The worker that held a lease finishes its task on the new coordinator, with the same lease.
    assert api(new.url, "POST", f"/api/tasks/{running['task']['id']}/complete",
               json={"lease": running["lease"]["id"], "result": {"files": 1, "bytes": 100}}).status_code == 200
    assert running_on_the_nvr() == 0
    # New tasks get new ids after the moved ones.
    added = api(new.url, "POST", "/api/tasks", json={"tasks": [{
        "server": "192.0.2.10:80", "username": "admin", "password": "x", "cameras": "101",
        "starttime": "2026-01-02T00:00:00", "endtime": "2026-01-02T01:00:00"}]}).json()
    assert added["ids"] == [5]
    assert status(new.url)["counts"]["done"] == 2

    again = subprocess.run([PYTHON, "-m", "taskserver", "migrate-db", "--from", f"sqlite:///{sqlite}",
                            "--to", postgres], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already holds tasks; migrate into an empty database" in again.stderr
    typo = subprocess.run([PYTHON, "-m", "taskserver", "migrate-db", "--from", str(tmp_path / "tasksrv.db"),
                           "--to", postgres], capture_output=True, text=True, timeout=60)
    assert typo.returncode == 1 and "tasksrv.db not found: --from names the database now in use" in typo.stderr
    assert not (tmp_path / "tasksrv.db").exists()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_coordinator_refuses_a_database_from_a_newer_version(procs, tmp_path, store, request):
    if store == "sqlite":
        db = str(tmp_path / "ts.db")
        start_coordinator(procs, None, db).kill(signal.SIGTERM)
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA user_version = 99")
    else:
        db = request.getfixturevalue("postgres")
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (99)")
    refused = subprocess.run([PYTHON, "-m", "taskserver", "serve", "--db", db, "--tasks", "", "--port", "0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    from taskserver.store.schema import SCHEMA_VERSION

    assert (f"was written by a newer taskserver (schema 99, this one knows {SCHEMA_VERSION}); upgrade taskserver"
            in refused.stderr)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_database_from_the_first_version_is_upgraded_at_start_and_keeps_its_figures(procs, tmp_path, store,
                                                                                       request):
    from taskserver.store.postgres import PostgresStore
    from taskserver.store.schema import MIGRATIONS, statements
    from taskserver.store.sqlite import SQLiteStore

    version_one = statements(MIGRATIONS[0])
    done_task = ("INSERT INTO tasks (key, server, username, password, state, files, bytes, created)"
                 " VALUES ('k1', 'nvr-a', 'u', 'p', 'done', 3, 3000, 0)")
    running_task = ("INSERT INTO tasks (key, server, username, password, state, lease_id, lease_expires, worker,"
                    " attempts, created) VALUES ('k2', 'nvr-a', 'u', 'p', 'leased', 'l2', 4e9, 'h/w', 1, 0)")
    if store == "sqlite":
        import sqlite3

        db = str(tmp_path / "old.db")
        with sqlite3.connect(db) as conn:
            for statement in version_one:
                conn.execute(statement.format(**SQLiteStore.TYPES, nulls_last=SQLiteStore.NULLS_LAST))
            conn.execute(done_task)
            conn.execute(running_task)
            conn.execute("INSERT INTO nvrs (server) VALUES ('nvr-a')")
            conn.execute("PRAGMA user_version = 1")
    else:
        db = request.getfixturevalue("postgres")
        with psycopg.connect(db, autocommit=True) as conn:
            for statement in version_one:
                conn.execute(statement.format(**PostgresStore.TYPES, nulls_last=PostgresStore.NULLS_LAST))
            conn.execute(done_task)
            conn.execute(running_task)
            conn.execute("INSERT INTO nvrs (server) VALUES ('nvr-a')")
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO schema_version VALUES (1)")
    coordinator = start_coordinator(procs, None, db)
    shown = status(coordinator.url)
    assert (shown["files"], shown["bytes"]) == (3, 3000)
    assert [(n["server"], n["done"], n["files"], n["bytes"]) for n in shown["nvrs"]] == [("nvr-a", 1, 3, 3000)]
    # The running task counts against the NVR's cap, and the counter follows it from then on.
    if store == "sqlite":
        import sqlite3

        def running():
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT running FROM nvrs").fetchone()[0]
    else:
        def running():
            with psycopg.connect(db, autocommit=True) as conn:
                return conn.execute("SELECT running FROM nvrs").fetchone()[0]
    assert running() == 1
    answer = api(coordinator.url, "POST", "/api/tasks/2/complete", json={"lease": "l2", "worker": "h/w",
                                                                           "result": {"files": 0, "bytes": 0}})
    assert answer.status_code == 200, answer.text
    assert running() == 0



def test_a_lease_that_ends_on_an_older_coordinator_while_the_schema_upgrades_is_counted_right(postgres):
    """Migration 9 counts each NVR's running tasks once and keeps them with triggers from then on: a
    coordinator of the older version, still running, may end a lease at that moment, and the count
    must neither miss nor keep that change."""
    import threading

    from taskserver.store import schema
    from taskserver.store.postgres import PostgresStore

    old, upgrade = psycopg.connect(postgres, autocommit=True), psycopg.connect(postgres, autocommit=True)
    old.execute("CREATE TABLE nvrs (server TEXT PRIMARY KEY, max_parallel INTEGER)")
    old.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, server TEXT, state TEXT)")
    old.execute("INSERT INTO nvrs VALUES ('nvr-a', 1)")
    old.execute("INSERT INTO tasks VALUES (1, 'nvr-a', 'leased'), (2, 'nvr-a', 'queued')")
    script = schema.statements(schema.MIGRATIONS[8].format(**PostgresStore.TYPES, nulls_last=" NULLS LAST",
                                                           running_triggers=PostgresStore.RUNNING_TRIGGERS))
    old.execute("BEGIN")
    old.execute("UPDATE tasks SET state = 'expired' WHERE id = 1")  # the old coordinator's expiry, not committed

    def migrate():
        upgrade.execute("BEGIN")
        for statement in script:
            upgrade.execute(statement)
        upgrade.execute("COMMIT")

    running = threading.Thread(target=migrate)
    running.start()
    backend = upgrade.info.backend_pid
    deadline = time.monotonic() + 30
    with psycopg.connect(postgres, autocommit=True) as watch:
        while not watch.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                                (backend,)).fetchone()[0]:  # until the upgrade waits for the old coordinator
            assert running.is_alive() and time.monotonic() < deadline, "the upgrade never waited for the old writer"
    old.execute("COMMIT")
    running.join(30)
    assert old.execute("SELECT running FROM nvrs").fetchone()[0] == 0
    old.execute("UPDATE tasks SET state = 'leased' WHERE id = 2")  # and from then on, the triggers count
    assert old.execute("SELECT running FROM nvrs").fetchone()[0] == 1
    old.close(), upgrade.close()


def test_a_database_password_never_shows_in_messages_or_logs(procs, tmp_path, postgres):
    # The local PostgreSQL trusts loopback, so a password in the URL is accepted and ignored.
    with_password = postgres.replace("postgresql://postgres@", "postgresql://postgres:Db-Secret-9@")
    coordinator = start_coordinator(procs, None, with_password)
    assert "Db-Secret-9" not in api(coordinator.url).text + coordinator.output()
    unreachable = subprocess.run([PYTHON, "-m", "taskserver", "serve", "--db",
                                  "postgresql://taskserver:Db-Secret-9@127.0.0.1:9/nowhere", "--tasks", ""],
                                 capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 1
    assert "cannot connect to postgresql://taskserver:***@127.0.0.1:9/nowhere" in unreachable.stderr
    assert "Db-Secret-9" not in unreachable.stderr + unreachable.stdout


def test_every_coordinator_lists_the_workers_polling_any_of_them(procs, tmp_path, postgres):
    rows = [["192.0.2.10:80", "admin", "pw", "101", T, T + timedelta(hours=1)]]
    first = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), postgres)
    second = start_coordinator(procs, None, postgres)
    leased = api(first.url, path="/api/claim", params={"worker": "hostA/w0"}).json()
    assert api(first.url, path="/api/claim", params={"worker": "hostB/w0"}).json()["status"] == "wait"  # idle
    for url in (first.url, second.url):
        workers = {w["name"]: w["task"] for w in status(url)["workers"]}
        assert workers == {"hostA/w0": leased["task"]["id"], "hostB/w0": None}


def test_the_database_dropping_a_coordinators_connections_costs_no_request(procs, tmp_path, postgres):
    rows = [["192.0.2.10:80", "admin", "pw", "101", T + timedelta(hours=h), T + timedelta(hours=h + 1)] for h in (0, 1)]
    coordinator = start_coordinator(procs, write_sheet(tmp_path / "t.xlsx", rows, HEADER), postgres)
    first = api(coordinator.url, path="/api/claim", params={"worker": "w"}).json()
    # As after a database restart or failover: every connection of this coordinator is cut.
    with psycopg.connect(postgres, autocommit=True) as conn:
        cut = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                           (f"taskserver {coordinator.pid}",)).fetchone()[0]
    assert cut >= 1
    done = api(coordinator.url, "POST", f"/api/tasks/{first['task']['id']}/complete",
               json={"lease": first["lease"]["id"], "next": True, "worker": "w"})
    assert done.status_code == 200 and done.json()["next"]["status"] == "task"
    assert status(coordinator.url)["counts"] == {"queued": 0, "leased": 1, "waiting": 0, "done": 1, "failed": 0,
                                                 "cancelled": 0}
