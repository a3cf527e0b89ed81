"""What several Router processes share, in JetStream key-value buckets, so they act as one.

With ``shared_state_enabled``, three things are shared through the link's key-value
operations (no other server than the NATS the Router already uses):

- **decide idempotency** (bucket ``ROUTER_DECIDES``, TTL ``idempotency_ttl_seconds``): the
  first Router to decide a ``(tenant_id, request_id)`` stores the decision and the
  assignment id with a compare-and-set create; a Router that loses the race, or gets the
  request again later, answers with the stored ones (and a push under the same
  ``Nats-Msg-Id``, which the assignment stream stores once), without taking a rate-limit
  token, even from an empty bucket or with every breaker open here
  (``service.shared_decide.first_answer``);
- **sticky sessions** (bucket ``ROUTER_STICKY``): the provider of a session, with the wall
  time its policy's TTL ends; a new session is claimed with a create, so two Routers that
  see its first requests at once agree on one provider;
- **circuit-breaker opens** (bucket ``ROUTER_BREAKERS``): a Router whose breaker opens writes
  until when; every Router reads the keys every ``shared_state_breaker_sync_ms`` and opens
  its own breaker for the time left.

Shared state never stops a decide. Each operation waits at most ``shared_state_timeout_ms``;
a failure (NATS down, bucket unreachable, a timeout) is counted
(``router_shared_state_unavailable_total{operation}``), logged once per outage of a bucket
(``ROUTER_SHARED_STATE_UNAVAILABLE``, then ``ROUTER_SHARED_STATE_RESTORED``), shown in
``/status``, and after a failure that took time (not "not connected", which fails at once)
the Router uses its local state only without asking for ``shared_state_retry_ms`` (so a slow
bucket does not slow every decide). docs/operations.md says what is then
not guaranteed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

from natsrouter.config import Settings
from natsrouter.errors import LinkError, NotConnectedError, OtherLinkError
from natsrouter.link.link import Link
from natsrouter.link.transport import BucketSpec
from natsrouter.routing import strict_json
from natsrouter.routing.breaker import BreakerState
from natsrouter.routing.decider import Decision, DecisionReason
from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.strict_json import StrictJsonError
from natsrouter.service.events import RouterEvents

DECIDES_BUCKET = "ROUTER_DECIDES"
STICKY_BUCKET = "ROUTER_STICKY"
BREAKERS_BUCKET = "ROUTER_BREAKERS"
# Sticky and breaker values carry their own end time; the buckets' TTL only clears old keys.
# A claim that keeps losing to writes this many times is given up (counted as unavailable).
_CLAIM_ROUNDS = 5
# Between rounds, when a write was lost but the winner's value cannot be read yet.
_CLAIM_BACKOFF_S = 0.01
_STICKY_BUCKET_TTL_S = 7 * 24 * 3600.0
_BREAKERS_BUCKET_TTL_S = 24 * 3600.0

T = TypeVar("T")


class SharedOp(StrEnum):
    """Bounded values of the ``operation`` label of the unavailable counter."""

    DECISION_CLAIM = "decision_claim"
    DECISION_READ = "decision_read"
    STICKY_READ = "sticky_read"
    STICKY_CLAIM = "sticky_claim"
    BREAKER_WRITE = "breaker_write"
    BREAKER_READ = "breaker_read"


#: The bucket each operation uses: availability is followed per bucket, since each has its
#: own leader (one can be electing while the others answer).
BUCKET_OF = {
    SharedOp.DECISION_CLAIM: DECIDES_BUCKET,
    SharedOp.DECISION_READ: DECIDES_BUCKET,
    SharedOp.STICKY_READ: STICKY_BUCKET,
    SharedOp.STICKY_CLAIM: STICKY_BUCKET,
    SharedOp.BREAKER_WRITE: BREAKERS_BUCKET,
    SharedOp.BREAKER_READ: BREAKERS_BUCKET,
}


@dataclass
class _BucketHealth:
    available: bool = True
    skip_until: float = 0.0


def bucket_specs(settings: Settings) -> list[BucketSpec]:
    replicas = settings.jetstream_stream_replicas
    return [
        BucketSpec(DECIDES_BUCKET, float(settings.idempotency_ttl_seconds), replicas),
        BucketSpec(STICKY_BUCKET, _STICKY_BUCKET_TTL_S, replicas),
        BucketSpec(BREAKERS_BUCKET, _BREAKERS_BUCKET_TTL_S, replicas),
    ]


def key_of(*parts: str) -> str:
    """A bucket key for any text (tenants and ids may hold characters keys may not).

    Any text: a session value may hold a lone surrogate (a client's ``"\\ud800"``), which
    only ``surrogatepass`` encodes; it costs nothing on ASCII.
    """
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(asked: tuple[Any, ...]) -> str:
    """What a repeat must ask for again, as text two processes compute alike."""
    # remembered.asked is flat (one tuple, see remembered._Stored); the document keeps its
    # nested shape, so fingerprints stay what every Router version computes.
    policy_id, task_type, payload_ref, payload, max_latency_ms, max_cost, metadata, subject = asked
    document = [
        policy_id,
        [task_type, payload_ref, payload],
        [max_latency_ms, max_cost],
        # A request built without metadata holds a read-only empty mapping, which default=str
        # would write as text: as a dict, it is the {} a parsed request holds.
        dict(metadata),
        subject,
    ]
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _object(raw: bytes) -> dict[str, Any]:
    """A bucket value as a Router writes it: a standard-JSON object within strict_json's
    bounds. Anything else (another process wrote the bucket) is a ``ValueError``, counted as
    an ``invalid_value``, never an error out of a decide (``Infinity`` once made the sticky
    path raise on ``math.ceil``; a deep array, a ``RecursionError``)."""
    try:
        document = strict_json.loads(raw, unicode_only=True)
    except StrictJsonError as err:
        raise ValueError(str(err)) from None
    if not isinstance(document, dict):
        raise TypeError("(document): expected a JSON object")
    return document


def _until(document: dict[str, Any]) -> float:
    """The value's end time (wall clock seconds): a number, not a bool."""
    until = document["until"]
    if isinstance(until, bool) or not isinstance(until, int | float):
        raise TypeError("until: expected a number")
    return float(until)


@dataclass(frozen=True)
class SharedDecide:
    """The decision a Router stored for a (tenant_id, request_id), and its assignment id."""

    asked: str
    decision: Decision
    assignment_id: str

    def encode(self) -> bytes:
        d = self.decision
        return json.dumps(
            {
                "asked": self.asked,
                "assignment_id": self.assignment_id,
                "decision": {**d.to_dict(), "retry": d.retry},
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> SharedDecide:
        """The stored answer; a field of another type than a Router writes is a ``TypeError``
        (an ``invalid_value``): the answer is written from the fields by type
        (``answers.ok_json`` writes ids as strings) and the retry count is added to."""
        doc = _object(raw)
        d = doc["decision"]
        decision = Decision(
            provider_id=_typed(d, "provider_id", str),
            reason=DecisionReason(_typed(d, "reason", str)),
            policy_id=_typed(d, "policy_id", str),
            # A number: a policy's "integer" may be written 1.0 (JSON Schema accepts it).
            priority=_typed(d, "priority", int, float),
            expected_latency_ms=_typed(d, "expected_latency_ms", int, float, type(None)),
            expected_cost=_typed(d, "expected_cost", int, float, type(None)),
            fallback_used=_typed(d, "fallback_used", bool),
            retry=_typed({"retry": 0, **d}, "retry", int, float),
        )
        return cls(_typed(doc, "asked", str), decision, _typed(doc, "assignment_id", str))


def _typed(document: dict[str, Any], name: str, *kinds: type) -> Any:
    """``document[name]`` when its type is one of ``kinds`` exactly (a bool is no int)."""
    value = document[name]
    if type(value) not in kinds:
        raise TypeError(f"{name}: expected {' or '.join(k.__name__ for k in kinds)}")
    return value


class Held(NamedTuple):
    """A session's provider as stored, the seconds it has left, and the key's revision."""

    provider: str
    seconds_left: float
    revision: int


class SharedState:
    def __init__(
        self,
        settings: Settings,
        link: Link,
        events: RouterEvents,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._link = link
        self._events = events
        self._wall = wall_clock
        self._clock = clock
        self._timeout_s = settings.shared_state_timeout_ms / 1000
        self._retry_s = settings.shared_state_retry_ms / 1000
        self._buckets = {name: _BucketHealth() for name in set(BUCKET_OF.values())}
        self._last_error: str | None = None
        self.unavailable_count = 0
        events.shared_state_available(True)

    async def start(self) -> None:
        for spec in bucket_specs(self._settings):
            await self._link.declare_bucket(spec)

    async def first_connection(self) -> None:
        """Return once the link has connected (at once when it is now)."""
        while not await self._link.wait_connected(60.0):
            pass

    def status(self) -> dict[str, Any]:
        """The ``/status`` part."""
        return {
            "enabled": True,
            "available": self.available,
            "buckets": {name: b.available for name, b in sorted(self._buckets.items())},
            "unavailable_total": self.unavailable_count,
            "last_error": self._last_error,
        }

    # -- decide idempotency ----------------------------------------------------------------

    async def claim_decide(
        self, tenant_id: str, request_id: str, mine: SharedDecide
    ) -> SharedDecide | None:
        """Store ``mine`` unless a Router stored an answer first: the stored answer then.

        ``mine`` back when it was stored; None when shared state is unavailable.
        """
        key = key_of(tenant_id, request_id)

        async def claim() -> SharedDecide:
            raw = await self._create_or_read(DECIDES_BUCKET, key, mine.encode())
            return mine if raw is None else SharedDecide.decode(raw)

        return await self._attempt(SharedOp.DECISION_CLAIM, claim)

    async def _create_or_read(self, bucket: str, key: str, value: bytes) -> bytes | None:
        """None when ``value`` was stored; else the value another writer stored first.

        Only the create decides who wins (never a read): a key that expires between a lost
        create and the read is created again.
        """
        for attempt in range(_CLAIM_ROUNDS):
            if await self._link.kv_create(bucket, key, value) is not None:
                return None
            entry = await self._link.kv_get(bucket, key)
            if entry is not None:
                return entry.value
            # Lost, and the winner's value is not readable yet (being applied on a cluster).
            await asyncio.sleep(_CLAIM_BACKOFF_S * (attempt + 1))
        raise OtherLinkError(f"{bucket}: key neither created nor read in {_CLAIM_ROUNDS} rounds")

    async def stored_decide(self, tenant_id: str, request_id: str) -> SharedDecide | None:
        """The answer a Router stored for this request; None when there is none, or when
        shared state is unavailable."""
        key = key_of(tenant_id, request_id)

        async def read() -> SharedDecide | None:
            entry = await self._link.kv_get(DECIDES_BUCKET, key)
            return None if entry is None else SharedDecide.decode(entry.value)

        return await self._attempt(SharedOp.DECISION_READ, read)

    def replayed(self) -> None:
        """A decide answered with what another Router stored."""
        self._events.decide_replayed()

    # -- sticky sessions -------------------------------------------------------------------

    async def sticky_get(self, session: tuple[str, str, str]) -> Held | None:
        """The session's live provider as stored by any Router, or None."""
        key = key_of(*session)

        async def read() -> Held | None:
            entry = await self._link.kv_get(STICKY_BUCKET, key)
            return None if entry is None else self._live(entry.value, entry.revision)

        return await self._attempt(SharedOp.STICKY_READ, read)

    async def sticky_claim(
        self, session: tuple[str, str, str], provider: str, ttl_seconds: int, seen: Held | None
    ) -> Held | None:
        """Make ``provider`` the session's, unless another Router's live choice came first.

        Every write is a compare-and-set: a create when the key has no value, else an update
        at the revision last read (``seen``: what this decide read; a live provider this
        Router found unusable, or a provider whose time is up). When another write comes
        first, a live provider it stored is the answer. The provider in force; None when
        shared state is unavailable.
        """
        key = key_of(*session)
        value = json.dumps({"provider": provider, "until": self._wall() + ttl_seconds}).encode()

        async def claim() -> Held:
            revision = seen.revision if seen is not None else None
            for attempt in range(_CLAIM_ROUNDS):
                if revision is None:
                    stored = await self._link.kv_create(STICKY_BUCKET, key, value)
                else:
                    stored = await self._link.kv_update(STICKY_BUCKET, key, value, revision)
                if stored is not None:
                    return Held(provider, float(ttl_seconds), stored)
                entry = await self._link.kv_get(STICKY_BUCKET, key)
                if entry is None:  # the winner's value not readable yet: wait a little
                    revision = None
                    await asyncio.sleep(_CLAIM_BACKOFF_S * (attempt + 1))
                    continue
                held = self._live(entry.value, entry.revision)
                if held is not None:
                    return held
                revision = entry.revision  # its time is up: replace it at its revision
            raise OtherLinkError(f"{STICKY_BUCKET}: session neither claimed nor read")

        return await self._attempt(SharedOp.STICKY_CLAIM, claim)

    def _live(self, raw: bytes, revision: int) -> Held | None:
        doc = _object(raw)
        provider = doc["provider"]
        if not isinstance(provider, str):
            raise TypeError("provider: expected a string")
        left = _until(doc) - self._wall()
        return Held(provider, left, revision) if left > 0 else None

    # -- circuit breakers ------------------------------------------------------------------

    async def breaker_opened(self, provider: str, open_s: float) -> None:
        """Tell the other Routers that ``provider``'s breaker is open for ``open_s``."""
        value = json.dumps({"until": self._wall() + open_s}).encode()

        async def write() -> None:
            await self._link.kv_put(BREAKERS_BUCKET, key_of(provider), value)

        await self._attempt(SharedOp.BREAKER_WRITE, write)

    async def breaker_open_for(self, provider: str) -> tuple[float, int] | None:
        """Seconds the shared record keeps ``provider``'s breaker open (0: not open) and the
        record's revision (0: none); None when shared state is unavailable."""

        async def read() -> tuple[float, int]:
            entry = await self._link.kv_get(BREAKERS_BUCKET, key_of(provider))
            if entry is None:
                return 0.0, 0
            left = max(0.0, _until(_object(entry.value)) - self._wall())
            return left, entry.revision

        return await self._attempt(SharedOp.BREAKER_READ, read)

    # -- availability ----------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True while every bucket answered at its last use."""
        return all(b.available for b in self._buckets.values())

    async def _attempt(self, op: SharedOp, call: Callable[[], Awaitable[T]]) -> T | None:
        bucket = BUCKET_OF[op]
        health = self._buckets[bucket]
        if self._clock() < health.skip_until:
            self.unavailable_count += 1
            self._events.shared_state_skipped(op.value)
            return None
        try:
            result = await asyncio.wait_for(call(), self._timeout_s)
        except (LinkError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            # ValueError, KeyError, TypeError: a value this version cannot read.
            self._failed(op, bucket, health, exc)
            return None
        if not health.available:
            health.available = True
            self._events.shared_state_restored(bucket)
            self._events.shared_state_available(self.available)
        return result

    def _failed(self, op: SharedOp, bucket: str, health: _BucketHealth, exc: Exception) -> None:
        self.unavailable_count += 1
        if not isinstance(exc, NotConnectedError):
            # A failure that took time (a timeout, a refusal): do not wait for it again on
            # every decide. Not connected fails at once: ask again as soon as the link is up.
            health.skip_until = self._clock() + self._retry_s
        reason = exc.reason.value if isinstance(exc, LinkError) else "timeout"
        if isinstance(exc, ValueError | KeyError | TypeError):
            reason = "invalid_value"
        self._last_error = f"{op.value}: {reason}"
        error = str(exc) or type(exc).__name__
        self._events.shared_state_unavailable(
            op.value, bucket, reason, error, first=health.available
        )
        if health.available:
            health.available = False
            self._events.shared_state_available(False)


class BreakerSync:
    """Shares breaker opens: written when one opens here, read every sync interval."""

    def __init__(self, shared: SharedState, health: ProviderHealth, interval_s: float) -> None:
        self._shared = shared
        self._health = health
        self._interval_s = interval_s
        self._writes: set[asyncio.Task[None]] = set()
        #: The record revision each breaker was last opened from: a record is one opening.
        #: Read again, it would re-open a breaker that turned half-open for as long as its
        #: end lies ahead, which a writer whose clock runs ahead puts hours away.
        self._applied: dict[str, int] = {}
        health.on_opened = self._opened

    def _opened(self, provider: str, open_s: float) -> None:
        task = asyncio.get_running_loop().create_task(self._shared.breaker_opened(provider, open_s))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def sync_once(self) -> None:
        """Open, for the time left, each breaker another Router opened."""
        for provider in self._health.breaker_names():
            record = await self._shared.breaker_open_for(provider)
            if record is None:
                continue
            left, revision = record
            already_open = self._health.state(provider) is BreakerState.OPEN
            if left and not already_open and self._applied.get(provider) != revision:
                self._applied[provider] = revision
                self._health.open_for(provider, left)

    async def run(self) -> None:
        # Not before the first connection: a start is not an outage. After it, a read while
        # NATS is away counts and says so like a decide would, even when no decide comes.
        await self._shared.first_connection()
        while True:
            await asyncio.sleep(self._interval_s)
            await self.sync_once()

    async def close(self, timeout_s: float = 2.0) -> None:
        """Let the writes in hand finish (each is bounded by ``shared_state_timeout_ms``)."""
        if self._writes:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._writes, return_exceptions=True), timeout_s
                )
