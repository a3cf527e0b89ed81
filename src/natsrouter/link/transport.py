"""The narrow interface the link programs against, instead of nats-py.

``Transport.connect`` makes one connection attempt to one server; a ``Connection`` offers the
few operations the link needs. ``nats_transport.NatsTransport`` is the real adapter over
nats-py; ``faults.FaultInjectingTransport`` wraps any transport with the same interface.
Implementations raise only ``errors.LinkError`` subclasses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple, Protocol

from natsrouter.errors import LinkError
from natsrouter.link.outcome import PubAck

# The message types are NamedTuples: one is built per message delivered, and a frozen
# dataclass's __init__ (object.__setattr__ per field) cost about three times as much
# (docs/performance.md). Immutable like the dataclasses were; unlike them, a message is also
# a tuple (equal to a tuple of its fields), and a JsMessage is not an InboundMessage.


class InboundMessage(NamedTuple):
    """A core NATS message (or the answer to a request) as the link hands it on."""

    subject: str
    data: bytes
    headers: Mapping[str, str] | None = None
    reply: str | None = None


class JsMetadata(NamedTuple):
    """Delivery facts read from the server (never counted locally)."""

    stream: str
    consumer: str
    stream_seq: int
    consumer_seq: int
    num_delivered: int
    num_pending: int


class JsMessage(NamedTuple):
    """A message fetched from a JetStream pull consumer; ``reply`` is its ack subject."""

    subject: str
    data: bytes
    headers: Mapping[str, str] | None = None
    reply: str | None = None
    metadata: JsMetadata | None = None


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable JetStream pull consumer the link keeps bound across reconnects."""

    stream: str
    durable: str
    filter_subject: str
    max_deliver: int = 5
    ack_wait_ms: int = 30_000


@dataclass(frozen=True)
class StreamSpec:
    """A stream the link creates when it is missing, on every connection.

    An existing stream is left as it is (an operator may have tuned it); only its absence
    is repaired. ``duplicate_window_s`` is the window in which the server drops a publish
    whose ``Nats-Msg-Id`` it has already stored.
    """

    name: str
    subjects: tuple[str, ...]
    duplicate_window_s: float = 120.0
    max_age_s: float = 0.0  # 0 = keep until limits
    replicas: int = 1


@dataclass(frozen=True)
class StreamInfo:
    """What the link needs to know of the stream that captures a subject."""

    name: str
    duplicate_window_s: float


@dataclass(frozen=True)
class BucketSpec:
    """A JetStream key-value bucket the link creates when it is missing, on every connection.

    Like a stream (a bucket is the stream ``KV_<name>``), an existing bucket is left as it
    is. ``ttl_s`` is how long a key lives after its last write (0: forever).
    """

    name: str
    ttl_s: float = 0.0
    replicas: int = 1


@dataclass(frozen=True)
class KvEntry:
    """A key's current value and its revision (the stream sequence that stored it)."""

    key: str
    value: bytes
    revision: int


class AckKind(StrEnum):
    """JetStream acknowledgements; ``TERM`` and ``IN_PROGRESS`` count as ``ack`` operations."""

    ACK = "ack"
    NAK = "nak"
    TERM = "term"
    #: Still working on it: the server starts the message's ack wait again (``+WPI``).
    IN_PROGRESS = "in_progress"


MessageHandler = Callable[[InboundMessage], Awaitable[None]]
#: A handler that never waits, for a direct subscription (``Connection.subscribe``).
DirectHandler = Callable[[InboundMessage], None]
#: Told what a subscription's handler raised; the subscription goes on delivering.
HandlerFailed = Callable[[Exception], None]
LostCallback = Callable[["Connection", LinkError], None]


class NativeSubscription(Protocol):
    async def unsubscribe(self) -> None: ...
    async def drain(self) -> None:
        """Unsubscribe after delivering what the server sent before it saw the UNSUB."""
        ...


class PullConsumer(Protocol):
    async def fetch(self, batch: int, timeout_s: float) -> list[JsMessage]:
        """Up to ``batch`` messages; an empty list when none arrive within ``timeout_s``."""
        ...

    async def stop(self) -> None:
        """Stop pulling on this connection (best effort; never raises)."""
        ...


#: ``fast_publish(subject, payload, reply, headers)``: see ``Connection.fast_publish``.
FastPublish = Callable[[str, bytes, str, Mapping[str, str] | None], Awaitable[None] | None]


