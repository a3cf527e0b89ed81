"""The resilient NATS link: owns the connection and every operation on it.

Nothing else in natsrouter touches nats-py. The link
- tracks one ``ConnectionState``, changed only in ``_transition``;
- connects and reconnects by itself (``_supervise``): exponential backoff with jitter,
  rotating through the server pool, starting even while NATS is down, declaring the outage
  exhausted after ``nats_reconnect_attempts`` and applying ``nats_on_reconnect_exhausted``;
- finds half-open links with its own pings (``_watchdog``);
- binds every subscription and consumer again on each new connection;
- keeps publishes made while not connected in a bounded pending queue (memory, or the SQLite
  spool) and replays them oldest first (``_replay``), or refuses them at once in fail-open
  mode;
- gives every JetStream publish a ``Nats-Msg-Id`` when it is first accepted and keeps it
  through retries, the queue and the spool, so however often it is sent the stream stores it
  once; an unsettled one (timeout, a stream between leaders) is retried with that id until
  ``js_publish_retry_deadline_ms`` (``_retry_publish``);
- returns one typed ``Result`` per publish / ack / nak, and raises typed errors for requests.

Task ownership: the supervisor, watchdog, replay and consumer tasks are held here; a
done-callback logs an unexpected death (and fails liveness); ``close()`` cancels and awaits
them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from natsrouter.config import ExhaustedPolicy, Settings, redact_url
from natsrouter.errors import ConnectionClosedError, LinkError, NotConnectedError, Reason
from natsrouter.link.accounting import Accounting
from natsrouter.link.backoff import BackoffPolicy
from natsrouter.link.faults import Fault, FaultInjectingTransport, FaultRegistry, FaultTarget
from natsrouter.link.nats_transport import ConnectOptions, NatsTransport
from natsrouter.link.outcome import Operation, Outcome, Result
from natsrouter.link.pending import Admission, PendingItem, PendingOp, PendingQueue
from natsrouter.link.spool import SpoolError, open_pending_queue
from natsrouter.link.state import ConnectionState, check_transition
from natsrouter.link.subscriptions import Consumer, JsHandler, Subscription
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import (
    AckKind,
    Connection,
    ConsumerSpec,
    FastPublish,
    InboundMessage,
    JsMessage,
    MessageHandler,
    PullConsumer,
    StreamSpec,
    Transport,
)
from natsrouter.observability.metrics import LinkMetrics

# Replay yields to the event loop after this many items, so intake keeps flowing.
_REPLAY_BATCH = 100
# A watchdog ping that fails this many times in a row means the link is dead.
_MISSED_PINGS_LOST = 2
# Results are immutable: the common one is shared.
_SENT = Result(Outcome.SENT)
#: The header JetStream deduplicates on.
MSG_ID = "Nats-Msg-Id"
# JetStream publish failures whose outcome is not settled: a timeout (stored or not, nobody
# knows) and no responders while a stream holds the subject (a clustered stream between
# leaders). Retried with the same Nats-Msg-Id, pausing from the first value, doubling to the cap.
_UNSETTLED = frozenset({Reason.TIMEOUT, Reason.NO_RESPONDERS})
_RETRY_PAUSE_S = 0.05
_RETRY_PAUSE_MAX_S = 1.0


async def _not_connected(*_: object, **__: object) -> None:
    raise NotConnectedError()


async def _cancel_and_wait(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait for them, cancelling again if one swallowed the cancellation.

    nats-py's ``Subscription.next_msg`` turns a cancellation into ``ConnectionClosedError``
    when the connection is closed, so one ``cancel()`` is not always enough.
    """
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


