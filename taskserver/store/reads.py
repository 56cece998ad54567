"""The SQL stores' read side: task views, task lists, status, metrics.

A mixin of SQLStore, split off so that the protocol's transactions in `sql.py`
stay readable; it uses that class's connection, clock and expiry helpers.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime

from ..errors import TaskNotFound
from .base import ACTIVE, State

Q, L, W, D, F, C = (f"'{s.value}'" for s in State)  # states as SQL literals, from the one enum
LIVE = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE))
# "Done, nothing found": an export that finished without a single file. Not a state of its own (the task
# did what it was asked), but shown apart everywhere, because an empty range usually means wrong times,
# wrong tracks or a device clock that is off. Written as the partial index tasks_empty is, so that
# counting them reads that index alone.
EMPTY = f"state = {D} AND files = 0 AND mode = 'export'"
NOTHING_FOUND = "nothing found"  # the label, in views, the event stream, status and the report
ETA_MIN_DONE = 3  # completions needed before a rate (and an ETA) is given
ETA_MIN_WINDOW = 60.0  # seconds of work needed before a rate is given
STOPPED_SHOWN = 3600.0  # seconds a worker that said it stopped stays in the list
LOST_SHOWN = 86400.0  # seconds a worker that went silent stays in the list (marked lost)
SCHEDULES_SHOWN = 100  # active schedules in a status (all of them: GET /api/schedules)


class SQLReads:
    """Reading methods of SQLStore."""

    def _expire_if_due(self, now: float) -> None:
        """Reads show the truth: leases that ran out are expired first (a write only when one did)."""
        due, params = self._due(now)
        if self._db().execute(f"SELECT {due}", params).fetchone()[0]:
            with self._write() as db:
                self._expire(db, now)

    ORDER_SQL = {"id": "id", "newest": "id DESC", "priority": "priority DESC, span DESC{nulls}, id"}

    def tasks(self, state=None, nvr=None, worker=None, text=None, order="id", offset=0, limit=50):
        now = self.clock()
        self._expire_if_due(now)
        where, params = [], []
        for column, value in (("state", state), ("server", nvr), ("worker", worker)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if text:
            # lower() on both sides: SQLite's LIKE ignores case, PostgreSQL's does not.
            where.append("(lower(name) LIKE ? ESCAPE '\\' OR lower(source) LIKE ? ESCAPE '\\'"
                         " OR lower(key) LIKE ? ESCAPE '\\' OR lower(last_error) LIKE ? ESCAPE '\\')")
            pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            params += [pattern] * 4
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        db = self._db()
        total = db.execute(f"SELECT count(*) FROM tasks {clause}", params).fetchone()[0]
        order_by = self.ORDER_SQL[order].format(nulls=self.NULLS_LAST)
        rows = db.execute(f"SELECT * FROM tasks {clause} ORDER BY {order_by} LIMIT ? OFFSET ?",
                          [*params, limit, offset]).fetchall()
        return [_public(r, now) for r in rows], total

    def done_ids(self, after: int = 0) -> list[int]:
        return [r[0] for r in self._db().execute(f"SELECT id FROM tasks WHERE state = {D} AND id > ? ORDER BY id",
                                                 (after,))]

    def rows(self, offset: int = 0, limit: int = 100) -> tuple[list[dict], int]:
        db = self._db()
        total = db.execute("SELECT count(DISTINCT grp) FROM tasks").fetchone()[0]
        found = db.execute(
            "SELECT grp, min(source) AS source, min(server) AS server, min(name) AS name, count(*) AS tasks,"
            f" count(*) FILTER (WHERE state = {D}) AS done, count(*) FILTER (WHERE state = {F}) AS failed,"
            f" count(*) FILTER (WHERE state = {C}) AS cancelled, count(*) FILTER (WHERE state IN ({LIVE})) AS active,"
            f" count(*) FILTER (WHERE {EMPTY}) AS nothing_found,"
            " CAST(coalesce(sum(files), 0) AS BIGINT) AS files, CAST(coalesce(sum(bytes), 0) AS BIGINT) AS bytes,"
            " count(*) FILTER (WHERE mode = 'list') AS dry_runs, CAST(sum(listed) AS BIGINT) AS listed,"
            " CAST(sum(listed_bytes) AS BIGINT) AS listed_bytes"
            " FROM tasks GROUP BY grp ORDER BY min(id) LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [row_view(r) for r in found], total

    def progress(self, minutes: int = 60) -> dict:
        """Completions per minute, and a rate measured only over time the run was actually working.

        The rate counts the last 10 minutes, or less when the run began more recently
        (from its first attempt in that window), so that it is not diluted early on; no
        rate (and no ETA) until a few tasks and a minute of work are behind it. A paused
        run has no ETA: nothing is handed out.
        """
        now = self.clock()
        since = now - minutes * 60
        db = self._db()
        per_minute = [0] * minutes
        for row in db.execute(
            f"SELECT {self.TRUNC.format('(ended - ?) / 60')} AS m, count(*) AS n FROM attempts"
            " WHERE outcome = 'done' AND ended >= ? GROUP BY m", (since, since),
        ):
            per_minute[min(minutes - 1, max(0, row["m"]))] += row["n"]
        left = db.execute(f"SELECT count(*) FROM tasks WHERE state IN ({LIVE})").fetchone()[0]
        recent = max(since, now - 600)
        window = db.execute("SELECT min(started) AS first, count(*) FILTER (WHERE outcome = 'done') AS done"
                            " FROM attempts WHERE ended >= ? OR ended IS NULL", (recent,)).fetchone()
        worked = now - max(recent, window["first"]) if window["first"] is not None else 0.0
        measured = window["done"] >= ETA_MIN_DONE and worked >= ETA_MIN_WINDOW
        rate = window["done"] / worked * 60 if measured else None
        paused = self._paused()
        return {"per_minute": per_minute, "rate_per_minute": round(rate, 2) if rate is not None else 0.0,
                "measured": measured, "left": left, "paused": paused,
                "eta_seconds": round(left / rate * 60) if rate and left and not paused else None,
                "at": now, "at_iso": iso(now)}

    def events(self, after: int, limit: int = 500, kinds: list[str] | None = None) -> list[dict]:
        # A done task that found nothing says so on the stream (done is final, so this never changes).
        only = f" AND e.kind IN ({','.join('?' * len(kinds))})" if kinds else ""
        rows = self._db().execute(
            "SELECT e.id, e.at, e.kind, e.task_id, e.state, e.worker, e.detail,"
            " e.kind = 'done' AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id AND t.files = 0"
            " AND t.mode = 'export') AS empty"
            f" FROM events e WHERE e.id > ?{only} ORDER BY e.id LIMIT ?",
            (after, *(kinds or ()), limit),
        ).fetchall()
        return [event_view(r) for r in rows]

    def last_event(self) -> int:
        return self._db().execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

    def metrics(self) -> dict:
        self._expire_if_due(self.clock())
        db = self._db()
        return {
            "states": {r[0]: r[1] for r in db.execute("SELECT state, count(*) FROM tasks GROUP BY state")},
            "attempts": {r[0]: r[1] for r in db.execute(
                "SELECT coalesce(outcome, 'running'), count(*) FROM attempts GROUP BY outcome")},
            "bytes": db.execute("SELECT CAST(coalesce(sum(bytes), 0) AS BIGINT) FROM tasks").fetchone()[0],
            "nvr_running": {r[0]: r[1] for r in db.execute(
                f"SELECT server, (SELECT count(*) FROM tasks t WHERE t.state = {L} AND t.server = n.server)"
                " FROM nvrs n")},
        }

    def all_tasks(self):
        """Every task in id order, each with its last attempt's start and end (for the report)."""
        now = self.clock()
        self._expire_if_due(now)
        for row in self._db().execute(
            "SELECT t.*, a.started AS attempt_started, a.ended AS attempt_ended FROM tasks t"
            " LEFT JOIN attempts a ON a.id = (SELECT max(l.id) FROM attempts l WHERE l.task_id = t.id)"
            " ORDER BY t.id"
        ):
            view = _public(row, now)
            view["last_attempt"] = {"started": row["attempt_started"], "ended": row["attempt_ended"]}
            yield view

    def task(self, task_id: int) -> dict:
        now = self.clock()
        self._expire_if_due(now)
        db = self._db()
        row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        view = _public(row, now)
        view["attempt_log"] = [
            {**dict(a), "started_iso": iso(a["started"]), "ended_iso": iso(a["ended"])} for a in db.execute(
                "SELECT worker, started, ended, outcome, error FROM attempts WHERE task_id = ? ORDER BY id",
                (task_id,),
            )
        ]
        return view

    def text_widths(self) -> dict[str, int]:
        """The longest text of each column the report shows (tasks, files), so that its widths fit whole names."""
        db = self._db()
        tasks = db.execute("SELECT max(length(name)) AS name, max(length(source)) AS source, max(length(server))"
                           " AS server, max(length(worker)) AS worker, max(length(cameras)) AS cameras FROM tasks"
                           ).fetchone()
        files = db.execute("SELECT max(length(host)) AS host, max(length(path)) AS path, max(length(camera_name))"
                           " AS camera_name FROM files").fetchone()
        return {**{k: tasks[k] or 0 for k in ("name", "source", "server", "worker", "cameras")},
                **{f"file_{k}": files[k] or 0 for k in ("host", "path", "camera_name")}}

    def task_ids(self, keys: list[str]) -> list[int]:
        """The ids of the tasks with these keys, in the order given (keys not stored are left out)."""
        found: dict[str, int] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start:start + 500]
            found.update((r["key"], r["id"]) for r in self._db().execute(
                f"SELECT key, id FROM tasks WHERE key IN ({','.join('?' * len(batch))})", batch))
        return [found[k] for k in keys if k in found]

    def lease_state(self, task_id: int, lease_id: str) -> dict:
        """Whether a lease is still its task's current one, and if not, why: a cheap read for a running worker.

        Reads only (a lease that ran out but was not expired yet is reported expired),
        so that polling it every few seconds costs the coordinator no write.
        """
        now = self.clock()
        db = self._db()
        task = db.execute("SELECT state, lease_id, lease_expires FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if task is None:
            raise TaskNotFound(task_id)
        attempt = db.execute("SELECT outcome, error, ended FROM attempts WHERE lease_id = ? AND task_id = ?",
                             (lease_id, task_id)).fetchone()
        answer = {"current": False, "state": task["state"], "reason": None, "detail": None}
        if attempt is None:
            answer["reason"] = "unknown"
        elif task["state"] == State.LEASED and task["lease_id"] == lease_id:
            if task["lease_expires"] is not None and task["lease_expires"] < now:
                answer["reason"] = "expired"
            else:
                answer["current"] = True
        elif attempt["outcome"] == "cancelled":
            answer.update(reason="cancelled", detail=attempt["error"])
        elif attempt["outcome"] in ("expired", "released"):
            answer["reason"] = attempt["outcome"]
            if task["state"] == State.LEASED:
                answer["reason"] = "taken over"
        elif attempt["outcome"] is None:  # not ended, yet not the task's lease: cannot happen, but say so
            answer["reason"] = "taken over"
        else:  # reported already (done, failed, NVR rest...)
            answer["reason"] = "finished"
        if answer["detail"] is None and answer["reason"] not in (None, "cancelled"):
            answer["detail"] = LEASE_REASONS[answer["reason"]]
        return answer

    FILE_COLUMNS = ("task_id", "host", "path", "size", "sha256", "camera", "camera_name", "start", "end", "kind",
                    "location")

    def files(self, task_id: int | None = None, camera: str | None = None, nvr: str | None = None,
              start: str | None = None, end: str | None = None, after: int = 0, limit: int = 1000) -> list[dict]:
        """Files in the manifest: one task's, or those of a camera (of an NVR) overlapping [start, end)."""
        where, params = ["f.id > ?"], [after]
        for clause, value in (("f.task_id = ?", task_id), ("f.camera = ?", camera), ("t.server = ?", nvr),
                              ('f."end" > ?', start), ("f.start < ?", end)):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = self._db().execute(
            "SELECT f.id, t.server, " + ", ".join(f'f."{c}"' for c in self.FILE_COLUMNS) +
            f" FROM files f JOIN tasks t ON t.id = f.task_id WHERE {' AND '.join(where)} ORDER BY f.id LIMIT ?",
            [*params, limit],
        ).fetchall()
        return [dict(r) for r in rows]

    def status(self) -> dict:
        now = self.clock()
        self._expire_if_due(now)
        db = self._db()
        # Tasks per NVR and state, from an index alone; files and bytes are the NVRs' counters.
        counts = {s.value: 0 for s in State}
        per_nvr: dict[str, dict] = {}
        for row in db.execute("SELECT server, state, count(*) AS n FROM tasks GROUP BY server, state"):
            counts[row["state"]] += row["n"]
            per_nvr.setdefault(row["server"], {s.value: 0 for s in State})[row["state"]] += row["n"]
        empty = {r["server"]: r["n"] for r in db.execute(f"SELECT server, count(*) AS n FROM tasks WHERE {EMPTY}"
                                                          " GROUP BY server")}
        refused: dict[str, list[dict]] = {}
        for login in db.execute("SELECT server, username, error, locked_until FROM logins"
                                " WHERE refused_at IS NOT NULL ORDER BY server, username"):
            locked = login["locked_until"]
            refused.setdefault(login["server"], []).append({
                "username": login["username"], "error": login["error"],
                "locked_for": round(locked - now) if locked and locked > now else 0})
        nvrs = []
        for n in db.execute("SELECT * FROM nvrs ORDER BY server").fetchall():
            tasks = per_nvr.get(n["server"], {s.value: 0 for s in State})
            # The NVR's own trouble (busy, unreachable) first; else why its newest failed task failed (a
            # camera it does not have, a cut download...), for as long as that task stays failed.
            last_error = n["last_error"] or (db.execute(
                f"SELECT last_error FROM tasks WHERE server = ? AND state = {F} ORDER BY finished DESC LIMIT 1",
                (n["server"],)).fetchone() or [None])[0] if tasks["failed"] else n["last_error"]
            nvrs.append({
                "server": n["server"], "running": tasks["leased"], "queued": tasks["queued"] + tasks["waiting"],
                "max_parallel": n["max_parallel"] or self.policy.per_nvr,
                "resting_for": round(n["backoff_until"] - now, 1) if n["backoff_until"] > now else 0,
                "last_error": last_error, "done": tasks["done"], "failed": tasks["failed"],
                "files": n["files"], "bytes": n["bytes"], "password_refused": refused.get(n["server"], []),
                "clock_offset": n["clock_offset"], "nothing_found": empty.get(n["server"], 0),
            })
        return {
            "at": now, "at_iso": iso(now),
            "counts": counts,
            "nothing_found": sum(empty.values()),
            "tasks": sum(counts.values()),
            "files": sum(n["files"] for n in nvrs),
            "bytes": sum(n["bytes"] for n in nvrs),
            "drained": not any(counts[s] for s in ACTIVE),
            "workers": self._workers(db, now),
            "nvrs": nvrs,
            "paused": self._paused(),
            "schedules": [schedule_view(s) for s in self.schedules()[:SCHEDULES_SHOWN]],
            "last_drain": json.loads(last) if (last := self.setting("notify:last_drain")) else None,
        }

    def _workers(self, db, now: float) -> list[dict]:
        """Workers seen, with what their hosts said of themselves; a silent one is lost unless it said it stopped.

        A worker that stopped over an hour ago, or went silent over a day ago, is no
        longer listed: worker hosts that come and go would otherwise fill the list.
        """
        lost_after = 2 * self.policy.lease_seconds
        seen = {w["name"]: dict(w) for w in db.execute(
            "SELECT * FROM workers WHERE last_seen >= ? AND (state != 'stopped' OR last_seen >= ?)",
            (now - LOST_SHOWN, now - STOPPED_SHOWN))}
        for name, when in list(self._idle_seen.items()):
            if now - when > LOST_SHOWN:
                del self._idle_seen[name]  # gone for a day: not listed, and not kept in memory
                continue
            known = seen.setdefault(name, {"name": name, "task_id": None, "done": 0, "failed": 0, "last_seen": when,
                                           "state": "ok", "detail": None})
            known["last_seen"] = max(known["last_seen"], when)
        return [
            {"name": w["name"], "task": w["task_id"], "done": w["done"], "failed": w["failed"],
             "last_seen_ago": round(now - w["last_seen"], 1), "last_seen": w["last_seen"],
             "last_seen_iso": iso(w["last_seen"]), "state": w["state"], "detail": w["detail"],
             "lost": w["state"] != "stopped" and now - w["last_seen"] > lost_after}
            for w in sorted(seen.values(), key=lambda w: w["name"])
        ]


LEASE_REASONS = {
    "unknown": "no such lease for this task",
    "expired": "the lease ran out: the worker was silent too long",
    "taken over": "the lease ran out and the task went to another worker",
    "released": "the task was given back",
    "finished": "the task's outcome was reported already",
}


def iso(at: float | None) -> str | None:
    """An epoch time as ISO 8601 in UTC ("2026-01-31T08:00:00.000Z"), for people and tools that read dates."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def found_nothing(task: dict) -> bool:
    """A done export without a single file (a row of the tasks table; task views carry it as `nothing_found`)."""
    return task["state"] == State.DONE and task["mode"] == "export" and task["files"] == 0


def row_state(row) -> str:
    """A sheet row's state from its tasks' counts: in progress while any runs or waits, then what they came to."""
    if row["active"]:
        return "in progress"
    if row["failed"]:
        return "failed"
    if row["cancelled"]:
        return "cancelled" if row["cancelled"] == row["tasks"] else "partly cancelled"
    return f"done, {NOTHING_FOUND}" if row["nothing_found"] == row["tasks"] else "done"


def schedule_view(schedule: dict) -> dict:
    """An active schedule as people see it: cadence, next run and window, the row it repeats (no password)."""
    template = schedule["template"]
    return {"id": schedule["id"], "cadence": schedule["cadence"], "zone": schedule["zone"],
            "next_window_start": schedule["cursor"], "next_run": schedule["next_fire"],
            "next_run_iso": iso(schedule["next_fire"]), "runs": schedule["fired"],
            "last_run": schedule["last_fired"], "last_run_iso": iso(schedule["last_fired"]),
            "source": schedule["source"], "server": template["server"], "username": template["username"],
            "cameras": template["cameras"], "name": template["name"]}


def row_view(row) -> dict:
    """A sheet row as views show it; a dry run's row says what it would export (so far, while it runs)."""
    view = {k: row[k] for k in row.keys() if k not in ("dry_runs", "listed", "listed_bytes")}
    view["state"] = row_state(row)
    view["dry_run"] = row["dry_runs"] == row["tasks"]
    view["would_export"] = ({"recordings": row["listed"] or 0, "bytes": row["listed_bytes"] or 0}
                            if view["dry_run"] else None)
    return view


def event_view(row) -> dict:
    """A change feed event as the stream sends it: a done task that found nothing says so."""
    event = {k: row[k] for k in ("id", "at", "kind", "task_id", "state", "worker", "detail")}
    if row["empty"] and not event["detail"]:
        event["detail"] = NOTHING_FOUND
    event["at_iso"] = iso(event["at"])
    return event


def _public(row, now: float) -> dict:
    """A task as anyone but its worker may see it (the password is not even in the row)."""
    return {
        "id": row["id"], "key": row["key"], "name": row["name"], "server": row["server"],
        "username": row["username"], "cameras": [c for c in row["cameras"].split(",") if c],
        "start": row["start"], "end": row["end"], "priority": row["priority"], "source": row["source"],
        "group": row["grp"], "mode": row["mode"], "timezone": row["timezone"],
        "options": json.loads(row["options"]) if row["options"] else {},
        "tls_fingerprint": row["tls_fingerprint"],
        "state": row["state"], "attempts": row["attempts"], "worker": row["worker"],
        "lease_expires_in": round(row["lease_expires"] - now, 1) if row["lease_expires"] else None,
        "progress": json.loads(row["progress"]) if row["progress"] else None,
        "result": json.loads(row["result"]) if row["result"] else None,
        "last_error": row["last_error"], "created": row["created"], "started": row["started"],
        "finished": row["finished"], "created_iso": iso(row["created"]), "started_iso": iso(row["started"]),
        "finished_iso": iso(row["finished"]), "nothing_found": found_nothing(row),
    }
