"""An in-process ``Transport`` for unit tests of the link's components: no server, no socket.

Every publish is recorded; a test scripts failures per subject (``fail``) or per connection
attempt (``refuse``), says which subjects a stream captures (``streams``) and can make a
subject's JetStream publishes wait until released (``hold``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from natsrouter.errors import ConnectionClosedError, LinkError, OperationTimeoutError
from natsrouter.link.outcome import PubAck
from natsrouter.link.transport import (
    AckKind,
    BucketSpec,
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
)


@dataclass
class Sent:
    subject: str
    payload: bytes
    headers: Mapping[str, str] | None
    jetstream: bool


@dataclass
class FakeServer:
    """What the fake connections share: the recorded sends and the scripted behaviour."""

    sent: list[Sent] = field(default_factory=list)
    #: subject -> errors raised by its next publishes, in order (then it succeeds).
    fail: dict[str, list[LinkError]] = field(default_factory=dict)
    #: subject -> an error raised by every publish to it, until removed.
    refuse_subject: dict[str, LinkError] = field(default_factory=dict)
    #: subjects whose JetStream publishes wait until the event is set (or time out).
    hold: dict[str, asyncio.Event] = field(default_factory=dict)
    #: subject -> stream name, for find_stream.
    streams: dict[str, str] = field(default_factory=dict)
    #: connection attempts to refuse before accepting.
    refuse: int = 0
    #: key-value buckets: bucket -> key -> (value, revision); no expiry.
    kv: dict[str, dict[str, tuple[bytes, int]]] = field(default_factory=dict)
    #: an error raised by every key-value operation, until set back to None.
    kv_error: LinkError | None = None
    #: bucket -> an error raised by every operation on it, until removed.
    kv_refuse: dict[str, LinkError] = field(default_factory=dict)
    #: called on each connection accepted (a test can abort it at once).
    on_connect: Callable[[FakeConnection], None] | None = None
    attempts: int = 0
    #: JetStream publishes waiting on a ``hold`` gate right now.
    waiting: int = 0
    #: The most that ever waited at once.
    most_waiting: int = 0
    seq: int = 0
    connections: list[FakeConnection] = field(default_factory=list)

    def error_for(self, subject: str) -> LinkError | None:
        if subject in self.refuse_subject:
            return self.refuse_subject[subject]
        errors = self.fail.get(subject)
        if errors:
            return errors.pop(0)
        return None

    def payloads(self, subject: str | None = None) -> list[bytes]:
        return [s.payload for s in self.sent if subject is None or s.subject == subject]


class _Native:
    async def unsubscribe(self) -> None:
        return None


class _Puller:
    async def fetch(self, batch: int, timeout_s: float) -> list[object]:  # pragma: no cover
        await asyncio.sleep(timeout_s)
        return []

    async def stop(self) -> None:
        return None


class FakeConnection:
    def __init__(self, server: FakeServer, name: str, on_lost: LostCallback) -> None:
        self._server = server
        self._name = name
        self._on_lost = on_lost
        self.closed = False

    @property
    def server(self) -> str:
        return self._name

    @property
    def fast_publish(self) -> FastPublish:
        def fast(
            subject: str, payload: bytes, _reply: str, headers: Mapping[str, str] | None
        ) -> None:
            self._record(subject, payload, headers)  # done at once, like a buffered publish

        return fast

    def translate(self, exc: BaseException) -> LinkError:
        return exc if isinstance(exc, LinkError) else LinkError(str(exc))

    def _check(self) -> None:
        if self.closed:
            raise ConnectionClosedError("closed")

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> None:
        self._record(subject, payload, headers)

    def _record(self, subject: str, payload: bytes, headers: Mapping[str, str] | None) -> None:
        self._check()
        err = self._server.error_for(subject)
        if err is not None:
            raise err
        self._server.sent.append(Sent(subject, payload, headers, jetstream=False))

    async def publish_with_ack(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> PubAck:
        self._check()
        gate = self._server.hold.get(subject)
        if gate is not None:
            self._server.waiting += 1
            self._server.most_waiting = max(self._server.most_waiting, self._server.waiting)
            try:
                await asyncio.wait_for(gate.wait(), timeout_s)
            except TimeoutError:
                raise OperationTimeoutError(f"no PubAck for {subject}") from None
            finally:
                self._server.waiting -= 1
        err = self._server.error_for(subject)
        if err is not None:
            raise err
        self._server.sent.append(Sent(subject, payload, headers, jetstream=True))
        self._server.seq += 1
        return PubAck(self._server.streams.get(subject, "S"), self._server.seq)

    async def request(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> InboundMessage:
        self._check()
        return InboundMessage(subject, payload)

    async def subscribe(
        self,
        subject: str,
        queue: str | None,
        handler: MessageHandler | DirectHandler,
        on_failure: HandlerFailed | None = None,
        *,
        direct: bool = False,
    ) -> NativeSubscription:
        self._check()
        return _Native()

    async def pull_subscribe(self, spec: ConsumerSpec) -> PullConsumer:
        self._check()
        return _Puller()  # type: ignore[return-value]

    async def ensure_stream(self, spec: StreamSpec) -> bool:
        self._check()
        return False

    async def find_stream(self, subject: str, timeout_s: float) -> StreamInfo | None:
        self._check()
        name = self._server.streams.get(subject)
        return None if name is None else StreamInfo(name, 120.0)

    async def ensure_bucket(self, spec: BucketSpec) -> bool:
        self._check()
        created = spec.name not in self._server.kv
        self._server.kv.setdefault(spec.name, {})
        return created

    def _kv(self, bucket: str) -> dict[str, tuple[bytes, int]]:
        self._check()
        if self._server.kv_error is not None:
            raise self._server.kv_error
        if bucket in self._server.kv_refuse:
            raise self._server.kv_refuse[bucket]
        return self._server.kv.setdefault(bucket, {})

    async def kv_get(self, bucket: str, key: str, timeout_s: float) -> KvEntry | None:
        held = self._kv(bucket).get(key)
        return None if held is None else KvEntry(key, held[0], held[1])

    async def kv_put(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int:
        self._server.seq += 1
        self._kv(bucket)[key] = (value, self._server.seq)
        return self._server.seq

    async def kv_create(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int | None:
        if key in self._kv(bucket):
            return None
        return await self.kv_put(bucket, key, value, timeout_s)

    async def kv_update(
        self, bucket: str, key: str, value: bytes, revision: int, timeout_s: float
    ) -> int | None:
        held = self._kv(bucket).get(key)
        if held is None or held[1] != revision:
            return None
        return await self.kv_put(bucket, key, value, timeout_s)

    async def acknowledge(self, reply: str, kind: AckKind, delay_ms: int | None) -> None:
        self._check()

    async def ping(self, timeout_s: float) -> None:
        self._check()

    async def close(self) -> None:
        self.closed = True

    async def abort(self, error: LinkError) -> None:
        if not self.closed:
            self.closed = True
            self._on_lost(self, error)  # type: ignore[arg-type]


class FakeTransport:
    def __init__(self, server: FakeServer | None = None) -> None:
        self.server = server or FakeServer()

    async def connect(self, server: str, on_lost: LostCallback) -> FakeConnection:
        self.server.attempts += 1
        if self.server.refuse > 0:
            self.server.refuse -= 1
            raise ConnectionClosedError("connection refused")
        conn = FakeConnection(self.server, server, on_lost)
        self.server.connections.append(conn)
        if self.server.on_connect is not None:
            self.server.on_connect(conn)
        return conn