class Connection(Protocol):
    @property
    def server(self) -> str: ...
    @property
    def fast_publish(self) -> FastPublish:
        """Core publish, called as ``fast_publish(subject, payload, "", headers)``; not a
        coroutine function.

        It returns None once the message is in the connection's outgoing buffer (the common
        case, nothing awaited), or an awaitable the caller must await before the publish
        counts as done: the client's forced flush after buffering it, when its buffer passed
        its limit (backpressure), or the whole publish when something must wait first (an
        injected fault's delay). The empty string is the reply subject; the argument order
        is nats-py's.

        The one exception to "raises only LinkError": called or awaited, it may raise the
        client's own exceptions, which ``translate`` maps. Not awaiting a coroutine per
        message spares the publish hot path nats-py's three coroutine frames
        (docs/performance.md). Only ``Link.publish``, ``Link.reply`` and ``Link.reply_now``
        call it.
        """
        ...

    def translate(self, exc: BaseException) -> LinkError:
        """Map an exception raised by ``fast_publish`` (or its awaitable) to the error tree."""
        ...

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> None: ...
    async def publish_with_ack(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> PubAck: ...
    async def request(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> InboundMessage: ...
    async def subscribe(
        self,
        subject: str,
        queue: str | None,
        handler: MessageHandler | DirectHandler,
        on_failure: HandlerFailed | None = None,
        *,
        direct: bool = False,
    ) -> NativeSubscription:
        """Deliver each message on ``subject`` to ``handler`` as an ``InboundMessage``.

        An exception the handler raises goes to ``on_failure`` and delivery goes on (without
        one, to the client's own error handling). Both jobs are done in the one coroutine
        the client awaits per message: a wrapper of the caller's around ``handler`` would be
        a coroutine frame more on every message delivered (docs/performance.md).

        With ``direct``, ``handler`` is a ``DirectHandler``, a plain function that never
        waits, called from the client's protocol parser as each message is read: no message
        object, queue, task or coroutine of the client's per message. ``on_failure`` is then
        required. The client's pending limits (its slow-consumer drops) do not apply, since
        nothing is buffered: a handler that must wait starts its own task and bounds them
        itself. ``drain`` delivers every message the server sent before it had the UNSUB (it
        is read before the round trip behind the UNSUB completes), ``unsubscribe`` none after.
        """
        ...

    async def pull_subscribe(self, spec: ConsumerSpec) -> PullConsumer: ...
    async def ensure_stream(self, spec: StreamSpec) -> bool:
        """Create the stream unless it exists; True when it was created."""
        ...

    async def find_stream(self, subject: str, timeout_s: float) -> StreamInfo | None:
        """The stream that stores ``subject``, or None when no stream does."""
        ...

    async def ensure_bucket(self, spec: BucketSpec) -> bool:
        """Create the key-value bucket unless it exists; True when it was created."""
        ...

    async def kv_get(self, bucket: str, key: str, timeout_s: float) -> KvEntry | None:
        """The key's current entry, or None when it has none (never written, or expired)."""
        ...

    async def kv_put(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int:
        """Store ``value`` under ``key`` whatever it held; returns the new revision."""
        ...

    async def kv_create(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int | None:
        """Store ``value`` only if ``key`` has no value (compare-and-set on revision 0).

        Returns the new revision, or None when the key already has a value: of several
        writers racing, exactly one gets a revision.
        """
        ...

    async def kv_update(
        self, bucket: str, key: str, value: bytes, revision: int, timeout_s: float
    ) -> int | None:
        """Store ``value`` only if ``key``'s revision is still ``revision`` (compare-and-set).

        Returns the new revision, or None when another write came first.
        """
        ...

    async def acknowledge(self, reply: str, kind: AckKind, delay_ms: int | None) -> None:
        """Send a JetStream acknowledgement for the message whose reply subject is ``reply``."""
        ...

    async def ping(self, timeout_s: float) -> None:
        """Round trip to the server; raises ``OperationTimeoutError`` when no answer."""
        ...

    async def close(self) -> None:
        """Close on purpose; does not report a loss. Bounded in time."""
        ...

    async def abort(self, error: LinkError) -> None:
        """Drop the connection and report it lost with ``error``. Bounded in time."""
        ...


class Transport(Protocol):
    async def connect(self, server: str, on_lost: LostCallback) -> Connection:
        """One attempt to one server. ``on_lost`` is called once if the connection dies."""
        ...
