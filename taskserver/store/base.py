"""The store interface: task states, the transition table, and what every store provides.

A store owns the protocol's rules (leases, fencing, attempts, backoff, NVR rests,
refused passwords), each applied inside one transaction, so the HTTP views stay
thin and both stores (SQLite, PostgreSQL) implement the same behaviour behind the
same methods. Time comes from one injectable clock, so tests drive expiry and
backoff without sleeping.
"""
from __future__ import annotations

import enum
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Clock = Callable[[], float]  # seconds since the epoch, like time.time


class State(enum.StrEnum):
    """A task's state, stored as text."""

    QUEUED = "queued"
    LEASED = "leased"
    WAITING = "waiting"  # not ready yet: backing off, its NVR resting, or its password refused
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.DONE, State.FAILED, State.CANCELLED})
ACTIVE = frozenset(State) - TERMINAL
Q, L, W, D, F, C = State.QUEUED, State.LEASED, State.WAITING, State.DONE, State.FAILED, State.CANCELLED


@dataclass(frozen=True)
class Transition:
    """One way a task's state may change; its name is also the change feed's event kind."""

    name: str
    sources: frozenset[State]
    target: State
    meaning: str


# Every state change a task can go through. The store executes them only through this
# table (a guarded UPDATE from the sources, one feed event per row changed); README,
# the tests and the dashboard's state list read it too.
TRANSITIONS: dict[str, Transition] = {t.name: t for t in (
    Transition("leased", frozenset({Q}), L, "a worker claimed it"),
    Transition("done", frozenset({L}), D, "its worker completed it"),
    Transition("retry", frozenset({L}), W, "an attempt failed; it waits for its backoff"),
    Transition("failed", frozenset({L}), F, "an attempt failed and none are left (or it cannot succeed)"),
    Transition("rested", frozenset({L}), W, "its NVR was busy or unreachable: the NVR rests, no attempt charged"),
    Transition("refused", frozenset({L}), W, "its NVR refused the password: held until corrected, no attempt charged"),
    Transition("held", frozenset({Q, W}), W, "another task of its NVR and user had its password refused"),
    Transition("gave up", frozenset({Q, W, L}), F, "its NVR stayed busy, unreachable or refused its password too long"),
    Transition("expired", frozenset({L}), Q, "its lease ran out: the worker stopped reporting"),
    Transition("expired, failed", frozenset({L}), F, "its lease ran out and no attempts are left"),
    Transition("released", frozenset({L}), Q, "its worker gave it back unrun (shutdown, host fault)"),
    Transition("ready", frozenset({W}), Q, "its backoff, NVR rest or password hold is over"),
    Transition("cancelled", frozenset({Q, W, L}), C, "cancelled by an admin"),
    Transition("requeued", frozenset({F, C}), Q, "given a fresh set of attempts by an admin"),
)}


@dataclass(frozen=True)
class TaskSpec:
    """A task as defined by a sheet row: what to download, from where."""

    key: str  # stable identity: re-importing the same row adds nothing
    server: str
    username: str
    password: str | None  # None (a schedule's run): the NVR user's stored password
    cameras: tuple[str, ...]  # empty: every channel of the NVR
    # ISO times: NVR-local "YYYY-MM-DDTHH:MM:SS", or UTC "...+00:00" when timezone is "auto";
    # start and end None: every recording
    start: str | None
    end: str | None
    name: str = ""
    priority: int = 0
    source: str = ""  # "file, sheet, row N" for messages and the report
    group: str = ""  # the sheet row's key: chunks of one row share it (for roll-ups)
    takes_earlier: bool = True  # owns recordings that began before `start` (a row's first chunk)
    max_parallel: int | None = None  # the row's cap on concurrent tasks for its NVR
    timezone: str | None = None  # "auto": start/end are UTC instants, to convert with the zone the NVR reports
    tls_fingerprint: str | None = None  # SHA-256 of the NVR's HTTPS certificate: 64 lowercase hex digits
    mode: str = "export"  # "export", or "list": a dry run that lists what would be exported
    options: tuple[tuple[str, str], ...] = ()  # what the row asks of the export (window, content...), for the runner

    @property
    def span(self) -> float | None:
        """Length of the time range in seconds (None: every recording)."""
        if self.start is None or self.end is None:
            return None
        from datetime import datetime

        return (datetime.fromisoformat(self.end) - datetime.fromisoformat(self.start)).total_seconds()


