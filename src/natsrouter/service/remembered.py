"""Idempotent decide: the same (tenant_id, request_id) within the TTL gets the same answer.

A client that retries after a timeout must not create a second job or a second bill. So
each decided request is remembered for ``idempotency_ttl_seconds``, keyed by
``(tenant_id, request_id)`` (two tenants may use the same ``request_id``): a repeat gets the
same decision and the same ``assignment_id``, and its assignment is pushed again only while
the last push was not sent nor kept (``failed``, ``dropped``, ..., or ``queued``
and since gone from the link's queue, which may mean dropped), under the same
``Nats-Msg-Id``, so the stream stores it once. Copies that arrive while the first is being
decided wait for it. A repeat that asks for something else (another task, policy,
constraints, metadata or subject) is refused: reusing a request id is a client bug.

Per process and bounded in entries and bytes (``routing.bounded``). Across Router
processes, with ``shared_state_enabled``, the first answer is claimed in a key-value bucket
(``service.shared_decide.first_answer``) and ``assignment_id`` holds the id stored there;
without it the assignment stream's duplicate window deduplicates only a replayed
``Nats-Msg-Id``, not a new decision (docs/router.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

from natsrouter.errors import Reason
from natsrouter.link.outcome import Outcome, PubAck, Result
from natsrouter.routing.bounded import BoundedCache, text_size
from natsrouter.routing.decider import REASON_TEXT, Decision, DecisionReason
from natsrouter.routing.messages import DecideRequest
from natsrouter.service.assignments import Pushed

MAX_ENTRIES = 1_000_000
MAX_BYTES = 256 * 1024 * 1024
# Estimated bytes of a Decision, of a Pushed with its Result, and of the parsed request per
# byte of its JSON (Python objects take several times their text).
_DECISION_BYTES = 600
_PUSHED_BYTES = 500
_PARSED_PER_BYTE = 4
#: What every new entry counts beyond its key's characters and request's bytes: the two key
#: strings' ``text_size`` overhead and the decision (``remember_new``).
_NEW_BYTES = 2 * 49 + _DECISION_BYTES

Key = tuple[str, str]


def asked(request: DecideRequest) -> tuple[Any, ...]:
    """What a repeat must ask for again (the trace id and push flag may differ).

    Kept by reference and compared on a repeat: no hashing on the hot path. Its size is
    counted as a multiple of the request's bytes.
    """
    # Plain values in an exact tuple: see _Stored.
    task, limits = request.task, request.constraints
    return (
        request.policy_id,
        task.type,
        task.payload_ref,
        task.payload,
        limits.max_latency_ms,
        limits.max_cost,
        request.metadata,
        request.assignment_subject,
    )


def same_asked(first: tuple[Any, ...], again: tuple[Any, ...]) -> bool:
    """Whether a repeat asks for what was asked (``asked`` of both), as JSON values.

    Not Python's ``==``, which takes ``true`` for ``1``, ``1`` for ``1.0`` and ``-0.0`` for
    ``0.0``: another request, and one that the shared-state fingerprint (its JSON text) tells
    apart. Only a repeat pays for the walk.
    """
    return first == again and _same(first, again)


def _same(a: Any, b: Any) -> bool:
    # Any mapping: a request built without metadata holds a read-only one, a parsed one {}.
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and all(_same(v, b[k]) for k, v in a.items())
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is list or kind is tuple:
        return all(map(_same, a, b))  # lengths equal: a == b
    if kind is float:
        return float.__repr__(a) == float.__repr__(b)
    return True  # equal (a == b) and of one type


@dataclass
class Remembered:
    asked: tuple[Any, ...]
    decision: Decision
    #: The request's size in bytes, for the memory's byte bound.
    request_bytes: int = 0
    pushed: Pushed | None = None
    #: The assignment id stored in shared state for this request, before any push.
    assignment_id: str | None = None


#: How an answer is stored: one flat tuple, (*asked, *decision fields, *other entry fields).
#: CPython's full collections walk every object its collector tracks, and an answer kept as
#: objects (entry, decision, task, tuples) was five of them: with many answers remembered,
#: about a fifth of the Router's time and pauses of over a hundred milliseconds
#: (bench/decide_gc.py). The collector stops tracking a tuple once it finds in it only
#: strings, numbers, None and tuples it no longer tracks (one level of nesting per
#: collection); any dict, list, enum member or other object keeps the tuple tracked. So
#: the decision's reason is stored as its string, a push as a tuple of plain values, and
#: the small dicts of what was asked (payload, metadata, dicts within them) as flat tuples
#: of their keys then their values: once the first few collections have seen it, an
#: answer whose payload and metadata hold no list costs the collector nothing. ``_load``
#: gives the dicts back, so a repeat is compared with dict equality (key order aside), as
#: before.
_Stored = tuple[Any, ...]
_DECISION_FIELDS = Decision._fields
_REASON_AT = _DECISION_FIELDS.index("reason")
#: The entry's other fields (request bytes, pushed, assignment id, ...), in order.
_REST = fields(Remembered)[2:]
_rest_values = attrgetter(*(f.name for f in _REST))
_PUSHED_AT = [f.name for f in _REST].index("pushed")
_TAIL = len(_DECISION_FIELDS) + len(_REST)
#: Dicts with more keys stay dicts (tracked): freezing costs a call per value.
_FREEZE_MAX_KEYS = 32


def _frozen(value: Any) -> Any:
    """A dict of up to ``_FREEZE_MAX_KEYS`` keys as one tuple: its keys, then its values."""
    if type(value) is not dict or len(value) > _FREEZE_MAX_KEYS:
        return value  # JSON gives no tuples: a stored tuple is always a frozen dict
    values = value.values()
    for item in values:
        if type(item) is dict:
            return (*value, *map(_frozen, values))
    return (*value, *values)  # no dict within: no call per value


def _thawed(value: Any) -> Any:
    if type(value) is not tuple:
        return value
    half = len(value) // 2
    return dict(zip(value[:half], map(_thawed, value[half:]), strict=True))


def _pack(asked: tuple[Any, ...], decision: Decision, rest: tuple[Any, ...]) -> _Stored:
    return (
        *[_frozen(v) if type(v) is dict else v for v in asked],
        *decision[:_REASON_AT],
        REASON_TEXT[decision.reason],
        *decision[_REASON_AT + 1 :],
        *rest,
    )


def _flat_pushed(pushed: Pushed | None) -> tuple[Any, ...] | None:
    """A push as a tuple of plain values (its enums as their text). The link's error, if
    any, is not kept: a repeat's answer does not show it (``Pushed.to_dict``)."""
    if pushed is None:
        return None
    result = pushed.result
    ack = result.pub_ack
    return (
        pushed.assignment_id,
        pushed.subject,
        result.outcome._value_,  # the text, without the ``value`` property
        *(ack if ack is not None else (None, None, False)),
        result.pending_id,
        result.reason._value_ if result.reason is not None else None,
    )


