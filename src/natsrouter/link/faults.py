"""The fault-injection seam: a ``Transport`` wrapper that fails operations on demand.

Off unless ``nats_fault_injection_enabled``. Faults are set per target (``connect`` or one of
the link's operations) from Python or the admin endpoint (``/admin/faults``), and cleared the
same way. What each fault does (docs/faults.md):

- ``error(reason)``: the operation raises the error class of ``reason`` (default
  ``fault_injected``), exactly as if NATS had failed that way;
- ``timeout``: raises ``OperationTimeoutError`` at once (no real wait);
- ``close_connection``: drops the live connection (the link sees a loss and reconnects), and
  the operation fails with ``ConnectionClosedError``;
- ``delay(ms)``: waits, then performs the operation;
- ``intermittent(p)``: with probability ``p`` behaves as ``error(fault_injected)``.

A fault may be limited to a subject or a pattern (NATS wildcards ``*`` and ``>``) with
``subject``: it then acts only on operations on a matching subject (publishes, requests,
subscriptions and consumers by their filter), so a drill can make one stream slow while the
others flow. ``connect``, ``ack`` and ``nak`` have no subject of their own and refuse one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from natsrouter.errors import (
    ConnectionClosedError,
    LinkError,
    OperationTimeoutError,
    Reason,
    error_for_reason,
)
from natsrouter.link.outcome import PubAck
from natsrouter.link.transport import (
    AckKind,
    BucketSpec,
    Connection,
    ConsumerSpec,
    DirectHandler,
    FastPublish,
    HandlerFailed,
    InboundMessage,
    KvEntry,
    LostCallback,
    MessageHandler,
    NativeSubscription,
    PullConsumer,
    StreamInfo,
    StreamSpec,
    Transport,
)


class FaultTarget(StrEnum):
    CONNECT = "connect"
    PUBLISH = "publish"
    PUBLISH_WITH_ACK = "publish_with_ack"
    REQUEST = "request"
    ACK = "ack"
    NAK = "nak"
    SUBSCRIBE = "subscribe"


class FaultKind(StrEnum):
    ERROR = "error"
    TIMEOUT = "timeout"
    CLOSE_CONNECTION = "close_connection"
    DELAY = "delay"
    INTERMITTENT = "intermittent"


#: Targets whose operations carry no subject a fault could be limited to.
SUBJECTLESS = frozenset({FaultTarget.CONNECT, FaultTarget.ACK, FaultTarget.NAK})


def check_subject_pattern(pattern: str) -> str:
    """``pattern`` when it is a subject or wildcard pattern; else ``FaultSpecError``."""
    tokens = pattern.split(".")
    bad = (
        not pattern
        or any(not t or any(c.isspace() for c in t) for t in tokens)
        or any((">" in t and t != ">") or ("*" in t and t != "*") for t in tokens)
        or ">" in tokens[:-1]
    )
    if bad:
        raise FaultSpecError(
            "subject", f"expected a subject or pattern (a.b, a.*, a.>), got {pattern!r}"
        )
    return pattern


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(have) == len(want)


class FaultSpecError(ValueError):
    """A fault description (from Python or the admin endpoint) is invalid; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    reason: Reason = Reason.FAULT_INJECTED
    delay_ms: int = 0
    probability: float = 0.0
    #: Only operations on subjects matching this pattern; None: every operation.
    subject: str | None = None

    def on_subject(self, pattern: str) -> Fault:
        """The same fault, limited to subjects matching ``pattern`` (``*``, ``>``)."""
        return replace(self, subject=check_subject_pattern(pattern))

    def applies_to(self, subject: str | None) -> bool:
        return self.subject is None or (
            subject is not None and subject_matches(self.subject, subject)
        )

    @classmethod
    def error(cls, reason: Reason = Reason.FAULT_INJECTED) -> Fault:
        return cls(FaultKind.ERROR, reason=reason)

    @classmethod
    def timeout(cls) -> Fault:
        return cls(FaultKind.TIMEOUT, reason=Reason.TIMEOUT)

    @classmethod
    def close_connection(cls) -> Fault:
        return cls(FaultKind.CLOSE_CONNECTION, reason=Reason.CONNECTION_CLOSED)

    @classmethod
    def delay(cls, ms: int) -> Fault:
        if ms < 0:
            raise FaultSpecError("delay_ms", "must be >= 0")
        return cls(FaultKind.DELAY, delay_ms=ms)

    @classmethod
    def intermittent(cls, probability: float) -> Fault:
        if not 0.0 <= probability <= 1.0:
            raise FaultSpecError("probability", "must be within [0, 1]")
        return cls(FaultKind.INTERMITTENT, probability=probability)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Parse ``{"kind": "error", "reason": "timeout"}`` and the like (admin endpoint);
        an optional ``"subject"`` limits it to matching subjects."""
        fault = cls._kind_from_dict(data)
        subject = data.get("subject")
        if subject is None:
            return fault
        if not isinstance(subject, str):
            raise FaultSpecError("subject", "expected a string")
        return fault.on_subject(subject)

    @classmethod
    def _kind_from_dict(cls, data: Mapping[str, Any]) -> Fault:
        try:
            kind = FaultKind(str(data.get("kind")))
        except ValueError:
            allowed = ", ".join(k.value for k in FaultKind)
            raise FaultSpecError("kind", f"expected one of {allowed}") from None
        if kind is FaultKind.ERROR:
            try:
                return cls.error(Reason(data.get("reason", Reason.FAULT_INJECTED.value)))
            except ValueError:
                raise FaultSpecError("reason", "not a known reason") from None
        if kind is FaultKind.DELAY:
            ms = data.get("delay_ms")
            if not isinstance(ms, int) or isinstance(ms, bool):
                raise FaultSpecError("delay_ms", "expected an integer")
            return cls.delay(ms)
        if kind is FaultKind.INTERMITTENT:
            p = data.get("probability")
            if not isinstance(p, int | float) or isinstance(p, bool):
                raise FaultSpecError("probability", "expected a number")
            return cls.intermittent(float(p))
        return cls.timeout() if kind is FaultKind.TIMEOUT else cls.close_connection()

    def describe(self) -> str:
        """Short text for the log's ``fault`` field: ``error(timeout)``, ``delay(50) on a.>``."""
        arg = {
            FaultKind.ERROR: self.reason.value,
            FaultKind.DELAY: str(self.delay_ms),
            FaultKind.INTERMITTENT: f"{self.probability:g}",
        }.get(self.kind)
        text = f"{self.kind.value}({arg})" if arg is not None else self.kind.value
        return text if self.subject is None else f"{text} on {self.subject}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "description": self.describe()}
        if self.kind is FaultKind.ERROR:
            out["reason"] = self.reason.value
        if self.kind is FaultKind.DELAY:
            out["delay_ms"] = self.delay_ms
        if self.kind is FaultKind.INTERMITTENT:
            out["probability"] = self.probability
        if self.subject is not None:
            out["subject"] = self.subject
        return out