def _iso(wall: float | None) -> str | None:
    return None if wall is None else datetime.fromtimestamp(wall, UTC).isoformat()


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
        self._servers = tuple(servers if servers is not None else settings.nats_url)
        if not self._servers:
            raise ValueError("the link needs at least one server URL")
        self._backoff = BackoffPolicy(
            settings.nats_reconnect_delay_ms,
            settings.nats_max_reconnect_delay_ms,
            settings.nats_reconnect_jitter,
        )
        self._rng = rng or random.Random()
        self._clock = clock
        self._wall = wall_clock
        self._t = LinkTelemetry(metrics, clock=clock)
        self.metrics = metrics
        # Hot-path handles, resolved once.
        self._publish_total = metrics.operation_total[Operation.PUBLISH]
        self._pwa_total = metrics.operation_total[Operation.PUBLISH_WITH_ACK]
        self._pwa_duration = metrics.duration_of[Operation.PUBLISH_WITH_ACK]
        self._request_timeout_s = settings.nats_request_timeout_ms / 1000
        self._retry_deadline_s = settings.js_publish_retry_deadline_ms / 1000
        # Message ids: random per process (so two processes never collide), then a counter.
        self._msg_id_prefix = f"{secrets.token_hex(8)}-"
        self._msg_seq = itertools.count(1)

        base = transport or NatsTransport(ConnectOptions.from_settings(settings))
        if isinstance(base, NatsTransport):
            base.on_slow_consumer = self._t.slow_consumer
        self.faults: FaultRegistry | None = None
        if settings.nats_fault_injection_enabled:
            self.faults = FaultRegistry(rng=self._rng, on_injected=self._fault_injected)
            base = FaultInjectingTransport(base, self.faults)
        self._transport = base
        # May raise ConfigError (nats_pending_spool_path) before anything is started.
        self._pending: PendingQueue = pending or open_pending_queue(settings)
        self.accounting = Accounting((self._publish_total, self._pwa_total))
        metrics.track_ledger(self.accounting.as_dict)
        metrics.pending_limit.set(settings.nats_max_pending_operations)
        metrics.pending_bytes_limit.set(settings.nats_max_pending_bytes)
        if self._pending.count:  # a spool from an earlier process: replayed once connected
            self.accounting.recovered = self._pending.count
            self._t.spool_recovered(
                settings.nats_pending_spool_path, self._pending.count, self._pending.size_bytes
            )
            self._t.pending_gauges(self._pending.count, self._pending.size_bytes)

        self._state = ConnectionState.CONNECTING
        metrics.connection_status.set(self._state.gauge)
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._conn: Connection | None = None
        self._direct: Connection | None = None  # see _refresh_direct
        self._fast_publish: FastPublish = _not_connected
        self._dead: list[Connection] = []
        self._generation = 0
        self._server_index = 0
        self._current_server: str | None = None
        # The current episode of not being connected (reset on connect).
        self._attempts = 0  # reconnect attempts made in this episode
        self._had_initial_attempt = False
        self._exhausted = False
        self._outage_started: float | None = None  # monotonic; set by a loss
        self._last_connected_at: float | None = None
        self._last_failure_at: float | None = None
        self._last_failure_reason: Reason | None = None
        self._streams: list[StreamSpec] = []
        self._unsure_streams: dict[str, StreamSpec] = {}  # checks that failed, to try again
        self._last_stream_check = 0.0
        self._subscriptions: list[Subscription] = []
        self._consumers: list[Consumer] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._replay_task: asyncio.Task[None] | None = None
        self._last_replay: float = 0.0
        self._closed = False
        self._crashed: BaseException | None = None
        #: Set when the exhaustion policy is ``exit``: the process should exit non-zero.
        self.exit_requested = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; returns at once, whether or not NATS is up."""
        if self._supervisor is not None:
            return
        self._supervisor = self._own(self._supervise(), "supervisor")

    async def wait_connected(self, timeout_s: float) -> bool:
        """True once connected (with subscriptions in place), False after ``timeout_s``."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop everything, idempotently; pending items stay in the queue object."""
        if self._closed:
            return
        self._closed = True
        self._generation += 1  # every loop bound to a connection ends
        tasks = [t for t in (self._supervisor, self._watchdog_task, self._replay_task) if t]
        tasks += [c.task for c in self._consumers if c.task]
        await _cancel_and_wait(tasks)
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
        await self._close_dead()
        if self._state is not ConnectionState.DISCONNECTED:
            self._transition(ConnectionState.DISCONNECTED, "closed")
        self._pending.close()

    def _own(self, coro: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A bug, not a NATS failure: say so loudly and fail liveness.
            self._crashed = exc
            self._t.log.error("link task died", task=task.get_name(), error=exc, exc_info=exc)

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def ready(self) -> bool:
        return self._state is ConnectionState.CONNECTED

    @property
    def alive(self) -> bool:
        """False when a link task died of a bug or the supervisor stopped for good."""
        if self._crashed is not None:
            return False
        return self._supervisor is None or not self._supervisor.done() or self._closed

    @property
    def fail_open_active(self) -> bool:
        if self._settings.nats_fail_open_mode:
            return True
        return (
            self._exhausted
            and self._state is not ConnectionState.CONNECTED
            and self._settings.nats_on_reconnect_exhausted is ExhaustedPolicy.FAIL_OPEN
        )

    @property
    def pending(self) -> PendingQueue:
        return self._pending

    def _transition(self, new: ConnectionState, why: str) -> None:
        check_transition(self._state, new)
        old, self._state = self._state, new
        self.metrics.connection_status.set(new.gauge)
        if new is ConnectionState.CONNECTED:
            self._connected.set()
        else:
            self._connected.clear()
        self._refresh_direct()
        self._t.log.debug("connection state changed", old=old.value, new=new.value, why=why)

    def status(self) -> dict[str, Any]:
        """The ``/status`` document."""
        outage_s = (
            None if self._outage_started is None else round(self._clock() - self._outage_started, 3)
        )
        limits = self._pending.limits
        return {
            "state": self._state.value,
            "ready": self.ready,
            "alive": self.alive,
            "server": redact_url(self._current_server)
            if self.ready and self._current_server
            else None,
            "last_server": redact_url(self._current_server) if self._current_server else None,
            "servers": [redact_url(s) for s in self._servers],
            "reconnect_attempts": self._attempts,
            "max_reconnect_attempts": self._settings.nats_reconnect_attempts,
            "exhausted": self._exhausted,
            "exhausted_policy": self._settings.nats_on_reconnect_exhausted.value,
            "fail_open": self.fail_open_active,
            "outage_seconds": outage_s,
            "last_connected_at": _iso(self._last_connected_at),
            "last_failure_at": _iso(self._last_failure_at),
            "last_failure_reason": self._last_failure_reason.value
            if self._last_failure_reason
            else None,
            "pending": {
                "spool": self._settings.nats_pending_spool_path or None,
                "recovered": self.accounting.recovered,
                "count": self._pending.count,
                "bytes": self._pending.size_bytes,
                "max_count": limits.max_count,
                "max_bytes": limits.max_bytes,
                "overflow": limits.overflow.value,
            },
            "accounting": self.accounting.as_dict(),
            "subscriptions": sum(1 for s in self._subscriptions if not s.cancelled),
            "consumers": sum(1 for c in self._consumers if not c.cancelled),
            "faults": {t.value: f.to_dict() for t, f in self.faults.active().items()}
            if self.faults
            else None,
        }

    # -- connecting --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._closed:
            await self._close_dead()
            if self._state is ConnectionState.CONNECTED:
                await self._lost.wait()
                self._lost.clear()
                continue
            if (
                self._exhausted
                and self._settings.nats_on_reconnect_exhausted is ExhaustedPolicy.EXIT
            ):
                self.exit_requested.set()
                return
            await self._attempt()

    async def _attempt(self) -> None:
        """One connection attempt, preceded by its backoff delay unless it is the very first."""
        self._expire()
        attempt = 0
        if self._had_initial_attempt:
            attempt = self._attempts + 1
            delay_ms = self._backoff.delay_ms(self._attempts, self._rng)
            self._attempts = attempt
            self._t.reconnect_attempt(attempt, self._settings.nats_reconnect_attempts, delay_ms)
            await asyncio.sleep(delay_ms / 1000)
        self._had_initial_attempt = True
        # Round robin: after a loss, the first attempt goes to the next server in the pool.
        server = self._servers[self._server_index % len(self._servers)]
        self._server_index += 1
        self._generation += 1
        generation = self._generation
        conn: Connection | None = None
        try:
            conn = await self._transport.connect(server, partial(self._on_lost, generation))
            for spec in self._streams:
                await self._ensure_stream(conn, spec)
            await self._bind_subscriptions(conn, generation)
        except LinkError as err:
            if conn is not None:
                await conn.close()
            self._attempt_failed(err, server, attempt)
            return
        except asyncio.CancelledError:  # closing while binding: leave no connection open
            if conn is not None:
                await conn.close()
            raise
        self._connected_to(conn, server)

    def _attempt_failed(self, err: LinkError, server: str, attempt: int) -> None:
        self._last_failure_at = self._wall()
        self._last_failure_reason = err.reason
        self._t.connect_failed(err, redact_url(server), attempt)
        if attempt == 0:
            return
        self._t.reconnect_failed(err, attempt)
        limit = self._settings.nats_reconnect_attempts
        if limit and attempt >= limit and not self._exhausted:
            self._exhausted = True
            policy = self._settings.nats_on_reconnect_exhausted
            self._t.exhausted(limit, policy.value)
            if self._state is not ConnectionState.DISCONNECTED:
                self._transition(ConnectionState.DISCONNECTED, "reconnection exhausted")

    def _connected_to(self, conn: Connection, server: str) -> None:
        self._conn = conn
        self._current_server = server
        self._last_connected_at = self._wall()
        self._t.established(redact_url(server))
        if self._outage_started is not None:
            self._t.restored(self._attempts, self._clock() - self._outage_started)
        self._outage_started = None
        self._attempts = 0
        self._exhausted = False
        self._t.end_bursts()
        self._transition(ConnectionState.CONNECTED, "connected")
        generation = self._generation
        self._watchdog_task = self._own(self._watchdog(conn, generation), "watchdog")
        self._start_replay(conn, generation)

    def _on_lost(self, generation: int, _conn: Connection | None, err: LinkError) -> None:
        """A connection died (server gone, pings unanswered, fault). Called once per loss."""
        if generation != self._generation or self._state is not ConnectionState.CONNECTED:
            return
        conn, self._conn = self._conn, None
        if conn is not None:
            self._dead.append(conn)
        self._generation += 1  # stale handles and loops of the dead connection stop
        current = asyncio.current_task()
        for task in (self._watchdog_task, self._replay_task):
            if task is not None and task is not current:
                task.cancel()
        self._outage_started = self._clock()
        self._last_failure_at = self._wall()
        self._last_failure_reason = err.reason
        self._t.lost(err, self._settings.nats_reconnect_attempts)
        self._transition(ConnectionState.RECONNECTING, f"lost: {err.reason.value}")
        self._lost.set()

    async def _close_dead(self) -> None:
        dead, self._dead = self._dead, []
        for conn in dead:
            await conn.close()

    async def _watchdog(self, conn: Connection, generation: int) -> None:
        """Ping on our own schedule: two unanswered pings in a row mean a dead link."""
        interval = self._settings.nats_ping_interval_ms / 1000
        missed = 0
        while generation == self._generation:
            if missed == 0:
                await asyncio.sleep(interval)
            try:
                await conn.ping(interval)
            except LinkError as err:
                if err.connection_lost:
                    self._on_lost(generation, conn, err)
                    return
                missed += 1
                if missed >= _MISSED_PINGS_LOST:
                    self._on_lost(
                        generation,
                        conn,
                        ConnectionClosedError(f"no answer to {missed} pings ({interval:g}s each)"),
                    )
                    return
                continue
            missed = 0
            self._maybe_replay_again(conn, generation)
            await self._maybe_ensure_streams(conn)

    # -- streams -----------------------------------------------------------------------------

    async def declare_stream(self, spec: StreamSpec) -> None:
        """Create ``spec`` when missing: now if connected, and on every later connection.

        Never raises. Streams are ensured before subscriptions and consumers are bound. A
        check that fails without losing the connection (a timeout while a cluster elects the
        stream's leader, a refusal) is logged (``NATS_STREAM_ERROR``) and tried again after
        watchdog pings, at most every ``nats_max_reconnect_delay_ms``: it does not cost the
        connection, which decides and the other streams can use meanwhile.
        """
        self._streams.append(spec)
        conn = self._conn
        if conn is not None and self._state is ConnectionState.CONNECTED:
            with contextlib.suppress(LinkError):
                await self._ensure_stream(conn, spec)

    async def _ensure_stream(self, conn: Connection, spec: StreamSpec) -> None:
        """Raises only when the connection is lost; other failures are retried later."""
        try:
            created = await conn.ensure_stream(spec)
        except LinkError as err:
            self._t.stream_failed(spec.name, err)
            self._unsure_streams[spec.name] = spec
            if err.connection_lost:
                raise
            return
        self._unsure_streams.pop(spec.name, None)
        if created:
            self._t.stream_created(spec.name, spec.subjects)

    async def _maybe_ensure_streams(self, conn: Connection) -> None:
        due = (
            self._clock() - self._last_stream_check
            >= self._settings.nats_max_reconnect_delay_ms / 1000
        )
        if not self._unsure_streams or not due:
            return
        self._last_stream_check = self._clock()
        for spec in list(self._unsure_streams.values()):
            try:
                await self._ensure_stream(conn, spec)
            except LinkError:
                return  # lost: the next connection checks every stream anyway

    # -- subscriptions -----------------------------------------------------------------------

    async def subscribe(
        self, subject: str, handler: MessageHandler, queue: str | None = None
    ) -> Subscription:
        """Subscribe now if connected, and again after every reconnect until cancelled.

        While connected, a failure raises the typed error and nothing is registered. While not
        connected, the subscription is registered and bound on the next connection.
        """
        sub = Subscription(subject, queue, handler)
        conn, generation = self._conn, self._generation
        if conn is not None and self._state is ConnectionState.CONNECTED:
            await self._bind(conn, generation, sub)  # raises on failure
        self._subscriptions.append(sub)
        return sub

    async def unsubscribe(self, sub: Subscription, *, drain: bool = False) -> None:
        """Stop the subscription; with ``drain``, messages already received are delivered."""
        sub.cancelled = True
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(sub)
        if sub.native is not None and sub.bound_generation == self._generation:
            with contextlib.suppress(LinkError):
                await (sub.native.drain() if drain else sub.native.unsubscribe())
        sub.native = None

    async def _bind(self, conn: Connection, generation: int, sub: Subscription) -> None:
        async def deliver(msg: InboundMessage) -> None:
            try:
                await sub.handler(msg)
            except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the subscription
                self._t.handler_failed(sub.subject, exc)

        try:
            sub.native = await conn.subscribe(sub.subject, sub.queue, deliver)
        except LinkError as err:
            self._t.failed(Operation.SUBSCRIBE, err, sub.subject)
            raise
        sub.bound_generation = generation
        sub.error = None
        self._t.succeeded(Operation.SUBSCRIBE)

    async def _bind_subscriptions(self, conn: Connection, generation: int) -> None:
        """Bind every registered subscription to a new connection before calling it connected.

        A failure that can pass (connection, timeout) fails the whole attempt, so the link
        never reports ``connected`` with a subscription missing; a refusal from the server is
        recorded on the handle and logged, and the others are bound.
        """
        index = 0
        while index < len(self._subscriptions):  # handles added meanwhile are bound too
            sub = self._subscriptions[index]
            index += 1
            try:
                await self._bind(conn, generation, sub)
            except LinkError as err:
                if err.retriable:
                    raise
                sub.error = str(err)

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
        is redelivered by the server after the ack wait. Registered at once, connected or not.
        """
        consumer = Consumer(spec, handler, batch, fetch_timeout_s)
        consumer.task = self._own(self._consume(consumer), f"consumer:{spec.durable}")
        self._consumers.append(consumer)
        return consumer

    async def stop_consumer(self, consumer: Consumer, grace_s: float = 0.0) -> None:
        """Stop fetching; the batch in hand gets up to ``grace_s`` to finish, then is cancelled.

        A message whose handler is cancelled is not acknowledged: the server delivers it
        again after the ack wait.
        """
        consumer.stopping = True
        if consumer.task is not None:
            if grace_s > 0 and consumer.busy:  # an idle consumer is only waiting to fetch
                await asyncio.wait({consumer.task}, timeout=grace_s)
            await _cancel_and_wait([consumer.task])
        with contextlib.suppress(ValueError):
            self._consumers.remove(consumer)

    async def _consume(self, consumer: Consumer) -> None:
        retry = 0
        while not (self._closed or consumer.stopping):
            await self._connected.wait()
            conn, generation = self._conn, self._generation
            if conn is None:
                continue
            try:
                puller = await conn.pull_subscribe(consumer.spec)
            except LinkError as err:
                self._t.failed(Operation.SUBSCRIBE, err, consumer.spec.filter_subject)
                if err.connection_lost:
                    self._on_lost(generation, conn, err)
                await asyncio.sleep(self._backoff.delay_ms(retry, self._rng) / 1000)
                retry += 1
                continue
            retry = 0
            consumer.bound_generation = generation
            self._t.succeeded(Operation.SUBSCRIBE)
            try:
                await self._pull(consumer, conn, generation, puller)
            finally:
                await puller.stop()

    async def _pull(
        self, consumer: Consumer, conn: Connection, generation: int, puller: PullConsumer
    ) -> None:
        """Fetch and hand out messages until the connection changes or fetching fails."""
        while generation == self._generation and not consumer.stopping:
            try:
                messages = await puller.fetch(consumer.batch, consumer.fetch_timeout_s)
            except LinkError as err:
                if err.connection_lost:
                    self._on_lost(generation, conn, err)
                    return
                # e.g. the consumer was deleted: bind again after a pause
                self._t.failed(Operation.SUBSCRIBE, err, consumer.spec.filter_subject)
                await asyncio.sleep(self._backoff.delay_ms(0, self._rng) / 1000)
                return
            consumer.busy = True
            consumer.in_hand = messages  # for in_progress: the rest of the batch waits too
            try:
                for message in messages:
                    if consumer.stopping:
                        return  # the rest of the batch is redelivered after the ack wait
                    consumer.delivered += 1
                    try:
                        await consumer.handler(message)
                    except Exception as exc:  # noqa: BLE001 - a handler bug must not stop it
                        self._t.handler_failed(message.subject, exc)
            finally:
                consumer.busy = False
                consumer.in_hand = []

    # -- publishing --------------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None = None
    ) -> Result:
        """Core NATS publish (at most once on the wire); queued while not connected."""
        # The hot path: no branch, no allocation, one integer increment. While publishes
        # must be held, _fast_publish is _not_connected, which raises (see _refresh_direct).
        conn = self._direct
        try:
            await self._fast_publish(subject, payload, "", headers)
        except Exception as exc:  # noqa: BLE001 - fast_publish may raise the client's errors
            op = PendingOp(Operation.PUBLISH, subject, payload, headers)
            if conn is None:
                return self._not_sendable(op)
            return self._send_failed(op, conn.translate(exc), conn)
        self._publish_total.value += 1
        return _SENT

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
        if conn is None:
            op = PendingOp(Operation.PUBLISH_WITH_ACK, subject, payload, headers)
            return self._not_sendable(op)
        # The JetStream branch of _send, inlined: with 100 publishes in flight the event loop
        # is the bottleneck, and going through _send measured 0.85 of raw instead of 0.91-0.95.
        started = self._clock()
        try:
            ack = await conn.publish_with_ack(subject, payload, headers, self._request_timeout_s)
        except LinkError as err:
            op = PendingOp(Operation.PUBLISH_WITH_ACK, subject, payload, headers)
            if err.reason in _UNSETTLED and self._retry_deadline_s and not self.fail_open_active:
                return await self._retry_publish(op, err, conn, started)
            return self._send_failed(op, err, conn)
        self._pwa_duration.observe(self._clock() - started)
        self._pwa_total.value += 1
        return Result(Outcome.SENT, ack)

    async def _retry_publish(
        self, op: PendingOp, err: LinkError, conn: Connection, started: float
    ) -> Result:
        """Send an unsettled JetStream publish again, same ``Nats-Msg-Id``, until the deadline.

        The caller waits at most ``js_publish_retry_deadline_ms`` from its first attempt (plus
        what is left of one request timeout). No responders when no stream holds the subject
        is settled (``failed``, at once). When the deadline passes or the connection is lost
        or replaced, the publish is held (``queued``) and the replay sends it with its id.
        """
        self._t.failed(op.operation, err, op.subject)  # logged once; retries are counted
        if err.reason is Reason.NO_RESPONDERS and not await self._stream_exists(conn, op.subject):
            self.accounting.slow += 1
            self.accounting.failed += 1
            return Result(Outcome.FAILED, reason=err.reason, error=err)
        deadline = started + self._retry_deadline_s
        pause = _RETRY_PAUSE_S
        attempt = 0
        while (remaining := deadline - self._clock()) > 0:
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _RETRY_PAUSE_MAX_S)
            current = self._direct
            if current is None:
                break  # lost, or a replay runs: the queue keeps the order and the id
            conn = current
            attempt += 1
            self._t.publish_retry(err, op.subject, attempt)
            timeout_s = min(self._request_timeout_s, max(deadline - self._clock(), 0.001))
            try:
                sent_at = self._clock()
                ack = await conn.publish_with_ack(op.subject, op.payload, op.headers, timeout_s)
            except LinkError as again:
                if again.reason not in _UNSETTLED:
                    return self._send_failed(op, again, conn)
                err = again
                self._t.failed(op.operation, err, op.subject, log=False)
                continue
            self._pwa_duration.observe(self._clock() - sent_at)
            self._pwa_total.value += 1
            return Result(Outcome.SENT, ack)
        self.accounting.slow += 1
        return self._hold(op, err.reason)

    async def _stream_exists(self, conn: Connection, subject: str) -> bool:
        """True when a stream holds ``subject``, or when the server cannot say right now."""
        try:
            return await conn.find_stream(subject, self._request_timeout_s) is not None
        except LinkError:
            return True

    def _refresh_direct(self) -> None:
        """Recompute ``_direct``: the connection publishes go straight to, or None to hold.

        Derived from the state and the replay task, and cached because it is read on every
        publish. While a replay runs, new publishes go behind it (oldest first overall).
        Called wherever either input changes: ``_transition``, replay start and end.
        """
        replaying = self._replay_task is not None and not self._replay_task.done()
        connected = self._state is ConnectionState.CONNECTED
        self._direct = self._conn if connected and not replaying else None
        self._fast_publish = self._direct.fast_publish if self._direct else _not_connected

    def _not_sendable(self, op: PendingOp) -> Result:
        self.accounting.slow += 1
        if self._state is not ConnectionState.CONNECTED:
            # Counted, not logged per call: the rate-limited "queued" line speaks for it.
            self._t.failed(op.operation, NotConnectedError(), op.subject, log=False)
        return self._hold(op, Reason.NOT_CONNECTED)

    def _send_failed(self, op: PendingOp, err: LinkError, conn: Connection) -> Result:
        self.accounting.slow += 1
        self._t.failed(op.operation, err, op.subject)
        if err.connection_lost and conn is self._conn:
            self._on_lost(self._generation, conn, err)
        if err.retriable:
            return self._hold(op, err.reason)
        self.accounting.failed += 1
        return Result(Outcome.FAILED, reason=err.reason, error=err)

    async def _send(self, conn: Connection, op: PendingOp) -> Result:
        """Send one operation; counts its success. Raises ``LinkError`` uncounted."""
        if op.operation is Operation.PUBLISH:
            await conn.publish(op.subject, op.payload, op.headers)
            self._t.succeeded(op.operation)
            return _SENT
        started = self._clock()
        ack = await conn.publish_with_ack(
            op.subject, op.payload, op.headers, self._request_timeout_s
        )
        self._t.succeeded(op.operation, self._clock() - started)
        return Result(Outcome.SENT, pub_ack=ack)

    def _hold(self, op: PendingOp, reason: Reason) -> Result:
        """Keep an operation that could not be sent now, or refuse it (fail-open, full)."""
        if self.fail_open_active:
            self.accounting.failed_open += 1
            self._t.fail_open(op.operation, op.subject, reason)
            return Result(Outcome.FAILED_OPEN, reason=reason)
        self._expire()
        try:
            pushed = self._pending.push(op, self._wall())
        except SpoolError as exc:
            self.accounting.dropped += 1
            self._t.spool_failed("push", exc, dropped=True)
            return Result(Outcome.DROPPED, reason=Reason.SPOOL_ERROR)
        limits = self._pending.limits
        dropped = len(pushed.evicted) + (1 if pushed.admission is Admission.DROP else 0)
        if pushed.admission is not Admission.STORE:
            self._t.queue_full(
                self._pending.count, limits.max_count, limits.overflow.value, dropped
            )
        self._t.pending_gauges(self._pending.count, self._pending.size_bytes)
        self.accounting.dropped += dropped
        if pushed.admission is Admission.REJECT:
            self.accounting.rejected += 1
            return Result(Outcome.REJECTED, reason=Reason.QUEUE_FULL)
        if pushed.item is None:
            return Result(Outcome.DROPPED, reason=Reason.QUEUE_FULL)
        self._t.queued(op.operation, op.subject, self._state.value, self._pending.count)
        return Result(Outcome.QUEUED, pending_id=pushed.item.id, reason=reason)

    def _expire(self) -> None:
        timeout_ms = self._settings.nats_pending_operation_timeout_ms
        if not timeout_ms or not self._pending.count:
            return
        try:
            expired = self._pending.expire(self._wall() - timeout_ms / 1000)
        except SpoolError as exc:
            self._t.spool_failed("expire", exc)
            return
        if expired:
            self.accounting.dropped += len(expired)
            self._t.expired(len(expired))
            self._t.pending_gauges(self._pending.count, self._pending.size_bytes)

    # -- replay ------------------------------------------------------------------------------

    def _start_replay(self, conn: Connection, generation: int) -> None:
        self._expire()
        if self._pending.count:
            self._replay_task = self._own(self._replay(conn, generation), "replay")
            self._refresh_direct()

    def _maybe_replay_again(self, conn: Connection, generation: int) -> None:
        """Items a replay left behind (refused by the server) are retried now and then."""
        idle = self._replay_task is None or self._replay_task.done()
        due = self._clock() - self._last_replay >= self._settings.nats_max_reconnect_delay_ms / 1000
        if idle and due and self._pending.count:
            self._start_replay(conn, generation)

    async def _replay(self, conn: Connection, generation: int) -> None:
        """Send pending operations oldest first; an item that fails stays queued."""
        self._t.replay_started(self._pending.count)
        success = failed = 0
        cursor = 0
        windows: dict[str, float | None] = {}  # duplicate window by subject, this replay
        try:
            while generation == self._generation:
                try:
                    item = self._pending.oldest_after(cursor)
                except SpoolError as exc:
                    self._t.spool_failed("read", exc)
                    break
                if item is None:
                    break
                cursor = item.id
                if item.op.operation is Operation.PUBLISH_WITH_ACK:
                    await self._check_dedup_window(conn, item, windows)
                try:
                    await self._send(conn, item.op)
                except LinkError as err:
                    failed += 1
                    with contextlib.suppress(SpoolError):  # only the attempts column
                        self._pending.record_failure(item.id)
                    self._t.replay_item(sent=False)
                    self._t.failed(item.op.operation, err, item.op.subject)
                    if err.connection_lost:
                        self._on_lost(generation, conn, err)
                        break
                    continue
                try:
                    self._pending.remove(item.id)
                except SpoolError as exc:
                    # Sent but still in the spool: sent again later, deduplicated by its id.
                    self._t.spool_failed("remove", exc)
                self.accounting.replayed += 1
                success += 1
                self._t.replay_item(sent=True)
                if success % _REPLAY_BATCH == 0:
                    self._t.pending_gauges(self._pending.count, self._pending.size_bytes)
                    await asyncio.sleep(0)
        finally:
            self._replay_task = None
            self._refresh_direct()
            self._last_replay = self._clock()
            self._t.pending_gauges(self._pending.count, self._pending.size_bytes)
            self._t.replay_complete(success, failed, self._pending.count)

    async def _check_dedup_window(
        self, conn: Connection, item: PendingItem, windows: dict[str, float | None]
    ) -> None:
        """Say so before sending an item older than its stream's duplicate window.

        Past the window the server no longer remembers the id, so if an earlier send of this
        item was stored after all, this one is a duplicate. Looked up once per subject and
        replay; when the stream cannot be found the check is skipped.
        """
        subject = item.op.subject
        if subject not in windows:
            try:
                info = await conn.find_stream(subject, self._request_timeout_s)
            except LinkError:
                info = None
            windows[subject] = info.duplicate_window_s if info and info.duplicate_window_s else None
        window = windows[subject]
        age = self._wall() - item.enqueued_at
        if window is not None and age > window:
            msg_id = (item.op.headers or {}).get(MSG_ID, "")
            self._t.past_dedup_window(subject, msg_id, age, window)

    # -- request, ack, nak -------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int | None = None,
    ) -> InboundMessage:
        """Request-reply. Raises ``LinkError`` (``NotConnectedError`` at once when down)."""
        conn, generation = self._conn, self._generation
        if conn is None or self._state is not ConnectionState.CONNECTED:
            err = NotConnectedError()
            self._t.failed(Operation.REQUEST, err)
            if self.fail_open_active:
                self._t.fail_open(Operation.REQUEST, subject, err.reason)
            raise err
        timeout_s = (timeout_ms or self._settings.nats_request_timeout_ms) / 1000
        started = self._clock()
        try:
            reply = await conn.request(subject, payload, headers, timeout_s)
        except LinkError as err:
            self._t.failed(Operation.REQUEST, err)
            if err.connection_lost:
                self._on_lost(generation, conn, err)
            raise
        self._t.succeeded(Operation.REQUEST, self._clock() - started)
        return reply

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
        for waiting in self._fetched_after(message):
            await self._acknowledge(waiting, AckKind.IN_PROGRESS, None)
        return result

    def _fetched_after(self, message: JsMessage) -> list[JsMessage]:
        """The messages of ``message``'s batch that its consumer has not handed out yet."""
        for consumer in self._consumers:
            for index, held in enumerate(consumer.in_hand):
                if held is message:
                    return consumer.in_hand[index + 1 :]
        return []

    async def _acknowledge(self, message: JsMessage, kind: AckKind, delay_ms: int | None) -> Result:
        op = Operation.NAK if kind is AckKind.NAK else Operation.ACK
        if not message.reply:
            raise ValueError("not a JetStream message: no reply subject to acknowledge")
        conn, generation = self._conn, self._generation
        if conn is None or self._state is not ConnectionState.CONNECTED:
            err: LinkError = NotConnectedError()
            self._t.failed(op, err)
            if self.fail_open_active:
                self._t.fail_open(op, None, err.reason)
                return Result(Outcome.FAILED_OPEN, reason=err.reason)
            return Result(Outcome.FAILED, reason=err.reason, error=err)
        try:
            await conn.acknowledge(message.reply, kind, delay_ms)
        except LinkError as err:
            self._t.failed(op, err)
            if err.connection_lost:
                self._on_lost(generation, conn, err)
            return Result(Outcome.FAILED, reason=err.reason, error=err)
        self._t.succeeded(op)
        return _SENT

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