def _pushed_back(flat: tuple[Any, ...] | None) -> Pushed | None:
    if flat is None:
        return None
    assignment_id, subject, outcome, stream, seq, duplicate, pending_id, reason = flat
    result = Result(
        Outcome(outcome),
        PubAck(stream, seq, duplicate) if stream is not None else None,
        pending_id,
        Reason(reason) if reason is not None else None,
    )
    return Pushed(assignment_id, subject, result)


def _store(entry: Remembered) -> _Stored:
    rest = list(_rest_values(entry))
    rest[_PUSHED_AT] = _flat_pushed(rest[_PUSHED_AT])
    return _pack(entry.asked, entry.decision, tuple(rest))


def _load(stored: _Stored) -> Remembered:
    split = len(stored) - _TAIL
    decision = list(stored[split : split + len(_DECISION_FIELDS)])
    decision[_REASON_AT] = DecisionReason(decision[_REASON_AT])
    rest = list(stored[split + len(_DECISION_FIELDS) :])
    rest[_PUSHED_AT] = _pushed_back(rest[_PUSHED_AT])
    return Remembered(tuple(map(_thawed, stored[:split])), Decision(*decision), *rest)


class DecideMemory:
    def __init__(
        self,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._ttl = ttl_seconds
        self._cache: BoundedCache[Key, _Stored] = BoundedCache(max_entries, max_bytes, clock)
        self._held = self._cache.held
        #: The keys being decided now, each with the future its copies wait on, made by the
        #: first copy that waits (None until then: most requests have no copy, and a future
        #: per request was one more object for the collector).
        self._busy: dict[Key, asyncio.Future[None] | None] = {}
        #: The keys being decided now (read-only to others: ``key in busy_keys`` is
        #: ``busy(key)`` without a call, for the decide path).
        self.busy_keys: Mapping[Key, asyncio.Future[None] | None] = self._busy

    async def wait_turn(self, key: Key) -> None:
        """Wait while another copy of this request is being decided."""
        busy_keys = self._busy
        while key in busy_keys:
            busy = busy_keys[key]
            if busy is None:
                busy = busy_keys[key] = asyncio.get_running_loop().create_future()
            await asyncio.shield(busy)

    def busy(self, key: Key) -> bool:
        """Another copy of this request is being decided (``wait_turn`` would wait)."""
        return key in self._busy

    def get(self, key: Key) -> Remembered | None:
        if key not in self._held:  # the usual miss, without the cache's call
            return None
        stored = self._cache.get(key)
        return _load(stored) if stored is not None else None

    def begin(self, key: Key) -> None:
        self._busy[key] = None

    def end(self, key: Key) -> None:
        busy = self._busy.pop(key, None)
        if busy is not None and not busy.done():
            busy.set_result(None)

    def remember(self, key: Key, entry: Remembered) -> None:
        size = (
            text_size(*key)
            + _DECISION_BYTES
            + _PARSED_PER_BYTE * entry.request_bytes
            + (_PUSHED_BYTES if entry.pushed else 0)
        )
        self._cache.put(key, _store(entry), self._ttl, size)

    def remember_new(
        self,
        key: Key,
        request: DecideRequest,
        decision: Decision,
        request_bytes: int,
        pushed: Pushed | None = None,
        assignment_id: str | None = None,
    ) -> None:
        """``remember(key, Remembered(asked(request), decision, request_bytes, pushed,
        assignment_id))``, the entry unbuilt: the decide path's way for a new request."""
        tenant_id, request_id = key
        # text_size(*key) written out, as is the rest: this runs once per decide.
        size = _NEW_BYTES + len(tenant_id) + len(request_id) + _PARSED_PER_BYTE * request_bytes
        if pushed is not None:
            size += _PUSHED_BYTES
        task, limits = request.task, request.constraints
        payload, metadata = task.payload, request.metadata
        provider_id, reason, policy_id, priority, latency, cost, fallback_used, retry = decision
        if type(payload) is dict and len(payload) <= _FREEZE_MAX_KEYS:
            # _frozen(payload) written out for the usual payload, a few plain values.
            values = payload.values()
            for item in values:
                if type(item) is dict:
                    payload = _frozen(payload)
                    break
            else:
                payload = (*payload, *values)
        # _pack(asked(request), decision, (request_bytes, None, None)) written out, in the
        # order of asked(), Decision's fields and Remembered's (tests/unit/
        # test_remembered_compact.py): only the payload and metadata can be dicts, and an
        # empty dict is frozen to ().
        stored = (
            request.policy_id,
            task.type,
            task.payload_ref,
            payload,
            limits.max_latency_ms,
            limits.max_cost,
            (_frozen(metadata) if metadata else ()) if type(metadata) is dict else metadata,
            request.assignment_subject,
            provider_id,
            REASON_TEXT[reason],
            policy_id,
            priority,
            latency,
            cost,
            fallback_used,
            retry,
            request_bytes,
            None if pushed is None else _flat_pushed(pushed),
            assignment_id,
        )
        self._cache.put(key, stored, self._ttl, size)

    def __len__(self) -> int:
        return len(self._cache)