InjectedCallback = Callable[[FaultTarget, Fault], None]


class FaultRegistry:
    """The active faults, one per target at most."""

    def __init__(
        self, rng: random.Random | None = None, on_injected: InjectedCallback | None = None
    ) -> None:
        self._faults: dict[FaultTarget, Fault] = {}
        self._rng = rng or random.Random()
        self._on_injected = on_injected

    def set(self, target: FaultTarget, fault: Fault) -> None:
        """Set the fault of ``target``; ``FaultSpecError`` for a subject on a subjectless one."""
        if fault.subject is not None and target in SUBJECTLESS:
            raise FaultSpecError("subject", f"{target.value} has no subject to limit a fault to")
        self._faults[target] = fault

    def clear(self, target: FaultTarget | None = None) -> None:
        if target is None:
            self._faults.clear()
        else:
            self._faults.pop(target, None)

    def active(self) -> dict[FaultTarget, Fault]:
        return dict(self._faults)

    def set_on_injected(self, callback: InjectedCallback) -> None:
        self._on_injected = callback

    async def apply(
        self, target: FaultTarget, conn: Connection | None, subject: str | None = None
    ) -> None:
        """Act out the fault set for ``target``, if any and if it covers ``subject``."""
        fault = self._faults.get(target)
        if fault is None or not fault.applies_to(subject):
            return
        if fault.kind is FaultKind.INTERMITTENT and self._rng.random() >= fault.probability:
            return
        if self._on_injected is not None:
            self._on_injected(target, fault)
        if fault.kind is FaultKind.DELAY:
            await asyncio.sleep(fault.delay_ms / 1000)
            return
        if fault.kind is FaultKind.TIMEOUT:
            raise OperationTimeoutError("injected timeout", injected=True)
        if fault.kind is FaultKind.CLOSE_CONNECTION:
            error = ConnectionClosedError("injected close_connection", injected=True)
            if conn is not None:
                await conn.abort(error)
            raise error
        raise error_for_reason(
            fault.reason if fault.kind is FaultKind.ERROR else Reason.FAULT_INJECTED,
            f"injected {fault.describe()}",
            injected=True,
        )


