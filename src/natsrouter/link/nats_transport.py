"""The real transport: one nats-py client per connection attempt; connect, core pub/sub, close.

nats-py's own reconnection is switched off (``allow_reconnect=False``): the link owns
reconnection, backoff and re-subscription, and nats-py alone cannot start while NATS is
down (nats-io/nats.py#663). JetStream and key-value operations are handed to
``nats_jetstream.NatsJetStream``; nats-py exceptions become ``errors.LinkError`` subclasses
in one place, ``nats_errors.translate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import nats
import nats.errors
from nats.aio.msg import Msg

from natsrouter.config import Settings, tls_context
from natsrouter.errors import AuthenticationError, ConnectionClosedError, LinkError
from natsrouter.link.nats_client import OrderedClient
from natsrouter.link.nats_errors import translate
from natsrouter.link.nats_jetstream import NatsJetStream, ack_payload
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
from natsrouter.observability.logging import get_logger

log = get_logger("natsrouter.link.transport")

# How long closing a connection may take before it is abandoned (a black-holed socket
# must not hold the link up).
_CLOSE_TIMEOUT_S = 1.0
# nats-py's own pinger is a backstop only: the link runs its own, shorter liveness pings.
_NATS_PY_PING_INTERVAL_S = 120


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


def _delivery(
    handler: MessageHandler, on_failure: HandlerFailed | None
) -> Callable[[Msg], Awaitable[None]]:
    """The callback nats-py awaits per message: the message made an ``InboundMessage`` and,
    with ``on_failure``, the handler's exception handed to it, all in one coroutine."""
    # _to_inbound written out in each: a call less per message delivered.
    if on_failure is None:

        async def deliver(msg: Msg) -> None:
            await handler(InboundMessage(msg.subject, msg.data, msg.headers, msg.reply or None))

        return deliver

    async def deliver_guarded(msg: Msg) -> None:
        try:
            await handler(InboundMessage(msg.subject, msg.data, msg.headers, msg.reply or None))
        except Exception as exc:  # noqa: BLE001 - a handler bug must not end the delivery
            on_failure(exc)

    return deliver_guarded


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
        on_unreadable: Callable[[str], None] | None = None,
    ) -> None:
        self._server = server
        self._on_lost = on_lost
        self._on_slow_consumer = on_slow_consumer
        self._nc = OrderedClient(on_unreadable)
        self._jetstream = NatsJetStream(self._nc)
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
        self._jetstream.bind(options.api_timeout_s)

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
        return self._nc.publish_now

    def translate(self, exc: BaseException) -> LinkError:
        return translate(exc)

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> None:
        try:
            await self._nc.publish(subject, payload, headers=dict(headers) if headers else None)
        except Exception as exc:
            raise translate(exc) from exc

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
        self,
        subject: str,
        queue: str | None,
        handler: MessageHandler | DirectHandler,
        on_failure: HandlerFailed | None = None,
        *,
        direct: bool = False,
    ) -> NativeSubscription:
        if direct and on_failure is None:
            raise TypeError("a direct subscription needs on_failure")  # a caller's bug
        try:
            if direct:
                assert on_failure is not None
                sub = await self._nc.subscribe_direct(
                    subject,
                    queue or "",
                    cast(DirectHandler, handler),
                    on_failure,
                )
            else:
                deliver = _delivery(cast(MessageHandler, handler), on_failure)
                sub = await self._nc.subscribe(subject, queue=queue or "", cb=deliver)
            # The server has the SUB once a PING round trip completes.
            await self._nc.flush(timeout=5)
        except Exception as exc:
            raise translate(exc) from exc
        return _Subscription(sub)

    # JetStream and key-value: ``nats_jetstream.NatsJetStream`` over this client.

    async def publish_with_ack(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> PubAck:
        return await self._jetstream.publish_with_ack(subject, payload, headers, timeout_s)

    async def pull_subscribe(self, spec: ConsumerSpec) -> PullConsumer:
        return await self._jetstream.pull_subscribe(spec)

    async def ensure_stream(self, spec: StreamSpec) -> bool:
        return await self._jetstream.ensure_stream(spec)

    async def find_stream(self, subject: str, timeout_s: float) -> StreamInfo | None:
        return await self._jetstream.find_stream(subject, timeout_s)

    async def ensure_bucket(self, spec: BucketSpec) -> bool:
        return await self._jetstream.ensure_bucket(spec)

    async def kv_get(self, bucket: str, key: str, timeout_s: float) -> KvEntry | None:
        return await self._jetstream.kv_get(bucket, key, timeout_s)

    async def kv_put(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int:
        return await self._jetstream.kv_put(bucket, key, value, timeout_s)

    async def kv_create(self, bucket: str, key: str, value: bytes, timeout_s: float) -> int | None:
        return await self._jetstream.kv_create(bucket, key, value, timeout_s)

    async def kv_update(
        self, bucket: str, key: str, value: bytes, revision: int, timeout_s: float
    ) -> int | None:
        return await self._jetstream.kv_update(bucket, key, value, revision, timeout_s)

    async def acknowledge(self, reply: str, kind: AckKind, delay_ms: int | None) -> None:
        # Sent on the current connection, not the one that delivered the message: the
        # server takes an ack for a reply subject from any connection, so acks keep
        # working after a reconnect while the message is still within its ack wait.
        await self.publish(reply, ack_payload(kind, delay_ms), None)

    async def ping(self, timeout_s: float) -> None:
        if not self._nc.reading:
            # A read loop ended by a failure nats-py did not expect leaves the socket open
            # and nothing read; its flush would pass, so the watchdog would never see it.
            raise ConnectionClosedError("nats-py stopped reading this connection")
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
        #: Told the subject of each message dropped because nats-py cannot read it.
        self.on_unreadable: Callable[[str], None] | None = None

    async def connect(self, server: str, on_lost: LostCallback) -> NatsConnection:
        conn = NatsConnection(server, on_lost, self.on_slow_consumer, self.on_unreadable)
        await conn.open(self._options)
        return conn
