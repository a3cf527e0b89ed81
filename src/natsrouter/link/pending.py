"""The pending queue: operations accepted while not connected, kept for replay.

Bounded by count and bytes, with an overflow policy and an optional expiry. The link talks to
the ``PendingQueue`` protocol; ``MemoryPendingQueue`` is the in-memory implementation and
``spool.SqlitePendingQueue`` the durable one. The overflow decision itself is the
pure function ``admit`` so every implementation applies the same rule.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple, Protocol

from natsrouter.config import OverflowPolicy
from natsrouter.link.outcome import Operation


class PendingOp(NamedTuple):
    """One publish to be made later (a NamedTuple: one is built per JetStream publish)."""

    operation: Operation
    subject: str
    payload: bytes
    headers: Mapping[str, str] | None = None

    @property
    def size(self) -> int:
        """Bytes counted against ``nats_max_pending_bytes``: subject, headers and payload."""
        header_bytes = sum(len(k) + len(v) for k, v in (self.headers or {}).items())
        return len(self.subject) + header_bytes + len(self.payload)


@dataclass(frozen=True)
class PendingItem:
    id: int
    op: PendingOp
    #: Wall-clock seconds when it was accepted (survives a restart with a durable queue).
    enqueued_at: float
    #: Replays tried so far that did not send it.
    attempts: int = 0


class Admission(StrEnum):
    STORE = "store"
    #: Store after evicting the oldest items (drop_oldest).
    EVICT_AND_STORE = "evict_and_store"
    #: Cannot fit even in an empty queue: not kept (drop_oldest).
    DROP = "drop"
    REJECT = "reject"


@dataclass(frozen=True)
class Limits:
    max_count: int
    max_bytes: int
    overflow: OverflowPolicy


def admit(count: int, size_bytes: int, new_size: int, limits: Limits) -> Admission:
    """Decide what a queue holding ``count`` items of ``size_bytes`` does with one more."""
    fits_at_all = limits.max_count >= 1 and new_size <= limits.max_bytes
    if not fits_at_all:
        return Admission.REJECT if limits.overflow is OverflowPolicy.REJECT_NEW else Admission.DROP
    if count + 1 <= limits.max_count and size_bytes + new_size <= limits.max_bytes:
        return Admission.STORE
    if limits.overflow is OverflowPolicy.REJECT_NEW:
        return Admission.REJECT
    return Admission.EVICT_AND_STORE


@dataclass(frozen=True)
class PushResult:
    admission: Admission
    #: The stored item, when the admission stored it.
    item: PendingItem | None
    #: Oldest items evicted to make room (already removed from the queue).
    evicted: tuple[PendingItem, ...] = ()


class PendingQueue(Protocol):
    """Oldest-first store of pending operations.

    A durable implementation may raise ``spool.SpoolError`` from any method that touches
    its file; the memory one never raises.
    """

    @property
    def limits(self) -> Limits: ...
    @property
    def count(self) -> int: ...
    @property
    def size_bytes(self) -> int: ...
    def push(self, op: PendingOp, now: float) -> PushResult: ...
    def oldest_after(self, after_id: int) -> PendingItem | None: ...
    def batch_after(self, after_id: int, limit: int) -> list[PendingItem]: ...
    def subject_counts(self) -> dict[str, int]:
        """How many items each subject has queued (read once, when the link starts)."""
        ...

    def remove(self, item_id: int) -> bool: ...
    def remove_later(self, item: PendingItem) -> None:
        """Take a sent item out of the queue now; a durable queue may delete it in batches."""
        ...

    def flush(self) -> None:
        """Make ``remove_later`` durable (a no-op in memory)."""
        ...

    def record_failure(self, item_id: int) -> None: ...
    def expire(self, enqueued_before: float) -> list[PendingItem]: ...
    def close(self) -> None: ...


class MemoryPendingQueue:
    """``PendingQueue`` in process memory: lost if the process dies."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._items: OrderedDict[int, PendingItem] = OrderedDict()
        self._bytes = 0
        self._next_id = 1

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def count(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def push(self, op: PendingOp, now: float) -> PushResult:
        admission = admit(len(self._items), self._bytes, op.size, self._limits)
        if admission in (Admission.DROP, Admission.REJECT):
            return PushResult(admission, None)
        evicted: list[PendingItem] = []
        while admission is Admission.EVICT_AND_STORE and (
            len(self._items) + 1 > self._limits.max_count
            or self._bytes + op.size > self._limits.max_bytes
        ):
            _, oldest = self._items.popitem(last=False)
            self._bytes -= oldest.op.size
            evicted.append(oldest)
        item = PendingItem(id=self._next_id, op=op, enqueued_at=now)
        self._next_id += 1
        self._items[item.id] = item
        self._bytes += op.size
        return PushResult(admission, item, tuple(evicted))

    def oldest_after(self, after_id: int) -> PendingItem | None:
        # Ids only grow, so the first id past the cursor is the oldest one left after it.
        for item_id, item in self._items.items():
            if item_id > after_id:
                return item
        return None

    def batch_after(self, after_id: int, limit: int) -> list[PendingItem]:
        batch: list[PendingItem] = []
        for item_id, item in self._items.items():
            if item_id > after_id:
                batch.append(item)
                if len(batch) >= limit:
                    break
        return batch

    def subject_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self._items.values():
            counts[item.op.subject] = counts.get(item.op.subject, 0) + 1
        return counts

    def remove(self, item_id: int) -> bool:
        item = self._items.pop(item_id, None)
        if item is None:
            return False
        self._bytes -= item.op.size
        return True

    def remove_later(self, item: PendingItem) -> None:
        self.remove(item.id)

    def flush(self) -> None:
        """Nothing to write for memory."""

    def record_failure(self, item_id: int) -> None:
        item = self._items.get(item_id)
        if item is not None:
            self._items[item_id] = replace(item, attempts=item.attempts + 1)

    def expire(self, enqueued_before: float) -> list[PendingItem]:
        expired = [item for item in self._items.values() if item.enqueued_at < enqueued_before]
        for item in expired:
            self.remove(item.id)
        return expired

    def close(self) -> None:
        """Nothing to release for memory; present for the protocol."""
