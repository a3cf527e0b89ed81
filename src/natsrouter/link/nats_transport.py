"""The real transport: one nats-py client per connection attempt, errors translated here.

nats-py's own reconnection is switched off (``allow_reconnect=False``): the link owns
reconnection, backoff and re-subscription, and nats-py alone cannot start while NATS is
down (nats-io/nats.py#663). This module is the one boundary where nats-py exceptions become
``errors.LinkError`` subclasses (``translate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import PING_PROTO, Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, KeyValueConfig, StreamConfig
from nats.js.kv import KeyValue

from natsrouter.config import Settings, tls_context
from natsrouter.errors import (
    AuthenticationError,
    ConnectionClosedError,
    LinkError,
    NoRespondersError,
    OperationTimeoutError,
    OtherLinkError,
    ServerError,
    ServerUnavailableError,
)
from natsrouter.link.outcome import PubAck
from natsrouter.link.transport import (
    AckKind,
    BucketSpec,
    ConsumerSpec,
    FastPublish,
    InboundMessage,
    JsMessage,
    JsMetadata,
    KvEntry,
    LostCallback,
    MessageHandler,
    NativeSubscription,
    PullConsumer,
    StreamInfo,
    StreamSpec,
)
from natsrouter.observability.logging import get_logger

log = get_logger("natsrouter.link.transport")

# How long closing a connection may take before it is abandoned (a black-holed socket
# must not hold the link up).
_CLOSE_TIMEOUT_S = 1.0
# nats-py's own pinger is a backstop only: the link runs its own, shorter liveness pings.
_NATS_PY_PING_INTERVAL_S = 120


def translate(exc: BaseException) -> LinkError:
    """Map a nats-py (or socket) exception to the error tree; the only place that does."""
    if isinstance(exc, LinkError):
        return exc
    message = str(exc) or type(exc).__name__
    # nats-py reports an auth rejection during connect as a plain Error carrying the
    # server's -ERR text; there is no dedicated class to match on in that path.
    lowered = message.lower()
    if isinstance(exc, nats.errors.AuthorizationError) or (
        "authorization violation" in lowered
        or "authentication" in lowered
        or "user authentication expired" in lowered
    ):
        return AuthenticationError(message)
    if isinstance(exc, ssl.SSLCertVerificationError):
        # The server's identity could not be verified: an authentication failure, not a
        # network one (it will not pass by itself).
        return AuthenticationError(message)
    if isinstance(exc, nats.errors.NoRespondersError | nats.js.errors.NoStreamResponseError):
        return NoRespondersError(message)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | nats.errors.TimeoutError):
        return OperationTimeoutError(message)
    if isinstance(
        exc,
        nats.errors.ConnectionClosedError
        | nats.errors.StaleConnectionError
        | nats.errors.ConnectionReconnectingError
        | nats.errors.NoServersError
        | nats.errors.ConnectionDrainingError
        | nats.errors.OutboundBufferLimitError
        | OSError
        | EOFError,
    ):
        return ConnectionClosedError(message)
    if isinstance(exc, nats.js.errors.APIError):
        # JetStream's own answer: its status and err_code say whether it can pass
        # (errors.PERMANENT_JS_ERR_CODES). No status at all is read as a 503, JetStream's
        # "not now".
        status = exc.code or 503
        cls = ServerUnavailableError if status == 503 else ServerError
        return cls(message, status=status, err_code=exc.err_code)
    if isinstance(exc, nats.errors.Error):
        return ServerError(message) if message.startswith("nats: ") else OtherLinkError(message)
    return OtherLinkError(f"{type(exc).__name__}: {message}")


@dataclass(frozen=True)
class ConnectOptions:
    connect_timeout_s: float
    #: JetStream API calls (stream checks, consumer binds): nats_request_timeout_ms, not
    #: nats-py's fixed 5 s, so a cluster electing a leader costs one request timeout.
    api_timeout_s: float = 5.0
    user: str = ""
    # Out of the repr, like Settings' own: a traceback or a debug line never shows them.
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)
    creds_file: str = ""
    nkey_seed_file: str = ""
    tls: ssl.SSLContext | None = None
    name: str = "natsrouter"
    #: When set, a server whose INFO carries another ``server_name`` is refused (the embedded
    #: server: after it dies, another nats-server may take its port before it is restarted).
    server_name: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectOptions:
        # Built by config: an encrypted key is an error there, never a passphrase prompt.
        tls = tls_context(settings)
        return cls(
            connect_timeout_s=settings.nats_connect_timeout_ms / 1000,
            api_timeout_s=settings.nats_request_timeout_ms / 1000,
            user=settings.nats_user,
            password=settings.nats_password,
            token=settings.nats_token,
            creds_file=settings.nats_creds_file,
            nkey_seed_file=settings.nats_nkey_seed_file,
            tls=tls,
        )

    def nats_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"connect_timeout": self.connect_timeout_s, "name": self.name}
        if self.user:
            kwargs.update(user=self.user, password=self.password)
        if self.token:
            kwargs["token"] = self.token
        if self.creds_file:
            kwargs["user_credentials"] = self.creds_file
        if self.nkey_seed_file:
            kwargs["nkeys_seed"] = self.nkey_seed_file
        if self.tls is not None:
            kwargs["tls"] = self.tls
        return kwargs


def _to_inbound(msg: Msg) -> InboundMessage:
    return InboundMessage(msg.subject, msg.data, msg.headers, msg.reply or None)


def _to_js(msg: Msg) -> JsMessage:
    meta = msg.metadata
    return JsMessage(
        subject=msg.subject,
        data=msg.data,
        headers=msg.headers,
        reply=msg.reply or None,
        metadata=JsMetadata(
            stream=meta.stream,
            consumer=meta.consumer,
            stream_seq=meta.sequence.stream,
            consumer_seq=meta.sequence.consumer,
            num_delivered=meta.num_delivered,
            num_pending=meta.num_pending,
        ),
    )


class _Subscription:
    def __init__(self, sub: Any) -> None:
        self._sub = sub

    async def unsubscribe(self) -> None:
        try:
            await self._sub.unsubscribe()
        except Exception as exc:
            raise translate(exc) from exc

    async def drain(self) -> None:
        try:
            await self._sub.drain()
        except Exception as exc:
            raise translate(exc) from exc


class _PullConsumer:
    def __init__(self, psub: Any) -> None:
        self._psub = psub

    async def fetch(self, batch: int, timeout_s: float) -> list[JsMessage]:
        try:
            msgs = await self._psub.fetch(batch, timeout=timeout_s)
        except TimeoutError:  # nats-py raises both its own and the builtin class here
            return []
        except Exception as exc:
            raise translate(exc) from exc
        return [_to_js(m) for m in msgs]

    async def stop(self) -> None:
        # Unsubscribing the inbox also ends any pull request still open on the server, so
        # it cannot capture messages for a reader that is gone.
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self._psub.unsubscribe(), _CLOSE_TIMEOUT_S)


class _OrderedClient(Client):
    """nats-py's client with a PING that waits its turn behind the commands already buffered.

    nats-py 2.16 writes a flush's PING straight to the socket, ahead of publishes, SUBs and
    UNSUBs still in its buffer, so the PONG proves nothing about them: a subscription looked
    bound before the server had it, and a drain could end before the server had the UNSUB
    (requests delivered meanwhile were dropped unanswered). Appended to the buffer instead,
    the PING reaches the server after everything sent before it (tests/integration/
    test_wire_order.py). Not connected (the handshake), nats-py's own path is kept.
    """

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        if not self.is_connected:
            await super()._send_ping(future)
            return
        self._pongs.append(future if future is not None else asyncio.Future())
        self._pending.append(PING_PROTO)
        self._pending_data_size += len(PING_PROTO)
        await self._flush_pending()


class _AbortConnect(Exception):
    """Raised from nats-py's error callback to end a connect attempt at its first failure.

    nats-py's ``connect()`` retries a refused TCP connection to the same server forever
    (``_select_next_server`` loops until ``max_reconnect_attempts``, and 0 means no limit),
    even with ``allow_reconnect=False``. The link wants one attempt per call, with its own
    backoff, so the callback raises this, which nats-py does not catch.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class NatsConnection:
    """One live nats-py client; reports its own death once through ``on_lost``."""

    def __init__(
        self,
        server: str,
        on_lost: LostCallback,
        on_slow_consumer: Callable[[str], None] | None = None,
    ) -> None:
        self._server = server
        self._on_lost = on_lost
        self._on_slow_consumer = on_slow_consumer
        self._nc = _OrderedClient()
        self._js: Any = None
        #: Key-value handles by bucket, made once per connection (each costs a round trip).
        self._buckets: dict[str, KeyValue] = {}
        self._closing = False
        self._reported = False
        self._opening = False

    @property
    def server(self) -> str:
        return self._server

    async def open(self, options: ConnectOptions) -> None:
        self._opening = True
        try:
            await self._nc.connect(
                servers=[self._server],
                allow_reconnect=False,
                ping_interval=_NATS_PY_PING_INTERVAL_S,
                max_outstanding_pings=2,
                error_cb=self._on_error,
                closed_cb=self._on_closed,
                **options.nats_kwargs(),
            )
        except _AbortConnect as abort:
            self._closing = True
            await self._close_client()
            raise translate(abort.cause) from abort.cause
        except Exception as exc:
            self._closing = True
            await self._close_client()
            raise translate(exc) from exc
        except asyncio.CancelledError:  # the link is closing: leave no socket behind
            self._closing = True
            await self._close_client()
            raise
        finally:
            self._opening = False
        answered = str(self._nc._server_info.get("server_name", ""))
        if options.server_name and answered != options.server_name:
            self._closing = True
            await self._close_client()
            # Its identity is not the one expected: like an unverifiable certificate.
            raise AuthenticationError(
                f"{self._server} answers as nats-server {answered!r}, not {options.server_name!r}"
            )
        self._js = self._nc.jetstream(timeout=options.api_timeout_s)

    async def _on_error(self, exc: Exception) -> None:
        if self._opening:
            raise _AbortConnect(exc)
        if isinstance(exc, nats.errors.SlowConsumerError):
            # nats-py dropped a message: a subscription's buffer was full.
            if self._on_slow_consumer is not None:
                self._on_slow_consumer(exc.subject)
            return
        log.debug("nats client error", server=self._server, error=exc)

    async def _on_closed(self) -> None:
        if self._closing:
            return
        last = self._nc.last_error
        error = translate(last) if last is not None else ConnectionClosedError("closed by server")
        if not error.connection_lost:
            # A stale link or a server -ERR closes the connection too; whatever the cause,
            # the connection is gone.
            error = ConnectionClosedError(str(error))
        self._report(error)

    def _report(self, error: LinkError) -> None:
        if not self._reported:
            self._reported = True
            self._on_lost(self, error)

    async def _close_client(self) -> None:
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self._nc.close(), _CLOSE_TIMEOUT_S)

    @property
    def fast_publish(self) -> FastPublish:
        publish: FastPublish = self._nc.publish
        return publish

    def translate(self, exc: BaseException) -> LinkError:
        return translate(exc)

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> None:
        try:
            await self._nc.publish(subject, payload, headers=dict(headers) if headers else None)
        except Exception as exc:
            raise translate(exc) from exc

    async def publish_with_ack(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> PubAck:
        try:
            ack = await self._js.publish(
                subject, payload, timeout=timeout_s, headers=dict(headers) if headers else None
            )
        except Exception as exc:
            raise translate(exc) from exc
        return PubAck(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))

    async def request(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> InboundMessage:
        try:
            msg = await self._nc.request(
                subject, payload, timeout=timeout_s, headers=dict(headers) if headers else None
            )
        except Exception as exc:
            raise translate(exc) from exc
        return _to_inbound(msg)

    async def subscribe(
        self, subject: str, queue: str | None, handler: MessageHandler
    ) -> NativeSubscription:
        async def deliver(msg: Msg) -> None:
            await handler(_to_inbound(msg))

        try:
            sub = await self._nc.subscribe(subject, queue=queue or "", cb=deliver)
            # The server has the SUB once a PING round trip completes.
            await self._nc.flush(timeout=5)
        except Exception as exc:
            raise translate(exc) from exc
        return _Subscription(sub)

    async def pull_subscribe(self, spec: ConsumerSpec) -> PullConsumer:
        config = ConsumerConfig(
            durable_name=spec.durable,
            filter_subject=spec.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            max_deliver=spec.max_deliver,
            ack_wait=spec.ack_wait_ms / 1000,
        )
        try:
            psub = await self._js.pull_subscribe(
                spec.filter_subject,
                durable=spec.durable,
                # Empty: nats-py finds the stream that holds the subject.
                stream=spec.stream or None,
                config=config,
            )
        except Exception as exc:
            raise translate(exc) from exc
        return _PullConsumer(psub)

    async def ensure_stream(self, spec: StreamSpec) -> bool:
        try:
            await self._js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            pass
        except Exception as exc:
            raise translate(exc) from exc
        else:
            return False
        config = StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            duplicate_window=spec.duplicate_window_s,
            max_age=spec.max_age_s or None,
            num_replicas=spec.replicas,
        )
        try:
            await self._js.add_stream(config)
        except Exception as exc:
            raise translate(exc) from exc
        return True

    async def ensure_bucket(self, spec: BucketSpec) -> bool:
        try:
            self._buckets[spec.name] = await self._js.key_value(spec.name)
        except nats.js.errors.BucketNotFoundError:
            pass
        except Exception as exc:
            raise translate(exc) from exc
        else:
            return False
        config = KeyValueConfig(
            bucket=spec.name, history=1, ttl=spec.ttl_s or None, replicas=spec.replicas
        )
        try:
            self._buckets[spec.name] = await self._js.create_key_value(config)
        except Exception as exc:
            raise translate(exc) from exc
        return True

    async def _bucket(self, name: str) -> KeyValue:
        kv = self._buckets.get(name)
        if kv is None:  # declared after this connection was made, or made elsewhere
            try:
                kv = self._buckets[name] = await self._js.key_value(name)
            except nats.js.errors.BucketNotFoundError as exc:
                raise NoRespondersError(f"no key-value bucket {name!r}") from exc
            except Exception as exc:
                raise translate(exc) from exc
        return kv

    async def kv_get(self, bucket: str, key: str, timeout_s: float) -> KvEntry | None:
        kv = await self._bucket(bucket)
        try:
            entry = await asyncio.wait_for(kv.get(key), timeout_s)
        except nats.js.errors.KeyNotFoundError:  # also a deleted or purged key
            return None
        except Exception as exc:
            raise translate(exc) from exc
        return KvEntry(key, entry.value or b"", entry.revision or 0)

    async def kv_put(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int:
        kv = await self._bucket(bucket)
        try:
            revision: int = await asyncio.wait_for(kv.put(key, value), timeout_s)
        except Exception as exc:
            raise translate(exc) from exc
        return revision

    async def kv_create(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int | None:
        kv = await self._bucket(bucket)
        try:
            revision: int = await asyncio.wait_for(kv.create(key, value), timeout_s)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None  # another writer's value is there: it won
        except nats.js.errors.KeyNotFoundError:
            # Refused as a wrong last sequence, then nats-py's check for a deleted key did
            # not find it yet (a clustered write being applied): another writer won too.
            return None
        except Exception as exc:
            raise translate(exc) from exc
        return revision

    async def kv_update(
        self, bucket: str, key: str, value: bytes, revision: int, timeout_s: float
    ) -> int | None:
        kv = await self._bucket(bucket)
        try:
            new: int = await asyncio.wait_for(kv.update(key, value, last=revision), timeout_s)
        except nats.js.errors.KeyWrongLastSequenceError:
            return None  # another write came first
        except Exception as exc:
            raise translate(exc) from exc
        return new

    async def find_stream(self, subject: str, timeout_s: float) -> StreamInfo | None:
        # Two JetStream API calls: which stream holds the subject, then its configuration.
        js = self._nc.jetstream(timeout=timeout_s)
        try:
            name = await js.find_stream_name_by_subject(subject)
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            return None
        except Exception as exc:
            raise translate(exc) from exc
        return StreamInfo(name, float(info.config.duplicate_window or 0.0))

    async def acknowledge(self, reply: str, kind: AckKind, delay_ms: int | None) -> None:
        # Sent on the current connection, not the one that delivered the message: the
        # server takes an ack for a reply subject from any connection, so acks keep
        # working after a reconnect while the message is still within its ack wait.
        await self.publish(reply, _ack_payload(kind, delay_ms), None)

    async def ping(self, timeout_s: float) -> None:
        try:
            # nats-py annotates the timeout as int but waits with asyncio.wait_for (floats fine).
            await self._nc.flush(timeout=timeout_s)  # type: ignore[arg-type]
        except Exception as exc:
            raise translate(exc) from exc

    async def close(self) -> None:
        self._closing = True
        await self._close_client()

    async def abort(self, error: LinkError) -> None:
        self._closing = True
        self._report(error)
        await self._close_client()


class NatsTransport:
    """``Transport`` over nats-py."""

    def __init__(self, options: ConnectOptions) -> None:
        self._options = options
        #: Told the subject of each message nats-py drops from a full subscription buffer.
        self.on_slow_consumer: Callable[[str], None] | None = None

    async def connect(self, server: str, on_lost: LostCallback) -> NatsConnection:
        conn = NatsConnection(server, on_lost, self.on_slow_consumer)
        await conn.open(self._options)
        return conn


def _ack_payload(kind: AckKind, delay_ms: int | None) -> bytes:
    """The JetStream acknowledgement protocol body."""
    if kind is AckKind.ACK:
        return b"+ACK"
    if kind is AckKind.TERM:
        return b"+TERM"
    if kind is AckKind.IN_PROGRESS:
        return b"+WPI"
    if delay_ms:
        return b"-NAK " + json.dumps({"delay": delay_ms * 1_000_000}).encode()
    return b"-NAK"
