"""Blocked destinations: each subject backs off on its own, and is freed by a success."""

from __future__ import annotations

import random

from natsrouter.errors import Reason
from natsrouter.link.backoff import BackoffPolicy
from natsrouter.link.destinations import Destinations


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _destinations(clock: Clock, changes: list[int]) -> Destinations:
    return Destinations(BackoffPolicy(100, 400, 0.0), random.Random(0), clock, changes.append)


def test_each_failure_doubles_the_subjects_wait_up_to_the_cap() -> None:
    """Failures 1..4 of one subject wait 0.1, 0.2, 0.4, 0.4 s; the gauge counts it once."""
    clock, changes = Clock(), []
    dest = _destinations(clock, changes)
    waits = []
    for _ in range(4):
        dest.failed("a", Reason.TIMEOUT)
        due = dest.next_due()
        assert due is not None
        waits.append(round(due - clock.now, 3))
    assert (waits, changes) == ([0.1, 0.2, 0.4, 0.4], [1])


def test_a_blocked_subject_waits_then_probes_and_a_success_frees_it() -> None:
    """Waiting until its time, then probing; healthy() frees it and the gauge drops."""
    clock, changes = Clock(), []
    dest = _destinations(clock, changes)
    dest.failed("a", Reason.NO_RESPONDERS)
    assert (dest.waiting("a"), dest.waiting("b"), dest.reason("a")) == (
        True,
        False,
        Reason.NO_RESPONDERS,
    )
    clock.now += 0.1
    assert (dest.waiting("a"), dest.probing("a")) == (False, True)
    assert dest.status() == {"a": {"failures": 1, "retry_in_s": 0.0, "reason": "no_responders"}}
    dest.healthy("a")
    assert (dest.probing("a"), len(dest), changes) == (False, 0, [1, 0])
