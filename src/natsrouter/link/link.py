"""The resilient NATS link: the one object the rest of natsrouter talks to NATS through.

Nothing else in natsrouter touches nats-py. ``Link`` is a facade over components that each
do one thing and are tested alone with a fake transport:

- ``connection.ConnectionSupervisor``: the connection, its state, connect/backoff/exhaustion
  and the watchdog pings;
- ``streams.StreamKeeper``: streams created when missing, on every connection;
- ``kv.BucketKeeper``, ``kv.KeyValueStore``: key-value buckets created when missing (after
  the streams), and get / put / create / update on the live connection, never queued;
- ``bindings.Bindings``: subscriptions and pull consumers, bound again on every connection;
- ``outbox.Outbox``: publishes accepted but not sent yet (the bounded pending queue, memory
  or the SQLite spool), their expiry and the no-silent-loss ledger;
- ``sender.Sender``: sends, retries unsettled JetStream publishes with their ``Nats-Msg-Id``
  until ``js_publish_retry_deadline_ms``, and replays the outbox.

Every JetStream publish gets a ``Nats-Msg-Id`` when it is first accepted and keeps it
through retries, the queue and the spool, so however often it is sent the stream stores it
once. Each publish / ack / nak returns one typed ``Result``; requests raise typed errors.

Task ownership: the supervisor, watchdog, replay and consumer tasks are created through one
``TaskOwner``; an unexpected death is logged and fails liveness; ``close()`` cancels and
awaits them all.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from natsrouter.config import Settings
from natsrouter.errors import LinkError, NotConnectedError
from natsrouter.link.accounting import Accounting
from natsrouter.link.bindings import Bindings
from natsrouter.link.connection import ConnectionSupervisor, SessionHooks
from natsrouter.link.destinations import Destinations
from natsrouter.link.faults import Fault, FaultInjectingTransport, FaultRegistry, FaultTarget
from natsrouter.link.kv import BucketKeeper, KeyValueStore
from natsrouter.link.nats_transport import ConnectOptions, NatsTransport
from natsrouter.link.outbox import Outbox
from natsrouter.link.outcome import Operation, Outcome, Result
from natsrouter.link.pending import PendingOp, PendingQueue
from natsrouter.link.sender import MSG_ID, SENT, UNSETTLED, Sender
from natsrouter.link.spool import open_pending_queue
from natsrouter.link.state import ConnectionState
from natsrouter.link.streams import StreamKeeper
from natsrouter.link.subscriptions import Consumer, JsHandler, Subscription
from natsrouter.link.tasks import TaskOwner, cancel_and_wait
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import (
    AckKind,
    BucketSpec,
    Connection,
    ConsumerSpec,
    DirectHandler,
    FastPublish,
    InboundMessage,
    JsMessage,
    KvEntry,
    MessageHandler,
    StreamSpec,
    Transport,
)
from natsrouter.observability.metrics import LinkMetrics

__all__ = ["MSG_ID", "Link"]


def _not_connected(*_: object) -> None:
    raise NotConnectedError()


class _BehindQueued(Exception):
    """The subject has items queued: the publish goes behind them."""


class Link:
    """One resilient connection to a NATS server pool."""

    def __init__(
        self,
        settings: Settings,
        metrics: LinkMetrics,
        *,
        servers: Sequence[str] | None = None,
        transport: Transport | None = None,
        pending: PendingQueue | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._rng = rng or random.Random()
        self._clock = clock
        self._t = LinkTelemetry(metrics, clock=clock)
        self.metrics = metrics
        # Hot-path handles, resolved once.
        self._publish_total = metrics.operation_total[Operation.PUBLISH]
        self._pwa_total = metrics.operation_total[Operation.PUBLISH_WITH_ACK]
        self._pwa_duration = metrics.duration_of[Operation.PUBLISH_WITH_ACK]
        # Message ids: random per process (so two processes never collide), then a counter.
        self._msg_id_prefix = f"{secrets.token_hex(8)}-"
        self._msg_seq = itertools.count(1)

        base = transport or NatsTransport(ConnectOptions.from_settings(settings))
        if isinstance(base, NatsTransport):
            base.on_slow_consumer = self._t.slow_consumer
            base.on_unreadable = self._t.unreadable_message
        self.faults: FaultRegistry | None = None
        if settings.nats_fault_injection_enabled:
            self.faults = FaultRegistry(rng=self._rng, on_injected=self._fault_injected)
            base = FaultInjectingTransport(base, self.faults)
        self._tasks = TaskOwner(self._t.log)
        self._session = ConnectionSupervisor(
            settings,
            tuple(servers if servers is not None else settings.nats_url),
            base,
            self._t,
            self._tasks,
            rng=self._rng,
            clock=clock,
            wall_clock=wall_clock,
        )
        recheck_s = settings.nats_max_reconnect_delay_ms / 1000
        self._streams = StreamKeeper(self._t, clock, recheck_s)
        self._buckets = BucketKeeper(self._t, clock, recheck_s)
        self._kv = KeyValueStore(
            self._session, self._t, clock, settings.nats_request_timeout_ms / 1000
        )
        self._bindings = Bindings(self._session, self._t, self._tasks, self._rng)
        # May raise ConfigError (nats_pending_spool_path) before anything is started.
        queue = pending or open_pending_queue(settings)
        self.accounting = Accounting((self._publish_total, self._pwa_total))
        self._outbox = Outbox(
            settings,
            queue,
            self.accounting,
            self._t,
            wall_clock=wall_clock,
            fail_open=lambda: self._session.fail_open_active,
            state_name=lambda: self._session.state.value,
            destinations=Destinations(
                self._session.backoff,
                self._rng,
                clock,
                lambda blocked: metrics.blocked_destinations.set(blocked),
            ),
        )
        self._sender = Sender(
            settings,
            self._outbox,
            self._session,
            self._t,
            self._tasks,
            clock=clock,
            wall_clock=wall_clock,
            direct=lambda: self._direct,
            max_in_flight=settings.nats_replay_max_in_flight,
        )
        self._outbox.on_push = self._sender.wake
        self._outbox.on_held_change = self._refresh_direct
        self._held = self._outbox.held
        self._session.hooks = SessionHooks(
            prepare=self._prepare,
            connected=self._sender.start,
            lost=self._sender.cancel,
            state_changed=self._refresh_direct,
            healthy=self._healthy,
            before_attempt=self._outbox.expire,
        )
        self._direct: Connection | None = None  # see _refresh_direct
        #: The connection replies go out on: the live one, or the one being prepared.
        self._replying: Connection | None = None
        self._preparing: Connection | None = None
        self._fast_publish: FastPublish = _not_connected
        self._reply_publish: FastPublish = _not_connected
        self._closed = False
        #: Parts other components add to ``/status``: name -> a function giving the part.
        self.status_parts: dict[str, Callable[[], Any]] = {}
        #: Set when the exhaustion policy is ``exit``: the process should exit non-zero.
        self.exit_requested = self._session.exit_requested

    async def _prepare(self, conn: Connection, generation: int) -> None:
        """Before a connection counts as connected: streams and buckets, then subscriptions.

        Replies go out on it already: a request is delivered as soon as its subscription is
        bound, before the bindings after it, and a reply is never queued nor ordered behind
        anything, so it need not wait for the link to count as connected.
        """
        self._preparing = conn
        self._refresh_direct()
        try:
            await self._streams.ensure_all(conn)
            await self._buckets.ensure_all(conn)
            await self._bindings.bind_all(conn, generation)
        finally:
            self._preparing = None
            self._refresh_direct()

    async def _healthy(self, conn: Connection, generation: int) -> None:
        await self._streams.recheck(conn)
        await self._buckets.recheck(conn)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; returns at once, whether or not NATS is up."""
        self._session.start()

    async def wait_connected(self, timeout_s: float) -> bool:
        """True once connected (with subscriptions in place), False after ``timeout_s``."""
        try:
            await asyncio.wait_for(self._session.connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop everything, idempotently; pending items stay in the queue object."""
        if self._closed:
            return
        self._closed = True
        self._sender.cancel()
        await self._bindings.close()
        await self._session.close()
        if self._sender.task is not None:
            await cancel_and_wait([self._sender.task])
        self._outbox.queue.close()

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._session.state

    @property
    def ready(self) -> bool:
        return self._session.state is ConnectionState.CONNECTED

    @property
    def alive(self) -> bool:
        """False when a link task died of a bug or the supervisor stopped for good."""
        return self._tasks.crashed is None and self._session.running

    @property
    def fail_open_active(self) -> bool:
        return self._session.fail_open_active

    @property
    def pending(self) -> PendingQueue:
        return self._outbox.queue

    def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        session = self._session
        return {
            "state": session.state.value,
            "ready": self.ready,
            "alive": self.alive,
            **session.status(),
            "pending": self._outbox.status(),
            "accounting": self.accounting.as_dict(),
            **self._bindings.status(),
            "faults": {t.value: f.to_dict() for t, f in self.faults.active().items()}
            if self.faults
            else None,
            **{name: part() for name, part in self.status_parts.items()},
        }

    def _refresh_direct(self) -> None:
        """Recompute ``_direct``: the connection publishes go straight to, or None to hold.

        Derived from the state and from whether anything is queued, and cached because it is
        read on every publish. Called on each state change and when the outbox goes from
        empty to holding items or back: only then does a core publish pay for the check of
        its subject against the queued ones.
        """
        live = self._session.live()
        self._direct = live[0] if live is not None else None
        if self._direct is None:
            self._fast_publish = _not_connected
        elif self._held:
            self._fast_publish = self._publish_unless_held
        else:
            self._fast_publish = self._direct.fast_publish
        # Replies are never held behind queued items: always the connection's own, or the
        # one being prepared (see _prepare).
        self._replying = self._direct or self._preparing
        self._reply_publish = (
            self._replying.fast_publish if self._replying is not None else _not_connected
        )

    def _publish_unless_held(
        self, subject: str, payload: bytes, reply: str, headers: Mapping[str, str] | None
    ) -> Awaitable[None] | None:
        """The core publish while some subjects have items queued: those go behind them."""
        if subject in self._held:
            raise _BehindQueued
        assert self._direct is not None  # installed only while connected
        return self._direct.fast_publish(subject, payload, reply, headers)

    # -- streams, subscriptions, consumers ---------------------------------------------------

    async def declare_stream(self, spec: StreamSpec) -> None:
        """Create ``spec`` when missing: now if connected, and on every later connection.

        Never raises (see ``streams.StreamKeeper``). Streams are ensured before subscriptions
        and consumers are bound.
        """
        live = self._session.live()
        await self._streams.declare(spec, live[0] if live else None)

    async def declare_bucket(self, spec: BucketSpec) -> None:
        """Create the key-value bucket when missing: now if connected, and on every later
        connection (after the streams). Never raises (see ``kv.BucketKeeper``)."""
        live = self._session.live()
        await self._buckets.declare(spec, live[0] if live else None)

    # -- key-value: tried once on the live connection, never queued ----------------------------

    async def kv_get(self, bucket: str, key: str) -> KvEntry | None:
        """The key's current entry, or None. Raises ``LinkError`` (``NotConnectedError`` at
        once when down)."""
        return await self._kv.get(bucket, key)

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        """Store ``value`` under ``key``; the new revision. Raises ``LinkError``."""
        return await self._kv.put(bucket, key, value)

    async def kv_create(self, bucket: str, key: str, value: bytes) -> int | None:
        """Store ``value`` only if ``key`` has none: its revision, or None when another
        writer's value is there (of racing writers exactly one wins). Raises ``LinkError``."""
        return await self._kv.create(bucket, key, value)

    async def kv_update(self, bucket: str, key: str, value: bytes, revision: int) -> int | None:
        """Store ``value`` only if ``key`` is still at ``revision``: the new revision, or None
        when another write came first. Raises ``LinkError``."""
        return await self._kv.update(bucket, key, value, revision)

    async def subscribe(
        self, subject: str, handler: MessageHandler, queue: str | None = None
    ) -> Subscription:
        """Subscribe now if connected, and on every later connection (``Bindings.subscribe``)."""
        return await self._bindings.subscribe(subject, handler, queue)

    async def subscribe_direct(
        self, subject: str, handler: DirectHandler, queue: str | None = None
    ) -> Subscription:
        """``subscribe`` with a plain-function handler, called as each message is read.

        No task or coroutine per message (``Connection.subscribe`` with ``direct``): for a
        handler that never waits, and starts a task of its own for what must.
        """
        return await self._bindings.subscribe(subject, handler, queue, direct=True)

    async def unsubscribe(self, sub: Subscription, *, drain: bool = False) -> None:
        """Stop the subscription; with ``drain``, messages already received are delivered."""
        await self._bindings.unsubscribe(sub, drain=drain)

    async def consume(
        self,
        spec: ConsumerSpec,
        handler: JsHandler,
        *,
        batch: int = 10,
        fetch_timeout_s: float = 1.0,
    ) -> Consumer:
        """Run a durable pull consumer: fetch, call ``handler`` per message, rebind after loss.

        The handler acknowledges through ``ack``/``nak``/``term``; a message it leaves alone
        is redelivered by the server after the ack wait.
        """
        return self._bindings.consume(spec, handler, batch, fetch_timeout_s)

    async def stop_consumer(self, consumer: Consumer, grace_s: float = 0.0) -> None:
        """Stop fetching; the batch in hand gets up to ``grace_s`` to finish, then is cancelled.

        A message whose handler is cancelled is not acknowledged: the server delivers it
        again after the ack wait.
        """
        await self._bindings.stop_consumer(consumer, grace_s)

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> Result:
        """Core NATS publish (at most once on the wire); queued while not connected."""
        # The hot path: no coroutine of the client's, one integer increment. While publishes
        # must be held, _fast_publish is _not_connected, which raises (see _refresh_direct).
        # While items are queued, _fast_publish is _publish_unless_held, which raises for
        # a subject with items queued (order per subject). It returns an awaitable only when
        # something must wait (the client's buffer past its limit; see Connection).
        conn = self._direct
        try:
            waiting = self._fast_publish(subject, payload, "", headers)
            if waiting is not None:
                await waiting
        except Exception as exc:  # noqa: BLE001 - fast_publish may raise the client's errors
            op = PendingOp(Operation.PUBLISH, subject, payload, headers)
            if conn is None or isinstance(exc, _BehindQueued):
                return self._outbox.not_sendable(op, conn is not None)
            return self._sender.send_failed(op, conn.translate(exc), conn)
        self._publish_total.value += 1
        return SENT

    async def reply(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> Result:
        """Answer a request on its reply inbox: ``sent`` now, or ``dropped``, never queued.

        See ``Sender.reply_failed``: a drop has reason ``reply_dropped``, is counted in
        ``router_nats_replies_dropped_total{reason}`` and logged rate-limited. ``reply_now``
        awaited when it must wait (the decide intake calls ``reply_now`` itself).
        """
        result = self.reply_now(subject, payload, headers)
        return result if isinstance(result, Result) else await result

    def reply_now(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> Result | Coroutine[Any, Any, Result]:
        """``reply`` without a coroutine when nothing must wait: the ``Result`` at once.

        When the connection hands back something to wait for (the client's forced flush past
        its buffer limit, an injected fault), a coroutine giving the ``Result`` once it is
        done: the caller must await it or run it in a task, never drop it.
        """
        conn = self._replying
        if conn is None:
            return self._sender.reply_failed(None, subject, NotConnectedError())
        try:
            waiting = self._reply_publish(subject, payload, "", headers)
        except Exception as exc:  # noqa: BLE001 - fast_publish may raise the client's errors
            return self._sender.reply_failed(conn, subject, exc)
        if waiting is not None:
            return self._reply_waited(conn, subject, waiting)
        self._publish_total.value += 1
        return SENT

    async def _reply_waited(
        self, conn: Connection, subject: str, waiting: Awaitable[None]
    ) -> Result:
        try:
            await waiting
        except Exception as exc:  # noqa: BLE001 - fast_publish may raise the client's errors
            return self._sender.reply_failed(conn, subject, exc)
        self._publish_total.value += 1
        return SENT

    async def publish_with_ack(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> Result:
        """JetStream publish; ``sent`` carries the server's PubAck.

        The message keeps the caller's ``Nats-Msg-Id``, or gets one now, before the first
        attempt: every later send of it (retry, replay, replay after a restart from the
        spool) carries the same id, and the server stores it once within the stream's
        duplicate window.
        """
        if headers is None:
            headers = {MSG_ID: f"{self._msg_id_prefix}{next(self._msg_seq)}"}
        elif MSG_ID not in headers:
            headers = {**headers, MSG_ID: f"{self._msg_id_prefix}{next(self._msg_seq)}"}
        conn = self._direct
        if conn is None or subject in self._held:  # not connected, or behind queued items
            op = PendingOp(Operation.PUBLISH_WITH_ACK, subject, payload, headers)
            return self._outbox.not_sendable(op, conn is not None)
        # The JetStream branch of Sender.send, inlined: with 100 publishes in flight the event
        # loop is the bottleneck, and going through it measured 0.85 of raw instead of 0.91-0.95.
        started = self._clock()
        sender = self._sender
        try:
            ack = await conn.publish_with_ack(subject, payload, headers, sender.request_timeout_s)
        except LinkError as err:
            op = PendingOp(Operation.PUBLISH_WITH_ACK, subject, payload, headers)
            if err.reason in UNSETTLED and sender.retry_deadline_s and not self.fail_open_active:
                return await sender.retry_publish(op, err, conn, started)
            return sender.send_failed(op, err, conn)
        self._pwa_duration.observe(self._clock() - started)
        self._pwa_total.value += 1
        return Result(Outcome.SENT, ack)

    # -- request, ack, nak, term -------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int | None = None,
    ) -> InboundMessage:
        """Request-reply. Raises ``LinkError`` (``NotConnectedError`` at once when down)."""
        timeout_s = (timeout_ms or self._settings.nats_request_timeout_ms) / 1000
        return await self._sender.request(subject, payload, headers, timeout_s)

    async def ack(self, message: JsMessage) -> Result:
        return await self._acknowledge(message, AckKind.ACK, None)

    async def nak(self, message: JsMessage, delay_ms: int | None = None) -> Result:
        return await self._acknowledge(message, AckKind.NAK, delay_ms)

    async def term(self, message: JsMessage) -> Result:
        """Tell the server never to redeliver; counted as an ``ack`` operation."""
        return await self._acknowledge(message, AckKind.TERM, None)

    async def in_progress(self, message: JsMessage) -> Result:
        """Tell the server ``message`` is still being worked on: its ack wait starts again.

        The messages fetched with it and not yet handed out get the same (they wait behind it,
        their ack wait running). Counted as ``ack`` operations. The result is the one of
        ``message`` itself.
        """
        result = await self._acknowledge(message, AckKind.IN_PROGRESS, None)
        for waiting in self._bindings.fetched_after(message):
            await self._acknowledge(waiting, AckKind.IN_PROGRESS, None)
        return result

    async def _acknowledge(self, message: JsMessage, kind: AckKind, delay_ms: int | None) -> Result:
        op = Operation.NAK if kind is AckKind.NAK else Operation.ACK
        if not message.reply:
            raise ValueError("not a JetStream message: no reply subject to acknowledge")
        live = self._session.live()
        if live is None:
            err: LinkError = NotConnectedError()
            self._t.failed(op, err)
            if self.fail_open_active:
                self._t.fail_open(op, None, err.reason)
                return Result(Outcome.FAILED_OPEN, reason=err.reason)
            return Result(Outcome.FAILED, reason=err.reason, error=err)
        conn, generation = live
        try:
            await conn.acknowledge(message.reply, kind, delay_ms)
        except LinkError as err:
            self._t.failed(op, err)
            if err.connection_lost:
                self._session.on_lost(generation, conn, err)
            return Result(Outcome.FAILED, reason=err.reason, error=err)
        self._t.succeeded(op)
        return SENT

    # -- faults ------------------------------------------------------------------------------

    def inject(self, target: FaultTarget, fault: Fault) -> None:
        """Set a fault (raises ``RuntimeError`` unless fault injection is enabled, and
        ``FaultSpecError`` for a subject on ``connect``, ``ack`` or ``nak``)."""
        if self.faults is None:
            raise RuntimeError("fault injection is disabled (nats_fault_injection_enabled)")
        self.faults.set(target, fault)

    def clear_faults(self, target: FaultTarget | None = None) -> None:
        if self.faults is not None:
            self.faults.clear(target)

    def _fault_injected(self, target: FaultTarget, fault: Fault) -> None:
        self._t.fault_injected(target.value, fault.describe())
