"""The store interface: task states, their transitions, and what every store provides.

A store owns the protocol's rules (leases, fencing, attempts, backoff), each
applied inside one transaction, so the HTTP views stay thin and a second store
(PostgreSQL) implements the same behaviour behind the same methods.
"""
from __future__ import annotations

import enum
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


class State(enum.StrEnum):
    """A task's state, stored as text."""

    QUEUED = "queued"
    LEASED = "leased"
    WAITING = "waiting"  # failed an attempt; ready again after its backoff
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.DONE, State.FAILED, State.CANCELLED})

# Every allowed transition, by the event that causes it. Stores implement each as
# one guarded UPDATE; the table is the reference for README and tests.
TRANSITIONS: dict[str, tuple[frozenset[State], tuple[State, ...]]] = {
    "claim": (frozenset({State.QUEUED}), (State.LEASED,)),
    "ready": (frozenset({State.WAITING}), (State.QUEUED,)),
    "complete": (frozenset({State.LEASED}), (State.DONE,)),
    "fail": (frozenset({State.LEASED}), (State.WAITING, State.FAILED)),
    "expire": (frozenset({State.LEASED}), (State.QUEUED, State.FAILED)),
    "release": (frozenset({State.LEASED}), (State.QUEUED,)),
    "cancel": (frozenset({State.QUEUED, State.WAITING, State.LEASED}), (State.CANCELLED,)),
    "requeue": (frozenset({State.FAILED, State.CANCELLED}), (State.QUEUED,)),
}


@dataclass(frozen=True)
class TaskSpec:
    """A task as defined by a sheet row: what to download, from where."""

    key: str  # stable identity: re-importing the same row adds nothing
    server: str
    username: str
    password: str
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

    @property
    def span(self) -> float | None:
        """Length of the time range in seconds (None: every recording)."""
        if self.start is None or self.end is None:
            return None
        from datetime import datetime

        return (datetime.fromisoformat(self.end) - datetime.fromisoformat(self.start)).total_seconds()


@dataclass(frozen=True)
class Policy:
    """The store's protocol parameters, taken from Config."""

    lease_seconds: float = 60.0
    max_attempts: int = 5
    backoff_base: float = 10.0
    backoff_max: float = 600.0
    max_wait: float = 5.0
    per_nvr: int = 2  # concurrent tasks per NVR unless the sheet says otherwise
    device_backoff: float = 5.0  # first pause for a busy or unreachable NVR; doubles, capped at 300 s
    nvr_give_up: float = 1800.0  # an NVR busy or unreachable this long fails its remaining tasks
    events_kept: int = 200_000  # newest changes kept in the event feed; older ones are pruned

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
    updated: int = 0  # existing tasks, not yet done, whose password the sheet corrected
    ids: list[int] = field(default_factory=list)


class Store(ABC):
    """Durable task state. Every method is one transaction, committed before it returns."""

    ORDERS = ("id", "newest", "priority")  # task list orders
    url = ""  # where the state lives, fit for messages (never a password)
    # The database's errors that mean "not now" (unreachable, locked too long): answered
    # 503 so that workers retry, rather than 500.
    UNAVAILABLE: tuple[type[BaseException], ...] = ()

    def __init__(self, policy: Policy):
        self.policy = policy

    @abstractmethod
    def add(self, specs: list[TaskSpec]) -> ImportResult:
        """Queue new tasks atomically; specs whose key is already stored are counted, not added."""

    @abstractmethod
    def requeue(self, task_ids: list[int] | None = None, server: str | None = None,
                states: tuple[str, ...] = ("failed", "cancelled")) -> int:
        """Queue failed or cancelled tasks again with fresh attempts (all, these ids, or one NVR's)."""

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
    def fail(self, task_id: int, lease_id: str, error: str, permanent: bool = False,
             device: str | None = None) -> str:
        """Record a failed attempt; back off and retry, or fail the task. Returns the new state.

        `device` ("busy" or "unreachable") blames the NVR, not the task: the NVR rests
        (all its tasks wait) and no attempt is charged, until `nvr_give_up` seconds of
        such answers fail its remaining tasks.
        """

    @abstractmethod
    def release(self, task_id: int, lease_id: str) -> None:
        """Give a leased task back unrun (graceful shutdown): queued, no attempt charged."""

    @abstractmethod
    def cancel(self, task_id: int) -> str:
        """Cancel a task that is not finished (a running one's worker is refused at its next report)."""

    @abstractmethod
    def set_paused(self, paused: bool) -> None:
        """Stop or resume handing out work (claims answer "wait" while paused); durable."""

    @abstractmethod
    def tasks(self, state: str | None = None, nvr: str | None = None, worker: str | None = None,
              text: str | None = None, order: str = "id", offset: int = 0, limit: int = 50) -> tuple[list[dict], int]:
        """A page of public task views matching the filters, and how many match in all."""

    @abstractmethod
    def done_ids(self, after: int = 0) -> list[int]:
        """Ids of done tasks above `after`, ascending: for scripts that poll for results."""

    @abstractmethod
    def all_tasks(self):
        """Every task's public view in id order, streamed (for the report)."""

    @abstractmethod
    def rows(self, offset: int = 0, limit: int = 100) -> tuple[list[dict], int]:
        """Sheet rows with their chunks rolled up (tasks per state, files, bytes), and how many rows."""

    @abstractmethod
    def progress(self, minutes: int = 60) -> dict:
        """Completions per minute over the last `minutes`, the recent rate and the ETA of what is left."""

    @abstractmethod
    def events(self, after: int, limit: int = 500) -> list[dict]:
        """Changes recorded after event id `after`, oldest first (the feed behind /api/events)."""

    @abstractmethod
    def last_event(self) -> int:
        """The id of the newest change recorded."""

    @abstractmethod
    def metrics(self) -> dict:
        """Figures for /metrics, from durable state: tasks by state, attempts by outcome, bytes, NVR load."""

    @abstractmethod
    def task(self, task_id: int) -> dict:
        """Public view of one task (never its password). Raises TaskNotFound."""

    @abstractmethod
    def status(self) -> dict:
        """Counts per state, totals, workers seen, and whether the queue is drained."""

    def release_connection(self) -> None:
        """Give this thread's database connection back to the pool, if the store pools them.

        Called at the end of each request: a coordinator serves many threads with a
        few connections. Stores that keep one connection per thread have nothing to do.
        """
        return None

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
