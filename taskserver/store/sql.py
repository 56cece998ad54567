"""The protocol's transactions in SQL, shared by the SQLite and PostgreSQL stores.

The statements here are plain SQL that both databases run unchanged (`?`
placeholders; the PostgreSQL store translates them). What differs — connecting,
how a transaction starts, and how concurrent coordinators are kept apart — lives
in `sqlite.py` and `postgres.py`; the schema is in `schema.py`.

Every change of a task's state goes through `_move`, which executes one row of
the transition table (`base.TRANSITIONS`): an UPDATE guarded by the allowed
source states, whose changed rows each get one event in the change feed.
"""
from __future__ import annotations

import collections
import functools
import json
import random
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice

from ..errors import ConfigError, Conflict, LeaseLost, TaskNotFound
from ..vault import CHECK, Vault
from .base import TRANSITIONS, Claim, Clock, ImportResult, Policy, Schedule, State, Store, TaskSpec
from .reads import SQLReads
from .schema import MIGRATIONS, SCHEMA_VERSION, TABLES, statements

ADD_BATCH = 5000  # tasks inserted per statement batch by an import
_TASK_COLUMNS = ("key", "name", "server", "username", "cameras", "start", '"end"', "priority", "source", "grp", "span",
                 "takes_earlier", "timezone", "tls_fingerprint", "mode", "options", "schedule_id", "created")
PRUNE_EVERY = 100  # write transactions between two prunings of the event feed
IDLE_WRITE = 15.0  # seconds between two writes of an idle worker's last poll (at most half a lease)
HELD = 1e18  # ready_at of a task held for a refused password: never ready until released
Q, L, W, D, F, C = (f"'{s.value}'" for s in State)  # states as SQL literals, from the one enum
MADE_HERE_KINDS = frozenset({"imported", "requeued", "schedule fired", "scheduled", "cancelled", "paused", "resumed"})
_REQUEUE = "attempts = 0, ready_at = 0, lease_id = NULL, finished = NULL, requeued = requeued + 1"


