"""Held claims: a worker told to wait may ask the coordinator to hold its next claim.

A worker that finds nothing it may take (every NVR with work at its cap, resting,
or the work leased to others) is told to ask again after up to `--max-wait`
seconds; the moment a task finishes and frees its NVR's slot, nobody is there to
take the next one. With `GET /api/claim?worker=W&wait=S` the coordinator keeps
the request open for up to S seconds (never longer than its own hint) and claims
again as soon as a write that may free work (a completion, a failure, a release,
an import, a requeue, a resume...) has been answered by this coordinator.

A held claim takes one of the server's threads, so at most half of them hold at
once; a claim that finds them all taken is answered at once, as before, and the
worker polls. Holding is opt-in: a worker that never asks polls as it always did,
and writes on another coordinator of the same database only end the hold when it
times out, which is when the worker would have asked again anyway.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flask import Flask, g, request

from .store.base import Claim

MAX_HOLD = 60.0  # seconds a worker may ask for; the coordinator's own hint (`--max-wait`) bounds it further
# A held claim looks again at most this often: a busy fleet's writes must not turn each held
# claim into a stream of claims (four held claims then cost at most 16 claims a second).
MIN_GAP = 0.25
# Writes that never free work: a heartbeat, a worker's state. Every other write wakes held claims.
QUIET = {"api.heartbeat", "api.worker_state"}
# Writes that free one task's slot at most: they wake one held claim (if it finds nothing, no other
# would). An import, a requeue, a resume may free many: they wake them all. A completion whose worker
# took its next task in the same request (`g.refilled`) wakes none: on a busy fleet that worker filled
# the slot, and every held claim woken would find nothing; a slot it left free elsewhere is found when
# the holds time out, as a poll would have.
ONE = {"api.complete", "api.fail", "api.release"}


def install(app: Flask, threads: int) -> Holds:
    """Held claims for this app: up to half its threads may hold; answered writes wake them."""
    holds = app.extensions["taskserver.holds"] = Holds(threads // 2)

    @app.after_request
    def wake_held_claims(response):
        if request.method not in ("GET", "HEAD", "OPTIONS") and response.status_code < 400 \
                and request.endpoint not in QUIET and not g.get("refilled"):
            holds.notify(everyone=request.endpoint not in ONE)
        return response

    return holds


class Holds:
    """Wakes held claims when work may have been freed, and bounds how many are held."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic):
        self._slots = threading.BoundedSemaphore(max(1, slots))
        self._changed = threading.Condition()
        self._clock = clock
        self.generation = 0  # counts the writes that may have freed work
        self.holding = 0  # claims held right now (a gauge in /metrics)

    def notify(self, everyone: bool = True) -> None:
        """A write that may free work was answered: held claims look again (or one of them)."""
        with self._changed:
            self.generation += 1
            if everyone:
                self._changed.notify_all()
            else:
                self._changed.notify()

    def claim(self, claim: Callable[[], Claim], seen: int, seconds: float,
              gone: Callable[[], bool] = lambda: False) -> Claim | None:
        """Claim again each time work may have been freed since generation `seen`, for up to `seconds`.

        Returns the first answer that is not "wait", or the last "wait" once the time
        is up; None if no thread is free to hold, or once `gone()` says the worker hung
        up (nothing is claimed for it then).
        """
        if not self._slots.acquire(blocking=False):
            return None
        with self._changed:
            self.holding += 1
        try:
            deadline = self._clock() + seconds
            looked = None  # when this hold last claimed
            while True:
                with self._changed:
                    while self.generation == seen:
                        left = deadline - self._clock()
                        if left <= 0:
                            break
                        self._changed.wait(left)
                    if looked is not None:  # not sooner than MIN_GAP after the last look
                        until = min(looked + MIN_GAP, deadline)
                        while (pause := until - self._clock()) > 0:
                            self._changed.wait(pause)
                    seen = self.generation
                if gone():
                    self.notify(everyone=False)  # this wake-up may have been the only one: pass it on
                    return None
                answer = claim()
                looked = self._clock()
                if answer.status != "wait" or looked >= deadline:
                    return answer
        finally:
            with self._changed:
                self.holding -= 1
            self._slots.release()
