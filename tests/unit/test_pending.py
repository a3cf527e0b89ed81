"""The pending queue: admission, overflow policies, order, expiry."""

from __future__ import annotations

import pytest

from natsrouter.config import OverflowPolicy
from natsrouter.link.outcome import Operation
from natsrouter.link.pending import Admission, Limits, MemoryPendingQueue, PendingOp, admit

DROP = OverflowPolicy.DROP_OLDEST
REJECT = OverflowPolicy.REJECT_NEW


def op(n: int, size: int = 10) -> PendingOp:
    subject = f"s.{n}"
    return PendingOp(Operation.PUBLISH, subject, b"x" * (size - len(subject)))


@pytest.mark.parametrize(
    ("count", "size", "new", "limits", "expected"),
    [
        (0, 0, 10, Limits(5, 100, DROP), Admission.STORE),
        (4, 40, 10, Limits(5, 100, DROP), Admission.STORE),
        (5, 50, 10, Limits(5, 100, DROP), Admission.EVICT_AND_STORE),
        (5, 50, 10, Limits(5, 100, REJECT), Admission.REJECT),
        (1, 95, 10, Limits(5, 100, DROP), Admission.EVICT_AND_STORE),
        (1, 95, 10, Limits(5, 100, REJECT), Admission.REJECT),
        (0, 0, 101, Limits(5, 100, DROP), Admission.DROP),
        (0, 0, 101, Limits(5, 100, REJECT), Admission.REJECT),
        (0, 0, 1, Limits(0, 100, DROP), Admission.DROP),
    ],
)
def test_admit(count: int, size: int, new: int, limits: Limits, expected: Admission) -> None:
    """The overflow decision for each bound and policy."""
    assert admit(count, size, new, limits) is expected


def test_items_come_back_oldest_first() -> None:
    """oldest_after walks the queue in acceptance order."""
    queue = MemoryPendingQueue(Limits(10, 1000, DROP))
    ids = [queue.push(op(n), now=0.0).item.id for n in range(4)]  # type: ignore[union-attr]
    walked, cursor = [], 0
    while (item := queue.oldest_after(cursor)) is not None:
        walked.append(item.op.subject)
        cursor = item.id
    assert walked == ["s.0", "s.1", "s.2", "s.3"]
    assert ids == sorted(ids)


def test_drop_oldest_evicts_the_oldest_to_make_room() -> None:
    """At the count bound, drop_oldest evicts the oldest item and stores the new one."""
    queue = MemoryPendingQueue(Limits(3, 1000, DROP))
    for n in range(3):
        queue.push(op(n), now=0.0)
    result = queue.push(op(3), now=0.0)
    assert result.admission is Admission.EVICT_AND_STORE
    assert [e.op.subject for e in result.evicted] == ["s.0"]
    assert queue.count == 3
    assert queue.size_bytes == 30


def test_byte_bound_evicts_as_many_as_needed() -> None:
    """A large item evicts several small ones until the bytes fit."""
    queue = MemoryPendingQueue(Limits(10, 40, DROP))
    for n in range(4):
        queue.push(op(n), now=0.0)
    result = queue.push(op(9, size=25), now=0.0)
    assert [e.op.subject for e in result.evicted] == ["s.0", "s.1", "s.2"]
    assert (queue.count, queue.size_bytes) == (2, 35)


def test_reject_new_keeps_the_queue_unchanged() -> None:
    """reject_new refuses the new item and keeps every old one."""
    queue = MemoryPendingQueue(Limits(2, 1000, REJECT))
    queue.push(op(0), now=0.0)
    queue.push(op(1), now=0.0)
    result = queue.push(op(2), now=0.0)
    assert (result.admission, result.item, result.evicted) == (Admission.REJECT, None, ())
    assert queue.count == 2


def test_expire_removes_only_older_items() -> None:
    """Items enqueued before the cut-off go; newer ones stay."""
    queue = MemoryPendingQueue(Limits(10, 1000, DROP))
    queue.push(op(0), now=1.0)
    queue.push(op(1), now=2.0)
    queue.push(op(2), now=3.0)
    expired = queue.expire(enqueued_before=2.5)
    assert [e.op.subject for e in expired] == ["s.0", "s.1"]
    assert (queue.count, queue.size_bytes) == (1, 10)


def test_record_failure_counts_attempts_and_keeps_the_item() -> None:
    """A failed replay stays queued with its attempt count raised."""
    queue = MemoryPendingQueue(Limits(10, 1000, DROP))
    item = queue.push(op(0), now=0.0).item
    assert item is not None
    queue.record_failure(item.id)
    queue.record_failure(item.id)
    again = queue.oldest_after(0)
    assert again is not None
    assert (again.id, again.attempts) == (item.id, 2)


def test_size_counts_subject_headers_and_payload() -> None:
    """An item's size is subject + header keys and values + payload."""
    item = PendingOp(Operation.PUBLISH_WITH_ACK, "abc", b"12345", {"Nats-Msg-Id": "xyz"})
    assert item.size == 3 + len("Nats-Msg-Id") + 3 + 5
