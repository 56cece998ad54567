"""The protocol's transactions in SQL, shared by the SQLite and PostgreSQL stores.

The statements here are plain SQL that both databases run unchanged (`?`
placeholders; the PostgreSQL store translates them). What differs — connecting,
the schema and its migrations, how a transaction starts, and how concurrent
coordinators are kept apart — lives in `sqlite.py` and `postgres.py`.
"""
from __future__ import annotations

import functools
import json
import random
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ConfigError, Conflict, LeaseLost, TaskNotFound
from .base import Claim, ImportResult, Policy, State, Store, TaskSpec
from .reads import SQLReads

# The schema, one entry per version: a store at version N runs entries N+1... on
# start, in one transaction. `{id}`, `{real}`... are the dialect's types (TYPES).
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
]
SCHEMA_VERSION = len(MIGRATIONS)
TABLES = ("tasks", "attempts", "nvrs", "events", "settings", "workers")  # in foreign-key order
PRUNE_EVERY = 100  # write transactions between two prunings of the event feed
IDLE_WRITE = 15.0  # seconds between two writes of an idle worker's last poll (at most half a lease)


def retried(method):
    """Run a store method again when the database aborted its transaction to break a deadlock.

    Only PostgreSQL does that (several coordinators lock rows in different orders);
    the whole transaction was rolled back, so running it again is safe.
    """
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        for attempt in range(6):
            try:
                return method(self, *args, **kwargs)
            except self.RETRY:
                if attempt == 5:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2 ** attempt))
    return run