@dataclass(frozen=True)
class Schedule:
    """A sheet row that runs on a cadence: each run exports the windows that ended since the last one."""

    key: str  # the row's key: importing the sheet again adds the schedule once
    cadence: str  # "daily 01:00", "every 6h" (see taskserver.windows)
    zone: str | None  # the NVR's IANA zone, or None for the coordinator's own
    template: TaskSpec  # the row, without times; its chunk, if any, in `chunk`
    password: str  # stored (sealed) with the NVR user's login, not in the schedule
    cursor: str  # NVR-local start of the next window
    next_fire: float  # when the next run is due (seconds since the epoch)
    chunk: float | None = None  # seconds per chunk of a window
    first: str = ""  # NVR-local start of the first window (the only one that takes earlier recordings)

    def template_dict(self) -> dict:
        """The row as stored with the schedule: no password, no times."""
        from dataclasses import asdict

        fields = asdict(self.template)
        for secret_or_time in ("password", "start", "end", "key", "group"):
            fields.pop(secret_or_time)
        fields["cameras"] = list(fields["cameras"])
        return {**fields, "chunk": self.chunk, "first": self.first}


@dataclass(frozen=True)
class Policy:
    """The store's protocol parameters: made from the settings (`Config.policy()`), where their defaults live."""

    lease_seconds: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    max_wait: float
    per_nvr: int  # concurrent tasks per NVR unless the sheet says otherwise
    device_backoff: float  # first pause for a busy or unreachable NVR; doubles, capped at 300 s
    nvr_give_up: float  # an NVR busy, unreachable or refusing a password this long fails its tasks
    login_trials: int  # tasks of an NVR user with a password not yet seen to work that may run at once
    events_kept: int  # newest changes kept in the event feed; older ones are pruned

    def device_delay(self, failures: int) -> float:
        """How long an NVR rests after `failures` busy/unreachable answers in a row, with jitter."""
        return min(300.0, self.device_backoff * 2 ** max(0, failures - 1)) * random.uniform(0.75, 1.0)

    def backoff(self, attempts: int) -> float:
        """Delay before retry number `attempts`: exponential, capped, with jitter.

        Jitter keeps many tasks that failed together (an NVR reboot) from all
        coming back at the same instant.
        """
        delay = min(self.backoff_max, self.backoff_base * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.5, 1.0)


@dataclass
class Claim:
    """A claim's answer: a task with its lease, 'ask again later', or the drained sentinel."""

    status: str  # "task" | "wait" | "drained"
    task: dict | None = None
    lease: dict | None = None
    retry_after: float | None = None

    def to_dict(self) -> dict:
        """The JSON body sent to the worker."""
        body: dict = {"status": self.status}
        if self.status == "task":
            body.update(task=self.task, lease=self.lease)
        elif self.status == "wait":
            body["retry_after"] = self.retry_after
        return body


@dataclass
class ImportResult:
    """What an import did."""

    added: int = 0
    existing: int = 0
    updated: int = 0  # NVR users whose password the import corrected (their held tasks are released)
    ids: list[int] = field(default_factory=list)


