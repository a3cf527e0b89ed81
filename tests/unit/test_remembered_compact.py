"""Remembered decide answers come back as they went in, held in objects the GC can untrack."""

from __future__ import annotations

import asyncio
import gc

import pytest

from natsrouter.errors import OperationTimeoutError, Reason
from natsrouter.link.outcome import Outcome, PubAck, Result
from natsrouter.routing.decider import Decision, DecisionReason
from natsrouter.routing.messages import Constraints, DecideRequest, Task
from natsrouter.service.assignments import Pushed
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


def test_a_payload_comes_back_as_dicts_equal_to_the_asked_ones() -> None:
    """Nested dicts, lists and a dict of 40 keys come back equal, as dicts, whatever their order."""
    payload = {
        "z": 1,
        "a": {"y": [1, {"k": "v"}], "b": None},
        "big": {f"k{i}": i for i in range(40)},
    }
    request = DecideRequest("r-1", "acme", Task("text", None, payload))
    memory = DecideMemory(3600)
    memory.remember(("acme", "r-1"), Remembered(asked(request), DECISION, 321))
    back = memory.get(("acme", "r-1"))
    assert back is not None
    reordered = {"big": payload["big"], "a": {"b": None, "y": [1, {"k": "v"}]}, "z": 1}
    assert back.asked[3] == reordered
    assert type(back.asked[3]["a"]) is dict


def _tracked() -> int:
    # The collector untracks one level of nested tuples per collection.
    for _ in range(4):
        gc.collect()
    return len(gc.get_objects())


def test_an_answer_of_plain_values_costs_the_collector_nothing() -> None:
    """1,000 answers whose payload and metadata hold no list keep at most 10 tracked objects."""
    memory = DecideMemory(3600)
    for i in range(1000):
        memory.remember(("acme", f"r-{i}"), Remembered(asked(_request(i)), DECISION, 100))
    held = _tracked()
    del memory
    assert held - _tracked() <= 10


def test_remember_new_stores_what_remember_stores() -> None:
    """A new answer remembered without its entry comes back equal to one remembered whole."""
    request = _request(7)
    whole, new = DecideMemory(3600), DecideMemory(3600)
    whole.remember(("acme", "r-7"), Remembered(asked(request), DECISION, 123))
    new.remember_new(("acme", "r-7"), request, DECISION, 123)
    assert new.get(("acme", "r-7")) == whole.get(("acme", "r-7"))
    assert new.get(("acme", "r-7")) == Remembered(asked(request), DECISION, 123)


NEW_REQUESTS = {
    "plain": _request(7),
    "empty metadata, payload_ref": DecideRequest(
        "r-7", "acme", Task("text", "s3://b/k", None), policy_id="p", metadata={}
    ),
    "read-only metadata": DecideRequest("r-7", "acme", Task("text", None, {})),
    "nested and big": DecideRequest(
        "r-7",
        "acme",
        Task("text", None, {"a": {"b": [1, {"c": 2}]}, "big": {f"k{i}": i for i in range(40)}}),
        constraints=Constraints(None, 0.5),
        metadata={"m": {"n": None}},
        assignment_subject="jobs.x",
    ),
}


@pytest.mark.parametrize("reason", list(DecisionReason))
@pytest.mark.parametrize("name", list(NEW_REQUESTS))
def test_remember_new_stores_the_same_tuple_and_bytes_as_remember(
    name: str, reason: DecisionReason
) -> None:
    """Any request shape and reason: remember_new stores remember's tuple, bytes counted alike."""
    request = NEW_REQUESTS[name]
    decision = DECISION._replace(reason=reason)
    whole, new = DecideMemory(3600), DecideMemory(3600)
    whole.remember(("acme", "r-7"), Remembered(asked(request), decision, 123))
    new.remember_new(("acme", "r-7"), request, decision, 123)
    assert new._cache.get(("acme", "r-7")) == whole._cache.get(("acme", "r-7"))
    assert new._cache.bytes == whole._cache.bytes


def test_new_answers_cost_the_collector_nothing() -> None:
    """1,000 answers remembered by remember_new, metadata empty or not, keep at most 10 tracked."""
    memory = DecideMemory(3600)
    for i in range(1000):
        request = _request(i)
        if i % 2:
            request = request._replace(metadata={})
        memory.remember_new(("acme", f"r-{i}"), request, DECISION, 100)
    held = _tracked()
    del memory
    assert held - _tracked() <= 10


PUSHES = [
    Pushed("as-1", "jobs.a", Result(Outcome.SENT, PubAck("JOBS", 42, True))),
    Pushed("as-2", "jobs.a", Result(Outcome.QUEUED, pending_id=7)),
    Pushed(
        "as-3",
        "jobs.a",
        Result(Outcome.FAILED, reason=Reason.TIMEOUT, error=OperationTimeoutError("slow")),
    ),
]


@pytest.mark.parametrize("pushed", PUSHES, ids=["sent", "queued", "failed"])
def test_a_push_comes_back_equal_without_the_links_error(pushed: Pushed) -> None:
    """Outcome, PubAck, pending id and reason come back as they went in; the error is dropped."""
    memory = DecideMemory(3600)
    memory.remember(("acme", "r-1"), Remembered(asked(_request(1)), DECISION, 10, pushed))
    back = memory.get(("acme", "r-1"))
    assert back is not None
    assert back.pushed == Pushed(
        pushed.assignment_id, pushed.subject, pushed.result._replace(error=None)
    )
    assert back.pushed.to_dict() == pushed.to_dict()


def test_an_answer_with_a_push_costs_the_collector_nothing() -> None:
    """1,000 answers with a sent push keep at most 10 tracked objects."""
    memory = DecideMemory(3600)
    for i in range(1000):
        entry = Remembered(asked(_request(i)), DECISION, 100, PUSHES[0])
        memory.remember(("acme", f"r-{i}"), entry)
    held = _tracked()
    del memory
    assert held - _tracked() <= 10


@pytest.mark.parametrize("pushed", [None, *PUSHES], ids=["not-pushed", "sent", "queued", "failed"])
@pytest.mark.parametrize("name", list(NEW_REQUESTS))
def test_remember_new_with_a_push_stores_the_same_tuple_and_bytes_as_remember(
    name: str, pushed: Pushed | None
) -> None:
    """A new answer with its assignment id, pushed or not yet: remember's tuple and bytes."""
    request = NEW_REQUESTS[name]
    whole, new = DecideMemory(3600), DecideMemory(3600)
    whole.remember(("acme", "r-7"), Remembered(asked(request), DECISION, 123, pushed, "as-9"))
    new.remember_new(("acme", "r-7"), request, DECISION, 123, pushed, "as-9")
    assert new._cache.get(("acme", "r-7")) == whole._cache.get(("acme", "r-7"))
    assert new._cache.bytes == whole._cache.bytes
    assert new.get(("acme", "r-7")) == whole.get(("acme", "r-7"))


async def test_copies_wait_for_the_first_on_a_future_made_only_when_one_waits() -> None:
    """begin makes no future; the copies' wait_turn share one, and end releases them all."""
    memory = DecideMemory(3600)
    key = ("acme", "r-1")
    memory.begin(key)
    assert memory.busy_keys[key] is None
    copies = [asyncio.create_task(memory.wait_turn(key)) for _ in range(3)]
    await asyncio.sleep(0)  # each copy runs up to its wait
    waited_on = memory.busy_keys[key]
    assert waited_on is not None and [c.done() for c in copies] == [False] * 3
    memory.end(key)
    await asyncio.wait_for(asyncio.gather(*copies), 5)
    assert waited_on.done() and not memory.busy(key)
