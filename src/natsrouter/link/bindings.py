"""Subscriptions and pull consumers, kept bound across reconnects.

A ``Subscription`` (core) or ``Consumer`` (JetStream durable pull consumer) is registered
once and stays registered until cancelled; it is bound again on every new connection,
including handles asked for while disconnected. Subscriptions are bound before the
connection counts as connected (``bind_all``); one the server refuses is tried again with
backoff while that connection lasts (``_retry_refused``), not only on the next reconnect.
Each consumer runs its own task that waits for a connection, binds, fetches and hands
messages to its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from natsrouter.errors import LinkError
from natsrouter.link.connection import ConnectionSupervisor
from natsrouter.link.outcome import Operation
from natsrouter.link.subscriptions import Consumer, JsHandler, Subscription
from natsrouter.link.tasks import TaskOwner, cancel_and_wait
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import (
    Connection,
    ConsumerSpec,
    DirectHandler,
    JsMessage,
    MessageHandler,
    PullConsumer,
)


class Bindings:
    """The link's subscriptions and consumers, bound to whatever connection is current."""

    def __init__(
        self,
        session: ConnectionSupervisor,
        telemetry: LinkTelemetry,
        tasks: TaskOwner,
        rng: random.Random,
    ) -> None:
        self._session = session
        self._t = telemetry
        self._tasks = tasks
        self._rng = rng
        self.subscriptions: list[Subscription] = []
        self.consumers: list[Consumer] = []
        self._retrying: asyncio.Task[None] | None = None

    def status(self) -> dict[str, int]:
        """The ``/status`` counts: handles registered and not cancelled."""
        return {
            "subscriptions": sum(1 for s in self.subscriptions if not s.cancelled),
            "consumers": sum(1 for c in self.consumers if not c.cancelled),
        }

    # -- core subscriptions ------------------------------------------------------------------

    async def subscribe(
        self,
        subject: str,
        handler: MessageHandler | DirectHandler,
        queue: str | None = None,
        *,
        direct: bool = False,
    ) -> Subscription:
        """Subscribe now if connected, and again after every reconnect until cancelled.

        While connected, a failure raises the typed error and nothing is registered. While not
        connected, the subscription is registered and bound on the next connection. With
        ``direct``, ``handler`` is a plain function (``Connection.subscribe``).
        """
        sub = Subscription(subject, queue, handler, direct)
        live = self._session.live()
        if live is not None:
            await self._bind(*live, sub)  # raises on failure
        self.subscriptions.append(sub)
        return sub

    async def unsubscribe(self, sub: Subscription, *, drain: bool = False) -> None:
        """Stop the subscription; with ``drain``, messages already received are delivered."""
        sub.cancelled = True
        with contextlib.suppress(ValueError):
            self.subscriptions.remove(sub)
        if sub.native is not None and sub.bound_generation == self._session.generation:
            with contextlib.suppress(LinkError):
                await (sub.native.drain() if drain else sub.native.unsubscribe())
        sub.native = None

    async def _bind(self, conn: Connection, generation: int, sub: Subscription) -> None:
        def failed(exc: Exception) -> None:
            # A handler bug must not kill the subscription: logged, and delivery goes on.
            self._t.handler_failed(sub.subject, exc)

        try:
            # The handler itself, not a wrapper of ours: the connection catches its failures
            # in the one coroutine it runs per message (Connection.subscribe).
            sub.native = await conn.subscribe(
                sub.subject, sub.queue, sub.handler, failed, direct=sub.direct
            )
        except LinkError as err:
            self._t.failed(Operation.SUBSCRIBE, err, sub.subject)
            raise
        sub.bound_generation = generation
        sub.error = None
        self._t.succeeded(Operation.SUBSCRIBE)
        self._t.handler_bound(sub.subject)

    async def bind_all(self, conn: Connection, generation: int) -> None:
        """Bind every registered subscription to a new connection before calling it connected.

        A failure that can pass (connection, timeout) fails the whole attempt, so the link
        never reports ``connected`` with a subscription missing; a refusal from the server is
        recorded on the handle and logged, and the others are bound.
        """
        # Walk snapshots, not indexes: an unsubscribe during a bind removes an entry and would
        # shift the next one past the index; handles added meanwhile are bound too.
        tried: list[Subscription] = []
        while pending := [s for s in self.subscriptions if not any(s is t for t in tried)]:
            for sub in pending:
                tried.append(sub)
                if sub.cancelled:
                    continue
                try:
                    await self._bind(conn, generation, sub)
                except LinkError as err:
                    if err.retriable:
                        raise
                    sub.error = str(err)
                    continue
                if sub.cancelled and sub.native is not None:
                    # Unsubscribed while this bind was under way: undo it.
                    with contextlib.suppress(LinkError):
                        await sub.native.unsubscribe()
                    sub.native = None
        if any(sub.error is not None for sub in self.subscriptions):
            if self._retrying is not None:
                self._retrying.cancel()  # bound to an older connection
            self._retrying = self._tasks.own(
                self._retry_refused(conn, generation), "subscription-retry"
            )

    async def _retry_refused(self, conn: Connection, generation: int) -> None:
        """Bind the refused subscriptions again, with backoff, while ``generation`` lasts.

        A refusal (a permission the server gains, a subject limit lifted) can pass without a
        reconnect; each try is counted and logged like the first (``NATS_SUBSCRIBE_ERROR``).
        """
        session = self._session
        retry = 0
        while True:
            await asyncio.sleep(self._pause_s(retry))
            retry += 1
            if session.closed or generation != session.generation:
                return
            refused = [
                sub
                for sub in self.subscriptions
                if sub.error is not None and sub.bound_generation != generation
            ]
            if not refused:
                return
            for sub in refused:
                try:
                    await self._bind(conn, generation, sub)
                except LinkError as err:
                    if err.connection_lost:
                        session.on_lost(generation, conn, err)
                        return
                    sub.error = str(err)
                    continue
                if sub.cancelled and sub.native is not None:
                    # Unsubscribed while this bind was under way: undo it.
                    with contextlib.suppress(LinkError):
                        await sub.native.unsubscribe()
                    sub.native = None

    # -- pull consumers ----------------------------------------------------------------------

    def fetched_after(self, message: JsMessage) -> list[JsMessage]:
        """The messages of ``message``'s batch that its consumer has not handed out yet."""
        for consumer in self.consumers:
            for index, held in enumerate(consumer.in_hand):
                if held is message:
                    return consumer.in_hand[index + 1 :]
        return []

    def consume(
        self, spec: ConsumerSpec, handler: JsHandler, batch: int, fetch_timeout_s: float
    ) -> Consumer:
        consumer = Consumer(spec, handler, batch, fetch_timeout_s)
        consumer.task = self._tasks.own(self._consume(consumer), f"consumer:{spec.durable}")
        self.consumers.append(consumer)
        return consumer

    async def stop_consumer(self, consumer: Consumer, grace_s: float = 0.0) -> None:
        consumer.stopping = True
        if consumer.task is not None:
            if grace_s > 0 and consumer.busy:  # an idle consumer is only waiting to fetch
                await asyncio.wait({consumer.task}, timeout=grace_s)
            await cancel_and_wait([consumer.task])
        with contextlib.suppress(ValueError):
            self.consumers.remove(consumer)

    async def close(self) -> None:
        tasks = [c.task for c in self.consumers if c.task]
        if self._retrying is not None:
            tasks.append(self._retrying)
        await cancel_and_wait(tasks)

    def _pause_s(self, retry: int) -> float:
        return self._session.backoff.delay_ms(retry, self._rng) / 1000

    async def _consume(self, consumer: Consumer) -> None:
        retry = 0
        session = self._session
        while not (session.closed or consumer.stopping):
            await session.connected.wait()
            conn, generation = session.conn, session.generation
            if conn is None:
                continue
            try:
                puller = await conn.pull_subscribe(consumer.spec)
            except LinkError as err:
                self._t.failed(Operation.SUBSCRIBE, err, consumer.spec.filter_subject)
                if err.connection_lost:
                    session.on_lost(generation, conn, err)
                await asyncio.sleep(self._pause_s(retry))
                retry += 1
                continue
            retry = 0
            consumer.bound_generation = generation
            self._t.succeeded(Operation.SUBSCRIBE)
            self._t.handler_bound(consumer.spec.filter_subject)
            try:
                await self._pull(consumer, conn, generation, puller)
            finally:
                await puller.stop()

    async def _pull(
        self, consumer: Consumer, conn: Connection, generation: int, puller: PullConsumer
    ) -> None:
        """Fetch and hand out messages until the connection changes or fetching fails."""
        session = self._session
        while generation == session.generation and not consumer.stopping:
            try:
                messages = await puller.fetch(consumer.batch, consumer.fetch_timeout_s)
            except LinkError as err:
                if err.connection_lost:
                    session.on_lost(generation, conn, err)
                    return
                # e.g. the consumer was deleted: bind again after a pause
                self._t.failed(Operation.SUBSCRIBE, err, consumer.spec.filter_subject)
                await asyncio.sleep(self._pause_s(0))
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
                        self._t.handler_failed(consumer.spec.filter_subject, exc)
            finally:
                consumer.busy = False
                consumer.in_hand = []