class Store(ABC):
    """Durable task state. Every method is one transaction, committed before it returns."""

    ORDERS = ("id", "newest", "priority")  # task list orders
    url = ""  # where the state lives, fit for messages (never a password)
    # The database's errors that mean "not now" (unreachable, locked too long): answered
    # 503 so that workers retry, rather than 500.
    UNAVAILABLE: tuple[type[BaseException], ...] = ()

    def __init__(self, policy: Policy, clock: Clock = time.time):
        self.policy = policy
        self.clock = clock

    @abstractmethod
    def add(self, specs: Iterable[TaskSpec]) -> ImportResult:
        """Queue new tasks atomically; specs whose key is already stored are counted, not added.

        `specs` may be any collection that can be read twice, such as a big sheet spooled
        to disk: it is inserted in batches, inside the one transaction.

        A password that differs from the stored one for the same NVR and user corrects
        it, and releases that user's tasks held for a refused password.
        """

    @abstractmethod
    def add_schedules(self, schedules: list[Schedule]) -> ImportResult:
        """Store scheduled rows (each once, by key); their runs are made by `fire_schedule`."""

    @abstractmethod
    def schedules(self, due_by: float | None = None) -> list[dict]:
        """Active schedules, soonest first; only those due by `due_by` when given."""

    @abstractmethod
    def fire_schedule(self, schedule_id: int, expected_fire: float, cursor: str, next_fire: float,
                      specs: list[TaskSpec], retries: int) -> ImportResult | None:
        """Add one run's tasks and move the schedule on, once across coordinators (None: fired elsewhere)."""

    @abstractmethod
    def cancel_schedule(self, schedule_id: int) -> bool:
        """Stop a schedule (its tasks already added stay)."""

    @abstractmethod
    def requeue(self, task_ids: list[int] | None = None, server: str | None = None,
                cancelled: bool = False, by: str | None = None) -> list[int]:
        """Give failed tasks (and cancelled ones too, when asked) fresh attempts; return their ids.

        `by` says who asked ("by an admin from 10.0.0.9"), for the change feed.
        """

    @abstractmethod
    def claim(self, worker: str) -> Claim:
        """Lease the next ready task to `worker`, or say when to ask again, or that all is done."""

    @abstractmethod
    def heartbeat(self, task_id: int, lease_id: str, progress: dict | None) -> float:
        """Extend a current lease and record progress; return the lease's seconds left.

        Raises LeaseLost if the lease is not the task's current one.
        """

    @abstractmethod
    def complete(self, task_id: int, lease_id: str, result: dict, next_for: str | None = None) -> Claim | None:
        """Mark a leased task done with its result; a repeat with the same lease is harmless.

        With `next_for` (a worker name), also claim that worker's next task in the same
        transaction and return the claim: one commit per task at steady state.
        """

    @abstractmethod
    def exchange(self, worker: str, done: list[tuple[int, str, dict]], count: int) -> tuple[list, list[Claim]]:
        """Complete several tasks and lease up to `count` more to `worker`, in one transaction (opt-in batches).

        `done` holds (task id, lease id, result) triples; each is fenced by its own
        lease as `complete` does, and its outcome is None (done, or a harmless repeat)
        or the LeaseLost / TaskNotFound error `complete` would raise. Each task leased
        gets a lease of its own, under the same caps as single claims. Returns the
        outcomes and the claims: the leased tasks, else one "wait" or "drained" claim.
        """

    @abstractmethod
    def fail(self, task_id: int, lease_id: str, error: str, permanent: bool = False,
             device: str | None = None, locked_for: float | None = None) -> str:
        """Record a failed attempt; back off and retry, or fail the task. Returns the new state.

        `device` blames the NVR, not the task, and charges no attempt: "busy" or
        "unreachable" rests the NVR (all its tasks wait) until `nvr_give_up` seconds of
        such answers fail its remaining tasks; "auth" holds every task of the NVR and
        user until a corrected password arrives (`locked_for`: seconds the device
        stays locked, if it said).
        """

    @abstractmethod
    def release(self, task_id: int, lease_id: str, reason: str | None = None) -> None:
        """Give a leased task back unrun (shutdown, host fault): queued, no attempt charged."""

    @abstractmethod
    def cancel(self, task_id: int, by: str | None = None) -> str:
        """Cancel a task that is not finished; a running one's worker learns it from `lease_state`.

        `by` says who cancelled ("by an admin from 10.0.0.9"): it goes into the change
        feed and the attempt log, so that the worker and the dashboard can say so.
        """

    @abstractmethod
    def retry_login(self, server: str, username: str | None = None) -> int:
        """Release tasks held for a refused password (the account was fixed on the device); return how many."""

    @abstractmethod
    def set_paused(self, paused: bool) -> None:
        """Stop or resume handing out work (claims answer "wait" while paused); durable."""

    @abstractmethod
    def worker_state(self, worker: str, state: str, detail: str | None) -> None:
        """Record what a worker host says of itself: "ok", "full", "fault" or "stopped"."""

    @abstractmethod
    def forget_workers(self, prefix: str) -> int:
        """Drop a worker, or every worker of a host, from the list; return how many."""

    @abstractmethod
    def tasks(self, state: str | None = None, nvr: str | None = None, worker: str | None = None,
              text: str | None = None, order: str = "id", offset: int = 0, limit: int = 50) -> tuple[list[dict], int]:
        """A page of public task views matching the filters, and how many match in all."""

    @abstractmethod
    def done_ids(self, after: int = 0) -> list[int]:
        """Ids of done tasks above `after`, ascending: for scripts that poll for results."""

    @abstractmethod
    def files(self, task_id: int | None = None, camera: str | None = None, nvr: str | None = None,
              start: str | None = None, end: str | None = None, after: int = 0, limit: int = 1000) -> list[dict]:
        """The manifest: files of one task, or of a camera (and NVR) overlapping [start, end), by id above `after`."""

    @abstractmethod
    def all_tasks(self):
        """Every task's public view in id order, streamed (for the report), with `last_attempt` {started, ended}."""

    @abstractmethod
    def rows(self, offset: int = 0, limit: int = 100) -> tuple[list[dict], int]:
        """Sheet rows with their chunks rolled up (tasks per state, files, bytes), and how many rows."""

    @abstractmethod
    def progress(self, minutes: int = 60) -> dict:
        """Completions per minute over the last `minutes`, the recent rate and the ETA of what is left."""

    @abstractmethod
    def events(self, after: int, limit: int = 500, kinds: list[str] | None = None) -> list[dict]:
        """Changes recorded after event id `after`, oldest first (the feed behind /api/events); only `kinds` if given."""

    @abstractmethod
    def last_event(self) -> int:
        """The id of the newest change recorded."""

    @abstractmethod
    def metrics(self) -> dict:
        """Figures for /metrics, from durable state: tasks by state, attempts by outcome, bytes, NVR load."""

    @abstractmethod
    def text_widths(self) -> dict[str, int]:
        """The longest task and file texts (name, source, server, worker, cameras; file_host, file_path,
        file_camera_name), so that the report's columns show them whole."""

    @abstractmethod
    def task_ids(self, keys: list[str]) -> list[int]:
        """Ids of the tasks with these keys, in the order given (keys not stored are left out)."""

    @abstractmethod
    def lease_state(self, task_id: int, lease_id: str) -> dict:
        """Whether `lease_id` is still the task's current lease and, if not, why; reads only.

        {"current", "state", "reason": None|"cancelled"|"expired"|"taken over"|"released"|"finished"|"unknown",
        "detail"}. Raises TaskNotFound.
        """

    @abstractmethod
    def task(self, task_id: int) -> dict:
        """Public view of one task (never its password). Raises TaskNotFound."""

    @abstractmethod
    def status(self) -> dict:
        """Counts per state, totals, workers seen, NVRs, and whether the queue is drained."""

    def release_connection(self) -> None:
        """Give this thread's database connection back to the pool, if the store pools them.

        Called at the end of each request: a coordinator serves many threads with a
        few connections. Stores that keep one connection per thread have nothing to do.
        """
        return None

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
