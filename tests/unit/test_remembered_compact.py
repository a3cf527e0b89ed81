"""Remembered decide answers come back as they went in, held in few objects the GC tracks."""

from __future__ import annotations

import gc

from natsrouter.routing.decider import Decision, DecisionReason
from natsrouter.routing.messages import Constraints, DecideRequest, Task
from natsrouter.service.remembered import DecideMemory, Remembered, asked

DECISION = Decision("a", DecisionReason.FALLBACK, "default", 2, 12.5, None, True, 3)


def _request(i: int) -> DecideRequest:
    return DecideRequest(
        f"r-{i}",
        "acme",
        Task("text", None, {"prompt": "hi"}),
        constraints=Constraints(100, None),
        metadata={"session_id": "s"},
    )


def test_an_answer_comes_back_equal() -> None:
    """get returns the asked values, decision (reason included), size and push remembered."""
    memory = DecideMemory(3600)
    entry = Remembered(asked(_request(1)), DECISION, 321)
    memory.remember(("acme", "r-1"), entry)
    back = memory.get(("acme", "r-1"))
    assert back == entry
    assert back is not None and back.decision.reason is DecisionReason.FALLBACK


def test_each_answer_costs_the_collector_at_most_two_objects() -> None:
    """1,000 answers remembered add at most 2,100 objects the garbage collector tracks."""
    memory = DecideMemory(3600)
    entries = [Remembered(asked(_request(i)), DECISION, 100) for i in range(1000)]
    gc.collect()
    before = len(gc.get_objects())
    for i, entry in enumerate(entries):
        memory.remember(("acme", f"r-{i}"), entry)
    del entries
    gc.collect()
    assert len(gc.get_objects()) - before <= 2100