class SQLStore(SQLReads, Store):
    """Task state in a SQL database; subclasses connect and set the dialect's few differences."""

    RETRY: tuple[type[BaseException], ...] = ()  # errors after which a transaction is run again
    LOCK_ROWS = ""  # appended to SELECTs of rows a transaction is about to change
    NULLS_LAST = ""  # SQLite sorts NULLs last in DESC order already; PostgreSQL must be told
    TRUNC = "CAST({} AS INTEGER)"  # a number's integer part (PostgreSQL's CAST rounds)
    TYPES: dict[str, str] = {}  # the schema's types in this dialect (see MIGRATIONS)

    def __init__(self, policy: Policy):
        super().__init__(policy)
        self._local = threading.local()
        # When idle workers were last seen, in memory: an idle poll costs a read, and a
        # write only every IDLE_WRITE seconds per worker, so that other coordinators
        # sharing the database see idle workers too.
        self._idle_seen: dict[str, float] = {}
        self._idle_written: dict[str, float] = {}
        self._feed_writes = 0  # transactions that wrote events, for pruning now and then

    # --- connections and transactions (the dialect's part) --------------------------
    def _begin(self, db) -> None:
        db.execute("BEGIN")

    def _insert_many(self, db, sql: str, rows: list[tuple]) -> list[int | None]:
        """Run an INSERT ... ON CONFLICT DO NOTHING per row; each new row's id, or None where it existed."""
        raise NotImplementedError

    def _before_feed(self, db) -> None:
        """Called just before a transaction writes its events: they must get ids in commit order."""

    def _migrate(self, db, version: int, where: str) -> Iterator[int]:
        """Bring the schema from `version` to SCHEMA_VERSION inside the caller's transaction.

        Yields each version reached, for the dialect to record. A database written by a
        newer taskserver is refused rather than misread.
        """
        if version > SCHEMA_VERSION:
            raise ConfigError(f"{where} was written by a newer taskserver (schema {version}, this one knows "
                              f"{SCHEMA_VERSION}); upgrade taskserver")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in script.format(**self.TYPES, nulls_last=self.NULLS_LAST).split(";"):
                if statement.strip():
                    db.execute(statement)
            yield number

    def _db(self):
        """This thread's connection: in autocommit mode, its rows answer to row[0] and row["name"]."""
        raise NotImplementedError

    @contextmanager
    def _write(self) -> Iterator:
        """One write transaction: committed on success, rolled back on any error.

        Events are gathered while it runs and written last, so that the feed's ids
        follow commit order even with several coordinators writing at once.
        """
        db = self._db()
        self._begin(db)
        self._local.events = []
        try:
            yield db
            if self._local.events:
                self._before_feed(db)
                db.executemany("INSERT INTO events (at, kind, task_id, state, worker, detail) VALUES (?,?,?,?,?,?)",
                               self._local.events)
                self._feed_writes += 1
                if self._feed_writes % PRUNE_EVERY == 0:
                    # The feed serves streams that reconnect, not history (attempts keep that).
                    db.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
                               (self.policy.events_kept,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _begin_snapshot(self, db) -> None:
        """Start a read-only transaction that sees one instant of the database throughout."""
        db.execute("BEGIN")

    def _after_copy(self, db) -> None:
        """Called after copy_from wrote rows with their ids (PostgreSQL moves its id sequences)."""

    def copy_from(self, source: SQLStore) -> dict[str, int]:
        """Copy a deployment's whole state from `source`, ids and leases included, atomically.

        This store must hold no tasks. The source is read as of one instant, so a
        coordinator may still be running on it; stop it before the copy for a clean
        cut-over, or its later changes stay behind. Returns rows copied per table.
        """
        counts = {}
        src = source._db()
        source._begin_snapshot(src)
        try:
            if not src.execute("SELECT count(*) FROM tasks").fetchone()[0]:
                raise ConfigError(f"{source.url} holds no tasks; nothing to migrate")
            with self._write() as db:
                if db.execute("SELECT count(*) FROM tasks").fetchone()[0]:
                    raise ConfigError(f"{self.url} already holds tasks; migrate into an empty database")
                for table in reversed(TABLES):
                    db.execute(f"DELETE FROM {table}")
                for table in TABLES:
                    cur = src.execute(f"SELECT * FROM {table} ORDER BY 1")
                    columns = [d[0] for d in cur.description]
                    names = ", ".join(f'"{c}"' for c in columns)
                    insert = f"INSERT INTO {table} ({names}) VALUES ({','.join('?' * len(columns))})"
                    counts[table] = 0
                    while batch := cur.fetchmany(5000):  # a million tasks need not fit in memory at once
                        db.executemany(insert, [tuple(r[i] for i in range(len(columns))) for r in batch])
                        counts[table] += len(batch)
                self._after_copy(db)
        finally:
            src.execute("ROLLBACK")
        return counts

    # --- import ------------------------------------------------------------------
    @retried
    def add(self, specs: list[TaskSpec]) -> ImportResult:
        result = ImportResult()
        now = time.time()
        caps: dict[str, int | None] = {}  # per NVR, the last cap the rows give; None keeps the stored one
        for spec in specs:
            if spec.max_parallel is not None or spec.server not in caps:
                caps[spec.server] = spec.max_parallel
        with self._write() as db:
            db.executemany("INSERT INTO nvrs (server, max_parallel) VALUES (?, ?) ON CONFLICT (server) DO UPDATE"
                           " SET max_parallel = coalesce(excluded.max_parallel, nvrs.max_parallel)", list(caps.items()))
            ids = self._insert_many(
                db,
                "INSERT INTO tasks (key, name, server, username, password, cameras, start, \"end\", priority,"
                " source, grp, span, takes_earlier, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (key) DO NOTHING",
                [(spec.key, spec.name, spec.server, spec.username, spec.password, ",".join(spec.cameras),
                  spec.start, spec.end, spec.priority, spec.source, spec.group or spec.key, spec.span,
                  int(spec.takes_earlier), now) for spec in specs],
            )
            result.ids = [i for i in ids if i is not None]
            result.added = len(result.ids)
            existing = [spec for spec, new_id in zip(specs, ids, strict=True) if new_id is None]
            result.existing = len(existing)
            if existing:
                # A corrected password reaches tasks not yet done (e.g. after "wrong password").
                result.updated = db.executemany(
                    "UPDATE tasks SET password = ? WHERE key = ? AND password != ? AND state != 'done'",
                    [(spec.password, spec.key, spec.password) for spec in existing],
                ).rowcount
            if result.added:
                self._event(db, now, "imported", detail=f"{result.added} task(s) added")
        return result

    @retried
    def requeue(self, task_ids: list[int] | None = None, server: str | None = None,
                states: tuple[str, ...] = ("failed", "cancelled")) -> int:
        where, params = f"state IN ({','.join('?' * len(states))})", list(states)
        if task_ids is not None:
            where += f" AND id IN ({','.join('?' * len(task_ids))})"
            params += task_ids
        if server is not None:
            where += " AND server = ?"
            params.append(server)
        with self._write() as db:
            db.execute(
                "UPDATE nvrs SET failures = 0, down_since = NULL, backoff_until = 0"
                f" WHERE server IN (SELECT server FROM tasks WHERE {where})", params,
            )
            count = db.execute(
                "UPDATE tasks SET state = 'queued', attempts = 0, ready_at = 0, lease_id = NULL, finished = NULL"
                f" WHERE {where}", params,
            ).rowcount
            if count:
                self._event(db, time.time(), "requeued", task_id=task_ids[0] if task_ids and count == 1 else None,
                            state=State.QUEUED.value, detail=f"{count} task(s) requeued")
            return count

    # --- the worker protocol -------------------------------------------------------
    @retried
    def claim(self, worker: str) -> Claim:
        now = time.time()
        if self._paused():
            self._idle(worker, now)
            return Claim("wait", retry_after=self.policy.max_wait)
        if not self._anything_ready(now):
            self._idle(worker, now)
            return self._nothing_ready(self._db(), now)
        with self._write() as db:
            self._expire(db, now)
            return self._claim(db, worker, now, paused=False)  # checked just above

    def _claim(self, db, worker: str, now: float, paused: bool) -> Claim:
        """The claim itself, inside the caller's transaction (a claim, or a completion's next claim)."""
        if paused:
            self._seen(db, worker, now, None)
            return Claim("wait", retry_after=self.policy.max_wait)
        task = self._next(db, now)  # the whole row, locked for this transaction
        if task is None:
            self._seen(db, worker, now, None)
            return self._nothing_ready(db, now)
        lease_id = secrets.token_hex(16)
        attempt = task["attempts"] + 1
        db.execute(
            "UPDATE tasks SET state = 'leased', lease_id = ?, lease_expires = ?, worker = ?,"
            " attempts = ?, started = coalesce(started, ?) WHERE id = ? AND state = 'queued'",
            (lease_id, now + self.policy.lease_seconds, worker, attempt, now, task["id"]),
        )
        db.execute(
            "INSERT INTO attempts (task_id, lease_id, worker, started) VALUES (?,?,?,?)",
            (task["id"], lease_id, worker, now),
        )
        self._seen(db, worker, now, task["id"])
        self._event(db, now, "leased", task["id"], State.LEASED.value, worker, f"attempt {attempt}")
        return Claim(
            "task",
            task={
                "id": task["id"], "key": task["key"], "name": task["name"], "server": task["server"],
                "username": task["username"], "password": task["password"],
                "cameras": [c for c in task["cameras"].split(",") if c],
                "start": task["start"], "end": task["end"], "takes_earlier": bool(task["takes_earlier"]),
                "attempt": attempt, "max_attempts": self.policy.max_attempts,
            },
            lease={"id": lease_id, "seconds": self.policy.lease_seconds},
        )

    def _idle(self, worker: str, now: float) -> None:
        """Note an idle poll: in memory always, in the database now and then."""
        self._idle_seen[worker] = now
        if now - self._idle_written.get(worker, float("-inf")) >= min(IDLE_WRITE, self.policy.lease_seconds / 2):
            self._idle_written[worker] = now
            with self._write() as db:
                self._seen(db, worker, now, None)

    def _anything_ready(self, now: float) -> bool:
        """A read-only look: is there queued work, an expired lease or a retry due?"""
        return bool(self._db().execute(
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE state = 'queued')"
            " OR EXISTS (SELECT 1 FROM tasks WHERE state = 'leased' AND lease_expires < ?)"
            " OR EXISTS (SELECT 1 FROM tasks WHERE state = 'waiting' AND ready_at <= ?)", (now, now),
        ).fetchone()[0])

    def _next(self, db, now: float):
        """The task to hand out: the best head among the NVR queues that may take one more.

        An NVR resting after busy/unreachable answers, or already running its cap of
        tasks, is skipped. Among the rest: priority, then the longest range (so the
        long tasks do not all end up last), then the NVR with the fewest running
        tasks (so every NVR works), then sheet order. One index probe per NVR, so a
        claim costs the same with a hundred or a million tasks queued.
        """
        return self._candidates(db, now, 1).fetchone()

    def _candidates(self, db, now: float, limit: int):
        """NVR queue heads that may be handed out now, best first (see `_next`)."""
        return db.execute(
            "SELECT t.* FROM (SELECT n.server, n.max_parallel,"
            "   (SELECT count(*) FROM tasks l WHERE l.state = 'leased' AND l.server = n.server) AS running,"
            "   (SELECT q.id FROM tasks q WHERE q.state = 'queued' AND q.server = n.server"
            f"    ORDER BY q.priority DESC, q.span DESC{self.NULLS_LAST}, q.id LIMIT 1) AS head"
            "  FROM nvrs n WHERE n.backoff_until <= ?) AS c"
            " JOIN tasks t ON t.id = c.head"
            " WHERE c.running < coalesce(c.max_parallel, ?)"
            f" ORDER BY t.priority DESC, t.span DESC{self.NULLS_LAST}, c.running, t.id LIMIT ?",
            (now, self.policy.per_nvr, limit),
        )

    def _nothing_ready(self, db, now: float) -> Claim:
        row = db.execute(
            "SELECT (SELECT min(ready_at) FROM tasks WHERE state = 'waiting') AS ready,"
            " (SELECT min(lease_expires) FROM tasks WHERE state = 'leased') AS expires,"
            " EXISTS (SELECT 1 FROM tasks WHERE state = 'queued') AS held,"
            " (SELECT min(backoff_until) FROM nvrs WHERE backoff_until > ?) AS rested",
            (now,),
        ).fetchone()
        if row["ready"] is None and row["expires"] is None and not row["held"]:
            return Claim("drained")
        # Queued work held back by a cap or a resting NVR, and leased work, may become
        # ready at any moment; never tell a worker to wait longer than max_wait.
        soonest = min((t for t in (row["ready"], row["expires"], row["rested"]) if t is not None),
                      default=now + self.policy.max_wait)
        return Claim("wait", retry_after=round(min(self.policy.max_wait, max(0.1, soonest - now)), 2))

    @retried
    def heartbeat(self, task_id: int, lease_id: str, progress: dict | None) -> float:
        now = time.time()
        expires = now + self.policy.lease_seconds
        with self._write() as db:
            self._expire(db, now)
            cur = db.execute(
                "UPDATE tasks SET lease_expires = ?, progress = coalesce(?, progress)"
                " WHERE id = ? AND lease_id = ? AND state = 'leased'",
                (expires, _json(progress), task_id, lease_id),
            )
            lost = None if cur.rowcount else self._current_state(db, task_id)
            if lost is None:
                db.execute("UPDATE workers SET last_seen = ? WHERE task_id = ?", (now, task_id))
        if lost is not None:
            raise LeaseLost(task_id, lost)
        return self.policy.lease_seconds

    @retried
    def complete(self, task_id: int, lease_id: str, result: dict, next_for: str | None = None) -> Claim | None:
        now = time.time()
        lost = None
        answer = None
        files, size = _int(result.get("files")), _int(result.get("bytes"))
        with self._write() as db:
            self._expire(db, now)
            cur = db.execute(
                "UPDATE tasks SET state = 'done', result = ?, files = ?, bytes = ?, finished = ?,"
                " lease_expires = NULL, last_error = NULL WHERE id = ? AND lease_id = ? AND state = 'leased'",
                (_json(result), files, size, now, task_id, lease_id),
            )
            if cur.rowcount:
                self._end_attempt(db, lease_id, now, "done", None, done=1)
                # The NVR answered: it is well again, and its figures grow.
                db.execute(
                    "UPDATE nvrs SET files = files + ?, bytes = bytes + ?, failures = 0, down_since = NULL,"
                    " backoff_until = 0, last_error = NULL WHERE server = (SELECT server FROM tasks WHERE id = ?)",
                    (files or 0, size or 0, task_id),
                )
            elif db.execute(
                "SELECT 1 FROM tasks WHERE id = ? AND lease_id = ? AND state = 'done'", (task_id, lease_id)
            ).fetchone() is None:
                lost = LeaseLost(task_id, self._current_state(db, task_id))
            if next_for and lost is None:
                # The next claim rides in the same transaction: one commit per task at steady state.
                answer = self._claim(db, next_for, now, paused=self._paused())
        if lost is not None:
            raise lost
        return answer

    @retried
    def fail(self, task_id: int, lease_id: str, error: str, permanent: bool = False,
             device: str | None = None) -> str:
        now = time.time()
        with self._write() as db:
            self._expire(db, now)
            row = db.execute(
                "SELECT attempts, server FROM tasks WHERE id = ? AND lease_id = ? AND state = 'leased'",
                (task_id, lease_id),
            ).fetchone()
            if row is not None and device and not permanent:
                return self._rest_nvr(db, now, task_id, lease_id, row["server"], error, device)
            if row is not None:
                give_up = permanent or row["attempts"] >= self.policy.max_attempts
                state = State.FAILED if give_up else State.WAITING
                ready = now if give_up else now + self.policy.backoff(row["attempts"])
                db.execute(
                    "UPDATE tasks SET state = ?, last_error = ?, ready_at = ?, lease_expires = NULL,"
                    " finished = CASE WHEN ? THEN ? ELSE finished END WHERE id = ? AND lease_id = ?",
                    (state.value, error, ready, give_up, now, task_id, lease_id),
                )
                self._end_attempt(db, lease_id, now, "failed", error, failed=1)
                return state.value
            current = self._current_state(db, task_id)
            repeat = db.execute(
                "SELECT state FROM tasks WHERE id = ? AND lease_id = ? AND state IN ('waiting', 'failed')",
                (task_id, lease_id),
            ).fetchone()
        if repeat is None:
            raise LeaseLost(task_id, current)
        return repeat["state"]

    @retried
    def release(self, task_id: int, lease_id: str) -> None:
        now = time.time()
        with self._write() as db:
            cur = db.execute(
                "UPDATE tasks SET state = 'queued', attempts = attempts - 1, lease_id = NULL,"
                " lease_expires = NULL, worker = NULL WHERE id = ? AND lease_id = ? AND state = 'leased'",
                (task_id, lease_id),
            )
            if cur.rowcount:
                self._end_attempt(db, lease_id, now, "released", None)
                return
            state = self._current_state(db, task_id)
        raise LeaseLost(task_id, state)

    def _rest_nvr(self, db, now: float, task_id: int, lease_id: str, server: str, error: str, device: str) -> str:
        """Blame the NVR, not the task: it rests, its tasks wait, no attempt is charged."""
        db.execute(
            "UPDATE nvrs SET failures = failures + 1, down_since = coalesce(down_since, ?), last_error = ?"
            " WHERE server = ?", (now, error, server),
        )
        nvr = db.execute("SELECT failures, down_since FROM nvrs WHERE server = ?", (server,)).fetchone()
        if now - nvr["down_since"] >= self.policy.nvr_give_up:
            final = (f"NVR {server} {device} for {now - nvr['down_since']:.0f} s (limit"
                     f" {self.policy.nvr_give_up:.0f} s); last error: {error}")
            db.execute(
                "UPDATE tasks SET state = 'failed', last_error = ?, finished = ?, lease_expires = NULL"
                " WHERE (id = ? AND lease_id = ?) OR (server = ? AND state IN ('queued', 'waiting'))",
                (final, now, task_id, lease_id, server),
            )
            self._end_attempt(db, lease_id, now, "failed", error, failed=1)
            return State.FAILED.value
        until = now + self.policy.device_delay(nvr["failures"])
        db.execute("UPDATE nvrs SET backoff_until = CASE WHEN backoff_until > ? THEN backoff_until ELSE ? END"
                   " WHERE server = ?", (until, until, server))
        db.execute(
            "UPDATE tasks SET state = 'waiting', attempts = attempts - 1, last_error = ?, ready_at = ?,"
            " lease_expires = NULL WHERE id = ? AND lease_id = ?",
            (error, until, task_id, lease_id),
        )
        self._end_attempt(db, lease_id, now, f"nvr {device}", error)
        return State.WAITING.value

    # --- steering ------------------------------------------------------------------
    @retried
    def cancel(self, task_id: int) -> str:
        now = time.time()
        with self._write() as db:
            lease = db.execute("SELECT lease_id FROM tasks WHERE id = ? AND state = 'leased'", (task_id,)).fetchone()
            cur = db.execute(
                "UPDATE tasks SET state = 'cancelled', lease_id = NULL, lease_expires = NULL, finished = ?"
                " WHERE id = ? AND state IN ('queued', 'waiting', 'leased')", (now, task_id),
            )
            if lease is not None and lease["lease_id"]:
                self._end_attempt(db, lease["lease_id"], now, "cancelled", None)
            elif cur.rowcount:
                self._event(db, now, "cancelled", task_id, State.CANCELLED.value)
            state = self._current_state(db, task_id)
        if not cur.rowcount and state != State.CANCELLED:
            raise Conflict(f"task {task_id} is {state}; only queued, waiting or running tasks can be cancelled")
        return state

    @retried
    def set_paused(self, paused: bool) -> None:
        with self._write() as db:
            db.execute("INSERT INTO settings (name, value) VALUES ('paused', ?) ON CONFLICT (name) DO UPDATE"
                       " SET value = excluded.value", ("1" if paused else "0",))

    def _paused(self) -> bool:
        row = self._db().execute("SELECT value FROM settings WHERE name = 'paused'").fetchone()
        return row is not None and row["value"] == "1"

    # --- helpers inside a transaction ----------------------------------------------
    def _expire(self, db, now: float) -> None:
        """Re-queue (or fail) tasks whose lease ran out; make backed-off tasks ready."""
        for row in db.execute(
            "SELECT id, attempts, worker, lease_id FROM tasks WHERE state = 'leased' AND lease_expires < ?"
            + self.LOCK_ROWS, (now,)
        ).fetchall():
            error = f"lease expired: worker {row['worker']} stopped reporting"
            give_up = row["attempts"] >= self.policy.max_attempts
            if db.execute(
                "UPDATE tasks SET state = ?, last_error = ?, lease_id = NULL, lease_expires = NULL, worker = NULL,"
                " finished = CASE WHEN ? THEN ? ELSE finished END WHERE id = ? AND lease_id = ? AND state = 'leased'",
                (State.FAILED.value if give_up else State.QUEUED.value, error, give_up, now, row["id"],
                 row["lease_id"]),
            ).rowcount:
                self._end_attempt(db, row["lease_id"], now, "expired", error)
        db.execute("UPDATE tasks SET state = 'queued' WHERE state = 'waiting' AND ready_at <= ?", (now,))

    def _end_attempt(self, db, lease_id: str, now: float, outcome: str, error: str | None,
                     done: int = 0, failed: int = 0) -> None:
        db.execute(
            "UPDATE attempts SET ended = ?, outcome = ?, error = ? WHERE lease_id = ?",
            (now, outcome, error, lease_id),
        )
        row = db.execute("SELECT a.task_id, t.state, a.worker FROM attempts a JOIN tasks t ON t.id = a.task_id"
                         " WHERE a.lease_id = ?", (lease_id,)).fetchone()
        if row is not None:
            self._event(db, now, outcome, row["task_id"], row["state"], row["worker"], error)
        db.execute(
            "UPDATE workers SET last_seen = ?, task_id = NULL, done = done + ?, failed = failed + ?"
            " WHERE name = (SELECT worker FROM attempts WHERE lease_id = ?)",
            (now, done, failed, lease_id),
        )

    def _event(self, db, now: float, kind: str, task_id: int | None = None, state: str | None = None,
               worker: str | None = None, detail: str | None = None) -> None:
        """Record a change in the feed that /api/events streams (never a password), at commit."""
        self._local.events.append((now, kind, task_id, state, worker, detail))

    def _seen(self, db, worker: str, now: float, task_id: int | None) -> None:
        db.execute(
            "INSERT INTO workers (name, first_seen, last_seen, task_id) VALUES (?,?,?,?)"
            " ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen, task_id = excluded.task_id",
            (worker, now, now, task_id),
        )

    def _current_state(self, db, task_id: int) -> str:
        row = db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        return row["state"]


def _json(value) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
