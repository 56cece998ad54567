"""Held claims, in process: no wake-up is missed, and only so many claims are held at once."""
from __future__ import annotations

import threading

import pytest

from taskserver.holds import Holds
from taskserver.store.base import Claim

pytestmark = pytest.mark.fast

TASK = Claim("task", task={"id": 7}, lease={"id": "l", "seconds": 60})
WAIT = Claim("wait", retry_after=60)


def test_a_write_answered_between_the_first_claim_and_the_hold_is_not_missed():
    holds = Holds(slots=1)
    seen = holds.generation  # read before the request's first claim
    holds.notify()  # a completion answered meanwhile
    answers = iter([TASK])
    assert holds.claim(lambda: next(answers), seen, 60) is TASK  # at once: not after 60 s


def test_a_hold_looks_again_at_each_write_and_ends_with_the_first_task():
    holds = Holds(slots=1)
    answers = iter([WAIT, TASK])
    claims = []

    def claim():
        claims.append(1)
        answer = next(answers)
        if answer is WAIT:
            holds.notify()  # the next write, answered while this hold goes on
        return answer

    seen = holds.generation
    holds.notify()  # the write that wakes it
    assert holds.claim(claim, seen, 60) is TASK and len(claims) == 2
    assert holds.holding == 0


def test_only_the_slots_hold_and_a_hold_that_times_out_answers_its_last_wait():
    holds = Holds(slots=1)
    release = threading.Event()
    entered = threading.Event()
    answers: list = []

    def slow_claim():
        entered.set()
        release.wait(30)
        return TASK

    seen = holds.generation
    holds.notify()
    first = threading.Thread(target=lambda: answers.append(holds.claim(slow_claim, seen, 60)))
    first.start()
    entered.wait(30)
    assert holds.holding == 1
    assert holds.claim(lambda: TASK, seen, 60) is None  # no slot left: the caller answers at once
    release.set()
    first.join(30)
    assert answers == [TASK]
    assert holds.claim(lambda: WAIT, holds.generation, 0) is WAIT  # nothing freed: the last answer, held


def test_a_stream_of_writes_makes_a_held_claim_look_again_only_every_quarter_second():
    holds = Holds(slots=1)
    claims = []
    done = threading.Event()

    def busy_fleet():  # writes answered as fast as they come, while the claim is held
        while not done.is_set():
            holds.notify()
    writer = threading.Thread(target=busy_fleet)
    writer.start()
    try:
        assert holds.claim(lambda: claims.append(1) or WAIT, holds.generation, 0.6) is WAIT
    finally:
        done.set()
        writer.join(10)
    assert 1 <= len(claims) <= 5  # 0.6 s at one look per 0.25 s; thousands of writes came meanwhile


def test_a_write_that_frees_one_slot_wakes_one_held_claim_and_an_import_wakes_them_all():
    holds = Holds(slots=4)
    claims: list[int] = []
    answers: list = []
    threads = [threading.Thread(target=lambda n=n: answers.append(
        holds.claim(lambda: claims.append(n) or TASK, holds.generation, 30))) for n in range(3)]
    for thread in threads:
        thread.start()
    while holds.holding < 3:  # all three are holding
        threading.Event().wait(0.01)
    holds.notify(everyone=False)  # a completion: one slot freed
    for _ in range(500):
        if claims:
            break
        threading.Event().wait(0.01)
    threading.Event().wait(0.5)  # room for a wrongly woken second one to claim
    assert len(claims) == 1 and holds.holding == 2
    holds.notify()  # an import: everyone looks
    for thread in threads:
        thread.join(5)
    assert len(claims) == 3 and answers == [TASK] * 3 and holds.holding == 0
