"""The database schema, one migration per version, in SQL that SQLite and PostgreSQL both run.

A store at version N runs MIGRATIONS[N:] at start, in one transaction; `{id}`,
`{real}`... are the dialect's types (each store's TYPES), `{running_triggers}` its
triggers (the two dialects write them differently). Statements end with a semicolon
at the end of a line; one inside a line (a trigger's body) does not end it. A
database written by a newer taskserver is refused rather than misread.
"""
from __future__ import annotations

import re

MIGRATIONS = [
    """
CREATE TABLE IF NOT EXISTS tasks (
    id {id},
    key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    server TEXT NOT NULL,
    username TEXT NOT NULL,
    password TEXT NOT NULL,
    cameras TEXT NOT NULL DEFAULT '',
    start TEXT,
    "end" TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT '',
    grp TEXT NOT NULL DEFAULT '',
    span {real},
    takes_earlier INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    ready_at {real} NOT NULL DEFAULT 0,
    lease_id TEXT,
    lease_expires {real},
    worker TEXT,
    progress TEXT,
    result TEXT,
    files {bigint},
    bytes {bigint},
    last_error TEXT,
    created {real} NOT NULL,
    started {real},
    finished {real}
);
-- Each NVR's queue in hand-out order: priority, then longest range first.
CREATE INDEX IF NOT EXISTS tasks_next ON tasks (state, server, priority DESC, span DESC{nulls_last}, id);
CREATE INDEX IF NOT EXISTS tasks_leases ON tasks (state, lease_expires);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (state, ready_at);
CREATE TABLE IF NOT EXISTS attempts (
    id {id},
    task_id {bigint} NOT NULL REFERENCES tasks (id),
    lease_id TEXT NOT NULL UNIQUE,
    worker TEXT NOT NULL,
    started {real} NOT NULL,
    ended {real},
    outcome TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_task ON attempts (task_id);
CREATE TABLE IF NOT EXISTS nvrs (
    server TEXT PRIMARY KEY,
    max_parallel INTEGER,
    backoff_until {real} NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    down_since {real},
    last_error TEXT
);
-- The change feed behind /api/events: written at the end of each change's transaction.
CREATE TABLE IF NOT EXISTS events (
    id {serial},
    at {real} NOT NULL,
    kind TEXT NOT NULL,
    task_id {bigint},
    state TEXT,
    worker TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    first_seen {real} NOT NULL,
    last_seen {real} NOT NULL,
    task_id {bigint},
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0
)
""",
    # 2: files and bytes per NVR, kept as counters (done tasks never change again), so that
    # a status does not sum a million tasks.
    """
ALTER TABLE nvrs ADD COLUMN files {bigint} NOT NULL DEFAULT 0;
ALTER TABLE nvrs ADD COLUMN bytes {bigint} NOT NULL DEFAULT 0;
UPDATE nvrs SET files = (SELECT coalesce(sum(t.files), 0) FROM tasks t WHERE t.server = nvrs.server),
                bytes = (SELECT coalesce(sum(t.bytes), 0) FROM tasks t WHERE t.server = nvrs.server)
""",
    # 3: one password per NVR and user, sealed (the store seals plaintexts left here at start),
    # with the state of its last login: a refused password holds that user's tasks. Tasks keep
    # what the sheet says of time zones and certificates, and whether they are a dry run.
    # Worker hosts say when they are full or stopped; NVRs keep their clock's offset.
    """
CREATE TABLE IF NOT EXISTS logins (
    server TEXT NOT NULL,
    username TEXT NOT NULL,
    password TEXT NOT NULL,
    refused_at {real},
    locked_until {real},
    error TEXT,
    PRIMARY KEY (server, username)
);
INSERT INTO logins (server, username, password)
    SELECT t.server, t.username, t.password FROM tasks t
    WHERE t.id = (SELECT max(n.id) FROM tasks n WHERE n.server = t.server AND n.username = t.username);
ALTER TABLE tasks DROP COLUMN password;
ALTER TABLE tasks ADD COLUMN timezone TEXT;
ALTER TABLE tasks ADD COLUMN tls_fingerprint TEXT;
ALTER TABLE tasks ADD COLUMN mode TEXT NOT NULL DEFAULT 'export';
CREATE INDEX IF NOT EXISTS tasks_login ON tasks (server, username, state);
ALTER TABLE workers ADD COLUMN state TEXT NOT NULL DEFAULT 'ok';
ALTER TABLE workers ADD COLUMN detail TEXT;
ALTER TABLE nvrs ADD COLUMN clock_offset {real};
ALTER TABLE nvrs ADD COLUMN clock_at {real}
""",
    # 4: the manifest: every file a done task left, where (host and path under its downloads
    # folder), its size and SHA-256, and what it holds.
    """
CREATE TABLE IF NOT EXISTS files (
    id {id},
    task_id {bigint} NOT NULL REFERENCES tasks (id),
    host TEXT NOT NULL,
    path TEXT NOT NULL,
    size {bigint} NOT NULL,
    sha256 TEXT,
    camera TEXT,
    camera_name TEXT,
    start TEXT,
    "end" TEXT,
    kind TEXT NOT NULL DEFAULT 'video',
    location TEXT
);
CREATE INDEX IF NOT EXISTS files_task ON files (task_id);
CREATE INDEX IF NOT EXISTS files_camera ON files (camera, start)
""",
    # 5: schedules: a sheet row that the coordinator turns into tasks on a cadence, window after
    # window; tasks know their schedule, and how often they were requeued.
    """
CREATE TABLE IF NOT EXISTS schedules (
    id {id},
    key TEXT NOT NULL UNIQUE,
    cadence TEXT NOT NULL,
    zone TEXT,
    template TEXT NOT NULL,
    cursor TEXT NOT NULL,
    next_fire {real} NOT NULL,
    fired INTEGER NOT NULL DEFAULT 0,
    last_fired {real},
    state TEXT NOT NULL DEFAULT 'active',
    source TEXT NOT NULL DEFAULT '',
    created {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (state, next_fire);
ALTER TABLE tasks ADD COLUMN schedule_id {bigint};
ALTER TABLE tasks ADD COLUMN requeued INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS tasks_schedule ON tasks (schedule_id, state)
""",
    # 6: what a row asks of its export beyond the range (window mode, content, record types), as JSON.
    """
ALTER TABLE tasks ADD COLUMN options TEXT
""",
    # 7: exports done with no file at all ("done, nothing found"), counted per NVR for every status
    # from this small index rather than from every done task.
    """
CREATE INDEX IF NOT EXISTS tasks_empty ON tasks (server) WHERE state = 'done' AND files = 0 AND mode = 'export'
""",
    # 8: what a done dry run found (recordings and bytes it would export), so that rows and NVRs
    # can sum it in SQL; the per-camera figures stay in the result. Whether an NVR user's password
    # has been seen to work (until it has, few tasks of the pair run at once), and since when the
    # password is what it is (an attempt leased before that proves nothing of it).
    """
ALTER TABLE tasks ADD COLUMN listed {bigint};
ALTER TABLE tasks ADD COLUMN listed_bytes {bigint};
ALTER TABLE logins ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
ALTER TABLE logins ADD COLUMN changed_at {real} NOT NULL DEFAULT 0
""",
    # 9: each NVR's running (leased) tasks, kept up to date by triggers on tasks, for the claim's
    # check of the NVR's cap. Counting leased tasks instead read, on PostgreSQL, every index entry
    # that a lease had left behind since the table's last VACUUM: a claim slowed with every task
    # done (a complete-and-claim took 1.9 ms, then 4.4 ms after 20,000 tasks, until a vacuum ran).
    # The triggers come before the count: on PostgreSQL creating them locks out other writers of
    # tasks (a coordinator of the older version still running) until this commits, so no change
    # falls between the count and the triggers.
    """
ALTER TABLE nvrs ADD COLUMN running INTEGER NOT NULL DEFAULT 0;
{running_triggers}
UPDATE nvrs SET running = (SELECT count(*) FROM tasks t WHERE t.state = 'leased' AND t.server = nvrs.server)
""",
]
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = ("schedules", "tasks", "attempts", "nvrs", "events", "settings", "workers", "logins", "files")  # in foreign-key order
_END = re.compile(r";[ \t]*(?:\n|$)")


def statements(script: str) -> list[str]:
    """A migration's statements (see the module's docstring for where one ends)."""
    return [s for s in _END.split(script) if s.strip()]