class FaultInjectingConnection:
    """A ``Connection`` that consults the registry before each operation."""

    def __init__(self, inner: Connection, faults: FaultRegistry) -> None:
        self._inner = inner
        self._faults = faults

    @property
    def server(self) -> str:
        return self._inner.server

    @property
    def fast_publish(self) -> FastPublish:
        return self._publish_later

    def translate(self, exc: BaseException) -> LinkError:
        return exc if isinstance(exc, LinkError) else self._inner.translate(exc)

    def _publish_later(
        self, subject: str, payload: bytes, _reply: str, headers: Mapping[str, str] | None
    ) -> Awaitable[None]:
        # A fault may wait (delay) or drop the connection: always an awaitable, the caller
        # awaits it, and the publish goes through the fault and the inner publish.
        return self.publish(subject, payload, headers)

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> None:
        await self._faults.apply(FaultTarget.PUBLISH, self._inner, subject)
        await self._inner.publish(subject, payload, headers)

    async def publish_with_ack(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> PubAck:
        await self._faults.apply(FaultTarget.PUBLISH_WITH_ACK, self._inner, subject)
        return await self._inner.publish_with_ack(subject, payload, headers, timeout_s)

    async def request(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> InboundMessage:
        await self._faults.apply(FaultTarget.REQUEST, self._inner, subject)
        return await self._inner.request(subject, payload, headers, timeout_s)

    async def subscribe(
        self,
        subject: str,
        queue: str | None,
        handler: MessageHandler | DirectHandler,
        on_failure: HandlerFailed | None = None,
        *,
        direct: bool = False,
    ) -> NativeSubscription:
        await self._faults.apply(FaultTarget.SUBSCRIBE, self._inner, subject)
        return await self._inner.subscribe(subject, queue, handler, on_failure, direct=direct)

    async def pull_subscribe(self, spec: ConsumerSpec) -> PullConsumer:
        await self._faults.apply(FaultTarget.SUBSCRIBE, self._inner, spec.filter_subject)
        return await self._inner.pull_subscribe(spec)

    async def ensure_stream(self, spec: StreamSpec) -> bool:
        # Stream management is set-up, not traffic: no fault target of its own.
        return await self._inner.ensure_stream(spec)

    async def find_stream(self, subject: str, timeout_s: float) -> StreamInfo | None:
        return await self._inner.find_stream(subject, timeout_s)

    # Key-value operations pass through: faults target the link's message operations.
    async def ensure_bucket(self, spec: BucketSpec) -> bool:
        return await self._inner.ensure_bucket(spec)

    async def kv_get(self, bucket: str, key: str, timeout_s: float) -> KvEntry | None:
        return await self._inner.kv_get(bucket, key, timeout_s)

    async def kv_put(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int:
        return await self._inner.kv_put(bucket, key, value, timeout_s)

    async def kv_create(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int | None:
        return await self._inner.kv_create(bucket, key, value, timeout_s)

    async def kv_update(
        self, bucket: str, key: str, value: bytes, revision: int, timeout_s: float
    ) -> int | None:
        return await self._inner.kv_update(bucket, key, value, revision, timeout_s)

    async def acknowledge(self, reply: str, kind: AckKind, delay_ms: int | None) -> None:
        target = FaultTarget.NAK if kind is AckKind.NAK else FaultTarget.ACK
        await self._faults.apply(target, self._inner)
        await self._inner.acknowledge(reply, kind, delay_ms)

    async def ping(self, timeout_s: float) -> None:
        await self._inner.ping(timeout_s)

    async def close(self) -> None:
        await self._inner.close()

    async def abort(self, error: LinkError) -> None:
        await self._inner.abort(error)


class FaultInjectingTransport:
    """A ``Transport`` whose connect attempts and connections go through the registry."""

    def __init__(self, inner: Transport, faults: FaultRegistry) -> None:
        self._inner = inner
        self.faults = faults

    async def connect(self, server: str, on_lost: LostCallback) -> Connection:
        await self.faults.apply(FaultTarget.CONNECT, None)
        inner = await self._inner.connect(server, on_lost)
        return FaultInjectingConnection(inner, self.faults)