def login_on_trial(server: str, username: str, trials: int) -> str:
    """SQL, true while an NVR user's password is on trial (not yet seen to work) and `trials` tasks of it run.

    Such a pair gets no more tasks, whatever the NVR's cap: a wrong password then costs
    the device at most `trials` failed logins (Policy.login_trials), not one per parallel
    slot (Hikvision devices lock a client out after 5-7).
    """
    return (f"EXISTS (SELECT 1 FROM logins g WHERE g.server = {server} AND g.username = {username}"
            f" AND g.verified = 0 AND (SELECT count(*) FROM tasks r WHERE r.state = {L}"
            f" AND r.server = {server} AND r.username = {username}) >= {int(trials)})")


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
    TYPES: dict[str, str] = {}  # the schema's types in this dialect (see schema.MIGRATIONS)
    RUNNING_TRIGGERS = ""  # the triggers that keep nvrs.running, in this dialect (schema.MIGRATIONS, 9)

    def __init__(self, policy: Policy, vault: Vault, clock: Clock = time.time):
        super().__init__(policy, clock)
        self.vault = vault
        self._local = threading.local()
        # When idle workers were last seen, in memory: an idle poll costs a read, and a
        # write only every IDLE_WRITE seconds per worker, so that other coordinators
        # sharing the database see idle workers too.
        self._idle_seen: dict[str, float] = {}
        self._idle_written: dict[str, float] = {}
        self._feed_writes = 0  # transactions that wrote events, for pruning now and then
        self._passwords: dict[str, str] = {}  # sealed -> plain, so that a claim opens each password once
        # (at, kind) of the changes of MADE_HERE_KINDS this process wrote: the coordinator logs those
        # it did not make itself (a command's import or requeue, another coordinator's schedule).
        self.made_here: collections.deque = collections.deque(maxlen=10_000)

    # --- connections and transactions (the dialect's part) --------------------------
    def _insert_many(self, db, table: str, columns: tuple[str, ...], rows: list[tuple]) -> list[int]:
        """Insert the rows, skipping those whose `key` is taken (ON CONFLICT DO NOTHING); the new rows' ids, in order."""
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
            for statement in statements(script.format(**self.TYPES, nulls_last=self.NULLS_LAST,
                                                      running_triggers=self.RUNNING_TRIGGERS)):
                db.execute(statement)
            yield number
        self._check_vault(db)

    def _check_vault(self, db) -> None:
        """Refuse a key that cannot open this database's passwords; seal any plaintext left by an older version."""
        row = db.execute("SELECT value FROM settings WHERE name = 'vault'").fetchone()
        if row is None:
            db.execute("INSERT INTO settings (name, value) VALUES ('vault', ?)", (self.vault.seal(CHECK),))
        else:
            try:
                opened = self.vault.open(row["value"]) == CHECK
            except ConfigError:
                opened = False
            if not opened:
                raise ConfigError(f"the key from {self.vault.origin} does not open this database's passwords"
                                  " (they were sealed with another key: give the key this database was made with)")
        for login in db.execute("SELECT server, username, password FROM logins").fetchall():
            if not self.vault.sealed(login["password"]):
                db.execute("UPDATE logins SET password = ? WHERE server = ? AND username = ?",
                           (self.vault.seal(login["password"]), login["server"], login["username"]))

    def rotate_key(self) -> int:
        """Seal every password (and the key check) with the vault's newest key; return how many."""
        with self._write() as db:
            logins = db.execute("SELECT server, username, password FROM logins").fetchall()
            for login in logins:
                db.execute("UPDATE logins SET password = ? WHERE server = ? AND username = ?",
                           (self.vault.reseal(login["password"]), login["server"], login["username"]))
            db.execute("UPDATE settings SET value = ? WHERE name = 'vault'", (self.vault.seal(CHECK),))
        return len(logins)

    def _db(self):
        """This thread's connection: in autocommit mode, its rows answer to row[0] and row["name"]."""
        raise NotImplementedError

    @contextmanager
    def _transaction(self) -> Iterator:
        """A transaction on this thread's connection: committed on success, rolled back on any error."""
        db = self._db()
        db.execute("BEGIN")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator:
        """One write transaction: committed (durably) before it returns, rolled back on any error.

        Events are gathered while it runs and written last, so that the feed's ids
        follow commit order even with several coordinators writing at once.
        """
        with self._transaction() as db:
            self._local.events = []
            self._local.writing = db
            try:
                yield db
                self._write_events(db)
            finally:
                self._local.writing = None
        # Committed, whichever way the dialect commits: the coordinator's log tells its own changes apart.
        self.made_here.extend(e[:2] for e in self._local.events if e[1] in MADE_HERE_KINDS)

    def _write_events(self, db) -> None:
        """Write the transaction's gathered events, last before its commit; prune the feed now and then."""
        if self._local.events:
            self._before_feed(db)
            db.executemany("INSERT INTO events (at, kind, task_id, state, worker, detail) VALUES (?,?,?,?,?,?)",
                           self._local.events)
            self._feed_writes += 1
            if self._feed_writes % PRUNE_EVERY == 0:
                # The feed serves streams that reconnect, not history (attempts keep that).
                db.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?",
                           (self.policy.events_kept,))

    def _move(self, db, name: str, where: str, params: tuple = (), sets: str = "", values: tuple = (),
              now: float | None = None, detail: str | None = None) -> list:
        """Apply transition `name` to the tasks matching `where`; return the rows changed (id, worker, lease_id).

        The UPDATE changes only rows in one of the transition's source states, so a
        task never moves along a path the table does not allow, and each row it
        changed gets one event in the feed.
        """
        rows = db.execute(*self._move_sql(name, where, params, sets, values)).fetchall()
        self._moved(name, rows, now, detail)
        return rows

    def _move_sql(self, name: str, where: str, params: tuple = (), sets: str = "", values: tuple = (),
                  returning: str = "id, worker, lease_id") -> tuple[str, tuple]:
        """The guarded UPDATE of transition `name` and its parameters (see `_move`)."""
        move = TRANSITIONS[name]
        sources = sorted(s.value for s in move.sources)
        return (f"UPDATE tasks SET state = ?{', ' + sets if sets else ''} WHERE ({where})"
                f" AND state IN ({','.join('?' * len(sources))}) RETURNING {returning}",
                (move.target.value, *values, *params, *sources))

    def _moved(self, name: str, rows: list, now: float | None = None, detail=None) -> None:
        """One feed event per row that transition `name` changed (`detail`: text, or a function of the row)."""
        at = self.clock() if now is None else now
        target = TRANSITIONS[name].target.value
        self._local.events.extend((at, name, r["id"], target, r["worker"], detail(r) if callable(detail) else detail)
                                  for r in rows)

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
        Sealed passwords are copied as they are: the new database needs the same key.
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
    def add(self, specs: Iterable[TaskSpec]) -> ImportResult:
        result = ImportResult()
        with self._write() as db:
            self._add(db, specs, self.clock(), result)
        return result

    def _add(self, db, specs: Iterable[TaskSpec], now: float, result: ImportResult,
             schedule_id: int | None = None) -> None:
        """Queue specs not stored yet, inside the caller's transaction; count what happened in `result`.

        `specs` is read twice (a list, or a sheet spooled to disk): first for the NVRs'
        caps and passwords, then inserted in batches.
        """
        caps: dict[str, int | None] = {}  # per NVR, the last cap the rows give; None keeps the stored one
        passwords: dict[tuple[str, str], str | None] = {}  # per NVR and user, the last password the rows give
        for spec in specs:
            if spec.max_parallel is not None or spec.server not in caps:
                caps[spec.server] = spec.max_parallel
            passwords[spec.server, spec.username] = spec.password
        db.executemany("INSERT INTO nvrs (server, max_parallel) VALUES (?, ?) ON CONFLICT (server) DO UPDATE"
                       " SET max_parallel = coalesce(excluded.max_parallel, nvrs.max_parallel)", list(caps.items()))
        refused = self._store_passwords(db, passwords, now, result)
        new_ids, count = [], 0
        for batch in _batches(specs, ADD_BATCH):  # a million rows need not be in memory twice
            ids = self._insert_many(
                db, "tasks", _TASK_COLUMNS,
                [(spec.key, spec.name, spec.server, spec.username, ",".join(spec.cameras), spec.start, spec.end,
                  spec.priority, spec.source, spec.group or spec.key, spec.span, int(spec.takes_earlier),
                  spec.timezone, spec.tls_fingerprint, spec.mode, _json(dict(spec.options)) if spec.options else None,
                  schedule_id, now) for spec in batch],
            )
            new_ids += ids
            count += len(batch)
        result.ids += new_ids
        result.added += len(new_ids)
        result.existing += count - len(new_ids)
        for server, username in refused:  # new tasks of a user whose password is still refused wait with it
            self._hold(db, server, username, now)
        if new_ids:
            self._event(now, "imported", detail=f"{len(new_ids)} task(s) added")

    def _store_passwords(self, db, passwords: dict[tuple[str, str], str | None], now: float,
                         result: ImportResult) -> list[tuple[str, str]]:
        """Store each NVR user's password; a changed one is a correction. Return the users still refused.

        A password of None (a schedule's run) keeps the stored one.
        """
        stored = {(r["server"], r["username"]): r for r in db.execute("SELECT * FROM logins").fetchall()}
        refused = []
        for (server, username), password in passwords.items():
            login = stored.get((server, username))
            if password is None:
                if login is not None and login["refused_at"] is not None:
                    refused.append((server, username))
            elif login is None:
                db.execute("INSERT INTO logins (server, username, password) VALUES (?, ?, ?)",
                           (server, username, self.vault.seal(password)))
            elif self._open(login["password"]) != password:
                db.execute("UPDATE logins SET password = ?, verified = 0, changed_at = ? WHERE server = ? AND username = ?",
                           (self.vault.seal(password), now, server, username))
                result.updated += 1
                if login["refused_at"] is not None:
                    self._let_go(db, server, username, now, "password corrected")
            elif login["refused_at"] is not None:
                refused.append((server, username))
        return refused

    def _open(self, sealed: str) -> str:
        password = self._passwords.get(sealed)
        if password is None:
            password = self._passwords[sealed] = self.vault.open(sealed)
        return password

    @retried
    def requeue(self, task_ids: list[int] | None = None, server: str | None = None,
                cancelled: bool = False, by: str | None = None) -> list[int]:
        now = self.clock()
        where, params = f"state IN ({F}{', ' + C if cancelled else ''})", []
        if task_ids is not None:
            where += f" AND id IN ({','.join('?' * len(task_ids))})"
            params += task_ids
        if server is not None:
            where += " AND server = ?"
            params.append(server)
        with self._write() as db:
            return sorted(r["id"] for r in self._requeue(db, where, tuple(params), now, by and f"requeued {by}"))

    def _requeue(self, db, where: str, params: tuple, now: float, detail: str | None = None) -> list:
        """Fresh attempts for the tasks matching `where`; their NVRs start with a clean slate too."""
        db.execute("UPDATE nvrs SET failures = 0, down_since = NULL, backoff_until = 0"
                   f" WHERE server IN (SELECT server FROM tasks WHERE {where})", params)
        return self._move(db, "requeued", where, params, now=now, sets=_REQUEUE, detail=detail)

    # --- schedules -----------------------------------------------------------------
    @retried
    def add_schedules(self, schedules: list[Schedule]) -> ImportResult:
        result = ImportResult()
        now = self.clock()
        with self._write() as db:
            self._store_passwords(db, {(s.template.server, s.template.username): s.password for s in schedules},
                                  now, result)
            ids = self._insert_many(
                db, "schedules", ("key", "cadence", "zone", "template", "cursor", "next_fire", "source", "created"),
                [(s.key, s.cadence, s.zone, _json(s.template_dict()), s.cursor, s.next_fire, s.template.source, now)
                 for s in schedules],
            )
            result.ids = ids
            result.added, result.existing = len(result.ids), len(schedules) - len(result.ids)
            if result.added:
                self._event(now, "scheduled", detail=f"{result.added} schedule(s) added")
        return result

    def schedules(self, due_by: float | None = None) -> list[dict]:
        """Active schedules (those due by `due_by`, when given), soonest first."""
        where, params = "state = 'active'", []
        if due_by is not None:
            where += " AND next_fire <= ?"
            params.append(due_by)
        return [{**dict(r), "template": json.loads(r["template"])} for r in self._db().execute(
            f"SELECT * FROM schedules WHERE {where} ORDER BY next_fire, id", params).fetchall()]

    @retried
    def fire_schedule(self, schedule_id: int, expected_fire: float, cursor: str, next_fire: float,
                      specs: list[TaskSpec], retries: int) -> ImportResult | None:
        """One run of a schedule: its windows' tasks, and its earlier failed tasks once more (up to `retries` times).

        Fires once however many coordinators try: the schedule's next firing time is
        moved on only where it is still the one this coordinator read. None if another
        coordinator fired it first.
        """
        now = self.clock()
        result = ImportResult()
        with self._write() as db:
            if not db.execute(
                "UPDATE schedules SET cursor = ?, next_fire = ?, fired = fired + 1, last_fired = ?"
                " WHERE id = ? AND next_fire = ? AND state = 'active'",
                (cursor, next_fire, now, schedule_id, expected_fire),
            ).rowcount:
                return None
            self._add(db, specs, now, result, schedule_id)
            again = self._requeue(db, f"schedule_id = ? AND state = {F} AND requeued < ?", (schedule_id, retries),
                                  now, "a later run of its schedule tries it again")
            result.updated = len(again)
            self._event(now, "schedule fired", detail=f"schedule {schedule_id}: {result.added} task(s) added,"
                                                      f" {len(again)} failed one(s) tried again")
        return result

    @retried
    def cancel_schedule(self, schedule_id: int) -> bool:
        with self._write() as db:
            return bool(db.execute("UPDATE schedules SET state = 'cancelled' WHERE id = ? AND state = 'active'",
                                   (schedule_id,)).rowcount)

    # --- the worker protocol -------------------------------------------------------
    @retried
    def claim(self, worker: str) -> Claim:
        now = self.clock()
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
        moved = self._move(db, "leased", "id = ?", (task["id"],), now=now, detail=f"attempt {attempt}",
                           sets="lease_id = ?, lease_expires = ?, worker = ?, attempts = ?,"
                                " started = coalesce(started, ?), progress = NULL",
                           values=(lease_id, now + self.policy.lease_seconds, worker, attempt, now))
        if len(moved) != 1:  # the row is locked by this transaction: this cannot happen
            raise RuntimeError(f"task {task['id']} could not be leased")
        db.execute("INSERT INTO attempts (task_id, lease_id, worker, started) VALUES (?,?,?,?)",
                   (task["id"], lease_id, worker, now))
        self._seen(db, worker, now, task["id"])
        login = db.execute("SELECT password FROM logins WHERE server = ? AND username = ?",
                           (task["server"], task["username"])).fetchone()
        return self._handout(task, lease_id, attempt, login["password"] if login else None)

    def _handout(self, task, lease_id: str, attempt: int, sealed: str | None) -> Claim:
        """A claim's answer for a leased task row: what its worker needs, its password opened."""
        return Claim(
            "task",
            task={
                "id": task["id"], "key": task["key"], "name": task["name"], "server": task["server"],
                "username": task["username"], "password": self._open(sealed) if sealed else "",
                "cameras": [c for c in task["cameras"].split(",") if c],
                "start": task["start"], "end": task["end"], "takes_earlier": bool(task["takes_earlier"]),
                "timezone": task["timezone"], "tls_fingerprint": task["tls_fingerprint"], "mode": task["mode"],
                "options": json.loads(task["options"]) if task["options"] else {},
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
        """A read-only look: is there queued work, an expired lease, a retry or a give-up due?"""
        due, params = self._due(now)
        return bool(self._db().execute(f"SELECT EXISTS (SELECT 1 FROM tasks WHERE state = {Q}) OR {due}",
                                       params).fetchone()[0])

    def _due(self, now: float) -> tuple[str, tuple]:
        """An SQL condition, true when `_expire` has something to do: a lease ran out, a wait or a refusal is over."""
        return (f"EXISTS (SELECT 1 FROM tasks WHERE state = {L} AND lease_expires < ?)"
                f" OR EXISTS (SELECT 1 FROM tasks WHERE state = {W} AND ready_at <= ?)"
                " OR EXISTS (SELECT 1 FROM logins WHERE refused_at <= ?)", (now, now, now - self.policy.nvr_give_up))

    def _next(self, db, now: float):
        """The task to hand out: the best head among the NVR queues that may take one more.

        An NVR resting after busy/unreachable answers, or already running its cap of
        tasks, is skipped. Among the rest: priority, then the longest range (so the
        long tasks do not all end up last), then the NVR with the fewest running
        tasks (so every NVR works), then sheet order. One index probe per NVR, and each
        NVR's running tasks are a counter on its row (`nvrs.running`, kept by triggers),
        so a claim costs the same with a hundred or a million tasks queued or done.
        """
        return self._candidates(db, now, 1).fetchone()

    def _candidates(self, db, now: float, limit: int):
        """NVR queue heads that may be handed out now, best first (see `_next`)."""
        trials = self.policy.login_trials
        return db.execute(
            "SELECT t.* FROM (SELECT n.server, n.running,"
            f"   (SELECT q.id FROM tasks q WHERE q.state = {Q} AND q.server = n.server"
            f"    ORDER BY q.priority DESC, q.span DESC{self.NULLS_LAST}, q.id LIMIT 1) AS head"
            "  FROM nvrs n WHERE n.backoff_until <= ? AND n.running < coalesce(n.max_parallel, ?)) AS c"
            " JOIN tasks t ON t.id = c.head"
            f" WHERE (c.running < {int(trials)} OR NOT {login_on_trial('t.server', 't.username', trials)})"
            f" ORDER BY t.priority DESC, t.span DESC{self.NULLS_LAST}, c.running, t.id LIMIT ?",
            (now, self.policy.per_nvr, limit),
        )

    def _nothing_ready(self, db, now: float) -> Claim:
        row = db.execute(
            f"SELECT (SELECT min(ready_at) FROM tasks WHERE state = {W}) AS ready,"
            f" (SELECT min(lease_expires) FROM tasks WHERE state = {L}) AS expires,"
            f" EXISTS (SELECT 1 FROM tasks WHERE state = {Q}) AS held,"
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
        now = self.clock()
        with self._write() as db:
            self._expire(db, now)
            cur = db.execute(
                "UPDATE tasks SET lease_expires = ?, progress = coalesce(?, progress)"
                f" WHERE id = ? AND lease_id = ? AND state = {L}",
                (now + self.policy.lease_seconds, _json(progress), task_id, lease_id),
            )
            lost = None if cur.rowcount else self._current_state(db, task_id)
            if lost is None:
                db.execute("UPDATE workers SET last_seen = ? WHERE task_id = ?", (now, task_id))
                if isinstance(progress, dict) and progress.get("total") is not None:
                    self._login_works(db, task_id, lease_id)  # the task listed recordings: its login worked
        if lost is not None:
            raise LeaseLost(task_id, lost)
        return self.policy.lease_seconds

    @retried
    def complete(self, task_id: int, lease_id: str, result: dict, next_for: str | None = None) -> Claim | None:
        return self._complete(task_id, lease_id, result, next_for)

    def _complete(self, task_id: int, lease_id: str, result: dict, next_for: str | None) -> Claim | None:
        now = self.clock()
        lost = None
        answer = None
        with self._write() as db:
            self._expire(db, now)
            if self._move(db, *self._done_move(task_id, lease_id, result, now), now=now):
                self._finish(db, task_id, lease_id, result, now)
            elif db.execute(
                f"SELECT 1 FROM tasks WHERE id = ? AND lease_id = ? AND state = {D}", (task_id, lease_id)
            ).fetchone() is None:
                lost = LeaseLost(task_id, self._current_state(db, task_id))
            if next_for and lost is None:
                # The next claim rides in the same transaction: one commit per task at steady state.
                answer = self._claim(db, next_for, now, paused=self._paused())
        if lost is not None:
            raise lost
        return answer

    @retried
    def exchange(self, worker: str, done: list[tuple[int, str, dict]], count: int) -> tuple[list, list[Claim]]:
        now = self.clock()
        outcomes: list = []
        claims: list[Claim] = []
        with self._write() as db:
            self._expire(db, now)
            for task_id, lease_id, result in done:
                outcomes.append(None)
                if self._move(db, *self._done_move(task_id, lease_id, result, now), now=now):
                    self._finish(db, task_id, lease_id, result, now)
                elif db.execute(f"SELECT 1 FROM tasks WHERE id = ? AND lease_id = ? AND state = {D}",
                                (task_id, lease_id)).fetchone() is None:
                    try:
                        outcomes[-1] = LeaseLost(task_id, self._current_state(db, task_id))
                    except TaskNotFound as exc:
                        outcomes[-1] = exc
            paused = self._paused()
            while len(claims) < count:
                claim = self._claim(db, worker, now, paused)
                if claim.status != "task":
                    claims = claims or [claim]
                    break
                claims.append(claim)
        return outcomes, claims

    def _done_move(self, task_id: int, lease_id: str, result: dict, now: float) -> tuple:
        """The arguments of the "done" transition for a completion (its manifest is kept in the files table)."""
        result = {k: v for k, v in result.items() if k != "manifest"}
        listing = result.get("listing") if isinstance(result.get("listing"), dict) else {}
        return ("done", "id = ? AND lease_id = ?", (task_id, lease_id),
                "result = ?, files = ?, bytes = ?, listed = ?, listed_bytes = ?, finished = ?, lease_expires = NULL,"
                " last_error = NULL, progress = NULL",
                (_json(result), _int(result.get("files")), _int(result.get("bytes")), _int(listing.get("recordings")),
                 _int(listing.get("bytes")), now))

    def _finish(self, db, task_id: int, lease_id: str, result: dict, now: float) -> None:
        """What a completion records besides the task's state: its attempt, its files, its NVR's figures.

        Runs statements only (no result is read but a manifest's worker), so that the
        PostgreSQL store can send them in one round trip with the rest.
        """
        self._end_attempt(db, lease_id, now, "done", None, done=1)
        self._login_works(db, task_id, lease_id)
        if isinstance(result.get("manifest"), list):
            self._record_files(db, task_id, lease_id, result["manifest"])
        # The NVR answered: it is well again, and its figures grow.
        db.execute(
            "UPDATE nvrs SET files = files + ?, bytes = bytes + ?, failures = 0, down_since = NULL,"
            " backoff_until = 0, last_error = NULL WHERE server = (SELECT server FROM tasks WHERE id = ?)",
            (_int(result.get("files")) or 0, _int(result.get("bytes")) or 0, task_id),
        )
        device = result.get("device")
        offset = _number(device.get("clock_offset")) if isinstance(device, dict) else None
        if offset is not None:
            db.execute("UPDATE nvrs SET clock_offset = ?, clock_at = ? WHERE server ="
                       " (SELECT server FROM tasks WHERE id = ?)", (offset, now, task_id))

    @retried
    def fail(self, task_id: int, lease_id: str, error: str, permanent: bool = False,
             device: str | None = None, locked_for: float | None = None) -> str:
        now = self.clock()
        with self._write() as db:
            self._expire(db, now)
            row = db.execute(
                f"SELECT attempts, server, username FROM tasks WHERE id = ? AND lease_id = ? AND state = {L}",
                (task_id, lease_id),
            ).fetchone()
            if row is not None and device == "auth":
                return self._refuse(db, now, task_id, lease_id, row["server"], row["username"], error, locked_for)
            if row is not None and device and not permanent:
                return self._rest_nvr(db, now, task_id, lease_id, row["server"], error, device)
            if row is not None:
                give_up = permanent or row["attempts"] >= self.policy.max_attempts
                if give_up:
                    self._move(db, "failed", "id = ? AND lease_id = ?", (task_id, lease_id), now=now, detail=error,
                               sets="last_error = ?, ready_at = ?, lease_expires = NULL, finished = ?",
                               values=(error, now, now))
                else:
                    self._move(db, "retry", "id = ? AND lease_id = ?", (task_id, lease_id), now=now, detail=error,
                               sets="last_error = ?, ready_at = ?, lease_expires = NULL",
                               values=(error, now + self.policy.backoff(row["attempts"])))
                self._end_attempt(db, lease_id, now, "failed", error, failed=1)
                return State.FAILED.value if give_up else State.WAITING.value
            current = self._current_state(db, task_id)
            repeat = db.execute(
                f"SELECT state FROM tasks WHERE id = ? AND lease_id = ? AND state IN ({W}, {F})",
                (task_id, lease_id),
            ).fetchone()
        if repeat is None:
            raise LeaseLost(task_id, current)
        return repeat["state"]

    @retried
    def release(self, task_id: int, lease_id: str, reason: str | None = None) -> None:
        now = self.clock()
        with self._write() as db:
            if self._move(db, "released", "id = ? AND lease_id = ?", (task_id, lease_id), now=now, detail=reason,
                          sets="attempts = attempts - 1, lease_id = NULL, lease_expires = NULL"):
                self._end_attempt(db, lease_id, now, "released", reason)
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
            self._move(db, "gave up", f"(id = ? AND lease_id = ?) OR (server = ? AND state IN ({Q}, {W}))",
                       (task_id, lease_id, server), now=now, detail=final,
                       sets="last_error = ?, finished = ?, lease_expires = NULL", values=(final, now))
            self._end_attempt(db, lease_id, now, "failed", error, failed=1)
            return State.FAILED.value
        until = now + self.policy.device_delay(nvr["failures"])
        db.execute("UPDATE nvrs SET backoff_until = CASE WHEN backoff_until > ? THEN backoff_until ELSE ? END"
                   " WHERE server = ?", (until, until, server))
        self._move(db, "rested", "id = ? AND lease_id = ?", (task_id, lease_id), now=now, detail=error,
                   sets="attempts = attempts - 1, last_error = ?, ready_at = ?, lease_expires = NULL",
                   values=(error, until))
        self._end_attempt(db, lease_id, now, f"nvr {device}", error)
        return State.WAITING.value

    def _refuse(self, db, now: float, task_id: int, lease_id: str, server: str, username: str, error: str,
                locked_for: float | None) -> str:
        """The NVR refused this user's password: hold every task of the NVR and user until it is corrected.

        No attempt is charged, and no other task of the pair is handed out, so a wrong
        password costs the NVR one or two failed logins (tasks already running may
        fail too), not attempts x tasks, which would lock the site out.
        """
        locked_until = now + locked_for if locked_for else None
        db.execute("UPDATE logins SET refused_at = ?, locked_until = ?, error = ?, verified = 0, changed_at = ?"
                   " WHERE server = ? AND username = ?", (now, locked_until, error, now, server, username))
        db.execute("UPDATE nvrs SET last_error = ? WHERE server = ?", (error, server))
        self._move(db, "refused", "id = ? AND lease_id = ?", (task_id, lease_id), now=now, detail=error,
                   sets="attempts = attempts - 1, last_error = ?, ready_at = ?, lease_expires = NULL",
                   values=(error, HELD))
        self._end_attempt(db, lease_id, now, "password refused", error)
        self._hold(db, server, username, now)
        return State.WAITING.value

    def _login_works(self, db, task_id: int, lease_id: str) -> None:
        """The task's NVR user logged in: its other tasks may run side by side now (a statement only).

        Only an attempt leased since the password last changed proves it: one leased
        before a corrected password was imported logged in with the old one.
        """
        db.execute("UPDATE logins SET verified = 1 WHERE verified = 0 AND EXISTS (SELECT 1 FROM tasks t"
                   " JOIN attempts a ON a.lease_id = ? AND a.task_id = t.id WHERE t.id = ?"
                   " AND t.server = logins.server AND t.username = logins.username"
                   " AND a.started > logins.changed_at)", (lease_id, task_id))

    def _hold(self, db, server: str, username: str, now: float) -> None:
        """Hold the tasks of an NVR user whose password was refused (those not held already)."""
        self._move(db, "held", "server = ? AND username = ? AND ready_at < ?", (server, username, HELD), now=now,
                   sets="ready_at = ?, last_error = ?",
                   values=(HELD, f"held: NVR {server} refused the password of user {username!r}"))

    def _let_go(self, db, server: str, username: str, now: float, why: str) -> int:
        """Release an NVR user's held tasks: ready when the device's lock-out, if any, is over."""
        login = db.execute("SELECT locked_until FROM logins WHERE server = ? AND username = ?",
                           (server, username)).fetchone()
        ready = max(now, (login["locked_until"] or 0) if login else 0)
        db.execute("UPDATE logins SET refused_at = NULL, error = NULL WHERE server = ? AND username = ?",
                   (server, username))
        db.execute("UPDATE nvrs SET last_error = NULL WHERE server = ?", (server,))
        count = db.execute(
            f"UPDATE tasks SET ready_at = ? WHERE server = ? AND username = ? AND state = {W} AND ready_at = ?",
            (ready, server, username, HELD)).rowcount
        self._event(now, "login retried", detail=f"{why}: user {username!r} on NVR {server}, {count} task(s) released")
        return count

    # --- steering ------------------------------------------------------------------
    @retried
    def cancel(self, task_id: int, by: str | None = None) -> str:
        now = self.clock()
        why = f"cancelled {by or 'by an admin'}"
        with self._write() as db:
            moved = self._move(db, "cancelled", "id = ?", (task_id,), now=now, detail=why,
                               sets="lease_id = NULL, lease_expires = NULL, finished = ?", values=(now,))
            if moved:  # a running task: end its attempt (RETURNING gives the new, empty lease)
                lease = db.execute("SELECT lease_id FROM attempts WHERE task_id = ? AND ended IS NULL",
                                   (task_id,)).fetchone()
                if lease is not None:
                    self._end_attempt(db, lease["lease_id"], now, "cancelled", why)
            state = self._current_state(db, task_id)
        if not moved and state != State.CANCELLED:
            raise Conflict(f"task {task_id} is {state}; only queued, waiting or running tasks can be cancelled")
        return state

    @retried
    def retry_login(self, server: str, username: str | None = None) -> int:
        now = self.clock()
        with self._write() as db:
            users = [r["username"] for r in db.execute(
                "SELECT username FROM logins WHERE server = ? AND refused_at IS NOT NULL", (server,)).fetchall()
                if username is None or r["username"] == username]
            return sum(self._let_go(db, server, user, now, "login retried by an admin") for user in users)

    @retried
    def set_paused(self, paused: bool) -> None:
        with self._write() as db:
            db.execute("INSERT INTO settings (name, value) VALUES ('paused', ?) ON CONFLICT (name) DO UPDATE"
                       " SET value = excluded.value", ("1" if paused else "0",))
            self._event(self.clock(), "paused" if paused else "resumed")

    @retried
    def take_events(self, consumer: str, limit: int = 200) -> list[dict]:
        """The next changes for `consumer` (e.g. the notifier), each handed to one coordinator only.

        A consumer's position is a setting moved on with a compare-and-set, so when
        several coordinators share the database each change goes to one of them. A
        new consumer starts at the newest change: it is told of what happens from now on.
        """
        name = f"cursor:{consumer}"
        with self._write() as db:
            # Another coordinator taking changes right now holds the row: this one takes none this time.
            row = db.execute("SELECT value FROM settings WHERE name = ?" + self.LOCK_ROWS, (name,)).fetchone()
            if row is None:
                newest = db.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
                db.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                           (name, str(newest)))
                return []
            taken = [dict(r) for r in db.execute(
                "SELECT id, at, kind, task_id, state, worker, detail FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (int(row["value"]), limit)).fetchall()]
            if taken:
                db.execute("UPDATE settings SET value = ? WHERE name = ?", (str(taken[-1]["id"]), name))
        return taken

    def setting(self, name: str) -> str | None:
        row = self._db().execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else row["value"]

    @retried
    def put_setting(self, name: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE"
                       " SET value = excluded.value", (name, value))

    @retried
    def swap_setting(self, name: str, old: str | None, new: str) -> bool:
        """Set `name` to `new` only if it still holds `old` (None: not set yet); True if this call changed it."""
        with self._write() as db:
            if old is None:
                return bool(db.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                                       (name, new)).rowcount)
            return bool(db.execute("UPDATE settings SET value = ? WHERE name = ? AND value = ?",
                                   (new, name, old)).rowcount)

    def _paused(self) -> bool:
        row = self._db().execute("SELECT value FROM settings WHERE name = 'paused'").fetchone()
        return row is not None and row["value"] == "1"

    @retried
    def worker_state(self, worker: str, state: str, detail: str | None) -> None:
        now = self.clock()
        with self._write() as db:
            db.execute(
                "INSERT INTO workers (name, first_seen, last_seen, state, detail) VALUES (?,?,?,?,?)"
                " ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen, state = excluded.state,"
                " detail = excluded.detail", (worker, now, now, state, detail),
            )
            self._event(now, f"worker {state}", worker=worker, detail=detail)
        self._idle_seen.pop(worker, None)

    @retried
    def forget_workers(self, prefix: str) -> int:
        """Drop workers whose name is `prefix` or starts with `prefix/` or `prefix-` (a host's workers)."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self._write() as db:
            count = db.execute("DELETE FROM workers WHERE name = ? OR name LIKE ? ESCAPE '\\' OR name LIKE ?"
                               " ESCAPE '\\'", (prefix, pattern + "/%", pattern + "-%")).rowcount
        for name in [n for n in self._idle_seen if n == prefix or n.startswith((prefix + "/", prefix + "-"))]:
            del self._idle_seen[name]
        return count

    # --- helpers inside a transaction ----------------------------------------------
    def _expire(self, db, now: float) -> None:
        """Re-queue (or fail) tasks whose lease ran out; make waiting tasks ready; give up on refused users."""
        due, params = self._due(now)
        if not db.execute(f"SELECT {due}", params).fetchone()[0]:
            return  # the usual case: one read of three indexes instead of three statements
        for row in db.execute(
            f"SELECT id, attempts, worker, lease_id FROM tasks WHERE state = {L} AND lease_expires < ?"
            + self.LOCK_ROWS, (now,)
        ).fetchall():
            error = f"lease expired: worker {row['worker']} stopped reporting"
            give_up = row["attempts"] >= self.policy.max_attempts
            if self._move(db, "expired, failed" if give_up else "expired", "id = ? AND lease_id = ?",
                          (row["id"], row["lease_id"]), now=now, detail=error,
                          sets="last_error = ?, lease_id = NULL, lease_expires = NULL,"
                               " finished = CASE WHEN ? THEN ? ELSE finished END",
                          values=(error, give_up, now)):
                self._end_attempt(db, row["lease_id"], now, "expired", error)
        self._move(db, "ready", "ready_at <= ?", (now,), now=now)
        for login in db.execute("SELECT server, username, error FROM logins WHERE refused_at <= ?",
                                (now - self.policy.nvr_give_up,)).fetchall():
            # Not corrected in time: the held tasks fail (so that a run drains) and the refusal is
            # forgotten, so that tasks imported later try the password once more.
            final = (f"{login['error']}; not corrected within {self.policy.nvr_give_up:.0f} s: fix the password,"
                     " import the sheet again and requeue")
            self._move(db, "gave up", "server = ? AND username = ? AND ready_at = ?",
                       (login["server"], login["username"], HELD), now=now, detail=final,
                       sets="last_error = ?, finished = ?", values=(final, now))
            db.execute("UPDATE logins SET refused_at = NULL WHERE server = ? AND username = ?",
                       (login["server"], login["username"]))

    def _end_attempt(self, db, lease_id: str, now: float, outcome: str, error: str | None,
                     done: int = 0, failed: int = 0) -> None:
        db.execute(
            "UPDATE attempts SET ended = ?, outcome = ?, error = ? WHERE lease_id = ?",
            (now, outcome, error, lease_id),
        )
        # The worker reported this end, unless its lease ran out or an admin cancelled its task.
        seen = "last_seen" if outcome in ("expired", "cancelled") else "?"
        db.execute(
            f"UPDATE workers SET last_seen = {seen}, task_id = NULL, done = done + ?, failed = failed + ?"
            " WHERE name = (SELECT worker FROM attempts WHERE lease_id = ?)",
            ((now,) if seen == "?" else ()) + (done, failed, lease_id),
        )

    def _record_files(self, db, task_id: int, lease_id: str, manifest: list) -> None:
        """Keep where each of a done task's files went (`validate.result` checked the entries' types and paths)."""
        worker = db.execute("SELECT worker FROM attempts WHERE lease_id = ?", (lease_id,)).fetchone()["worker"]
        default_host = worker.rsplit("/", 1)[0]
        db.executemany(
            "INSERT INTO files (task_id, host, path, size, sha256, camera, camera_name, start, \"end\", kind, location)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(task_id, _text(f.get("host")) or default_host, _text(f.get("path")), _int(f.get("size")) or 0,
              _text(f.get("sha256")), _text(f.get("camera")), _text(f.get("camera_name")), _text(f.get("start")),
              _text(f.get("end")), _text(f.get("kind")) or "video", _text(f.get("location")))
             for f in manifest if isinstance(f, dict) and _text(f.get("path"))],
        )

    def _event(self, now: float, kind: str, task_id: int | None = None, state: str | None = None,
               worker: str | None = None, detail: str | None = None) -> None:
        """Record a change that is not a task's transition (never a password); written at commit."""
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


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most `size` items."""
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch
