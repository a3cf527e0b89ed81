"""The durable consumers of worker acks (``router-acks``) and results (``router-results``).

For each message (CONTRACT §2, consumer rules):

1. validate (headers win over payload fields); an invalid message is dead-lettered to
   ``<subject>.dlq`` and terminated;
2. check the tenant against ``allowed_tenants``; a refused one is dead-lettered too;
3. a duplicate (same key within ``idempotency_ttl_seconds``) is acked without side effects;
4. results only: publish the UsageEvent (``Nats-Msg-Id`` = ``usage-<key>``) and wait for its
   PubAck, then feed the provider's health (circuit breaker, estimates);
5. record the key, then ack.

A transient failure naks with ``js_nak_delay_ms``, unless this was the last delivery
allowed (its ``num_delivered`` has reached ``js_max_deliver``): then the message is
dead-lettered and counted. A dead letter is terminated only once the DLQ has stored it;
until then the message is nak'd, never lost. On the last allowed delivery the dead letter
is tried again in place, with backoff (``nats_reconnect_delay_ms`` doubling to
``nats_max_reconnect_delay_ms``) and the message kept in progress, until it is stored or
the Router stops (then it is nak'd and logged, ``ROUTER_DLQ_ABANDONED``). The server itself
does not stop delivering (the consumers' ``max_deliver`` is unlimited; the Router applies
``js_max_deliver``): a delivery past the last allowed one, which comes only after its dead
letter was abandoned, tries the dead letter again and not the effect.

While a side effect's publish (UsageEvent or dead letter) is still being retried, which the
link may do for up to ``js_publish_retry_deadline_ms``, the consumer tells the server the
message is in progress every third of ``js_ack_wait_ms``, so neither it nor the rest of its
fetched batch is redelivered meanwhile (and ends in the DLQ as ``max_deliver``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from natsrouter.config import Settings
from natsrouter.link.link import Link
from natsrouter.link.outcome import Outcome, Result
from natsrouter.link.transport import ConsumerSpec, JsMessage
from natsrouter.routing import strict_json
from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.worker_messages import (
    ExecAck,
    ExecResult,
    InvalidMessage,
    parse_exec_ack,
    parse_exec_result,
    usage_event,
)
from natsrouter.service.envelope import headers_for, new_trace_id
from natsrouter.service.events import RouterEvents
from natsrouter.service.idempotency import IdempotencyWindow

RESULTS_DURABLE = "router-results"
ACKS_DURABLE = "router-acks"
#: The only headers of a worker's message a dead letter keeps: its trace and its tenant.
#: Any other (``Nats-Expected-Stream``, ``Nats-Expected-Last-*``, ``Nats-TTL``,
#: ``Nats-Rollup``, ``Nats-Msg-Id``, ...) would steer the Router's own publish to the DLQ.
PASS_THROUGH_HEADERS = frozenset({"trace_id", "traceparent", "tracestate", "tenant_id"})


# Control characters, escaped before text (which may quote a worker's keys) becomes a header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _header_safe(text: str) -> str:
    # And lone surrogates, which no header can carry (UTF-8 cannot encode them).
    return strict_json.printable(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))


class _Message(Protocol):
    @property
    def tenant_id(self) -> str: ...
    @property
    def idempotency_key(self) -> str: ...


M = TypeVar("M", bound=_Message)
T = TypeVar("T")
# How long a nak sent while the consumer is being stopped may take.
_STOP_NAK_S = 1.0


class _Consumer(Generic[M]):
    """What both consumers share: steps 1-3, delivery counting, dead letters, naks."""

    name: str

    def __init__(
        self,
        link: Link,
        settings: Settings,
        events: RouterEvents,
        idempotency: IdempotencyWindow,
    ) -> None:
        self._link = link
        self._settings = settings
        self._events = events
        self._idempotency = idempotency

    def spec(self, stream: str, subject: str, durable: str) -> ConsumerSpec:
        return ConsumerSpec(
            stream=stream,
            durable=durable,
            filter_subject=subject,
            # Unlimited on the server: the Router dead-letters at js_max_deliver, and a dead
            # letter that fails is nak'd, which a server-side limit would make the last word.
            max_deliver=-1,
            ack_wait_ms=self._settings.js_ack_wait_ms,
        )

    async def __call__(self, msg: JsMessage) -> None:
        delivered = msg.metadata.num_delivered if msg.metadata else 1
        if delivered > 1:
            self._events.metrics.redelivery.labels(self.name).inc()
        try:
            await self.process(msg, delivered)
        except Exception as exc:  # noqa: BLE001 - a bug must not stop the consumer
            self._events.internal_error(self.name, exc, stream_seq=self._seq(msg))
            await self.retry_later(msg, delivered)

    async def process(self, msg: JsMessage, delivered: int) -> None:
        try:
            parsed = self.parse(msg)
        except InvalidMessage as err:
            await self.invalid(msg, err)
            return
        if not self.allowed(parsed.tenant_id):
            await self.refuse_tenant(msg, parsed.tenant_id)
            return
        if self._idempotency.seen(parsed.idempotency_key):
            self.duplicate()
            await self._link.ack(msg)
            return
        if delivered > self._settings.js_max_deliver:
            # The last allowed delivery failed and so did its dead letter: only that is retried.
            limit = self._settings.js_max_deliver
            await self.dead_letter(msg, "max_deliver", f"failed on delivery {limit}")
            return
        await self.apply(msg, parsed, delivered)

    def parse(self, msg: JsMessage) -> M:
        raise NotImplementedError

    def duplicate(self) -> None:
        raise NotImplementedError

    async def apply(self, msg: JsMessage, parsed: M, delivered: int) -> None:
        """Steps 4-5: the message's effects, then the key and the ack."""
        raise NotImplementedError

    def allowed(self, tenant_id: str) -> bool:
        allowed = self._settings.allowed_tenants
        return not allowed or tenant_id in allowed

    @staticmethod
    def _seq(msg: JsMessage) -> int | None:
        return msg.metadata.stream_seq if msg.metadata else None

    async def publish_held(self, msg: JsMessage, publish: Awaitable[T]) -> T:
        """Await a side effect's publish, keeping ``msg`` (and its batch) in progress meanwhile.

        Every third of the ack wait, not every half: after one held message another may be
        held, and the batch behind them must still hear from us within one ack wait.
        """
        task = asyncio.ensure_future(publish)
        interval_s = self._settings.js_ack_wait_ms / 3000
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=interval_s)
                if done:
                    return task.result()
                await self._link.in_progress(msg)
        finally:
            if not task.done():  # cancelled (a stop): the publish goes with the handler
                task.cancel()

    async def invalid(self, msg: JsMessage, err: InvalidMessage) -> None:
        self._events.invalid(self.name, err.field, err.message, self._seq(msg))
        await self.dead_letter(msg, "invalid", f"{err.field}: {err.message}")

    async def refuse_tenant(self, msg: JsMessage, tenant_id: str) -> None:
        self._events.tenant_rejected(self.name, tenant_id)
        await self.dead_letter(msg, "unauthorized", f"tenant {tenant_id!r} is not allowed")

    async def dead_letter(self, msg: JsMessage, reason: str, error: str) -> None:
        """Store the message on ``<subject>.dlq``, then terminate it; nak if not stored."""
        subject = f"{msg.subject}.dlq"
        headers = {k: v for k, v in (msg.headers or {}).items() if k in PASS_THROUGH_HEADERS}
        meta = msg.metadata
        headers.update(
            {
                "version": "1",
                # One dead letter per stored message, however often this runs.
                "Nats-Msg-Id": f"dlq-{meta.stream}-{meta.stream_seq}" if meta else new_trace_id(),
                "dlq_reason": reason,
                "dlq_error": _header_safe(error)[:512],
                "dlq_original_subject": msg.subject,
                "dlq_num_delivered": str(meta.num_delivered if meta else 1),
            }
        )
        delivered = meta.num_delivered if meta else 1
        if delivered >= self._settings.js_max_deliver:
            stored = await self._dead_letter_last(
                msg, reason, lambda: self._link.publish_with_ack(subject, msg.data, headers)
            )
            if not stored:
                return
        else:
            result = await self.publish_held(
                msg, self._link.publish_with_ack(subject, msg.data, headers)
            )
            if result.outcome is not Outcome.SENT:
                self._events.dead_letter_failed(self.name, reason, result.outcome.value)
                await self._link.nak(msg, self._settings.js_nak_delay_ms)
                return
        self._events.dead_lettered(self.name, reason, subject, self._seq(msg))
        await self._link.term(msg)

    async def _dead_letter_last(
        self, msg: JsMessage, reason: str, publish: Callable[[], Awaitable[Result]]
    ) -> bool:
        """The dead letter of a last delivery: tried until stored (True) or stopped.

        The server will not deliver the message again, so a nak would leave it unprocessed
        for good: the publish is retried with backoff, the message kept in progress, each
        failure counted. A publish the link queued is not sent again while it is queued (no
        copies pile up in the queue): once it has left the queue (replayed, or dropped), it
        is sent again with its ``Nats-Msg-Id``, and the server's PubAck (a duplicate when the
        replay stored it) ends the wait. Cancelled (the Router stops), the message is nak'd
        and logged.
        """
        settings = self._settings
        first_pause_s = settings.nats_reconnect_delay_ms / 1000
        max_pause_s = settings.nats_max_reconnect_delay_ms / 1000
        attempt = 0
        try:
            while True:
                attempt += 1
                result = await self.publish_held(msg, publish())
                if result.outcome is Outcome.SENT:
                    return True
                self._events.dead_letter_failed(
                    self.name, reason, result.outcome.value, last_delivery=True, attempt=attempt
                )
                pause_s = first_pause_s
                while True:
                    await self.publish_held(msg, asyncio.sleep(pause_s))
                    pause_s = min(pause_s * 2, max_pause_s)
                    if result.pending_id is None or not self._still_queued(result.pending_id):
                        break
                first_pause_s = min(first_pause_s * 2, max_pause_s)
        except asyncio.CancelledError:
            self._events.dead_letter_abandoned(self.name, reason, attempt, self._seq(msg))
            with contextlib.suppress(Exception, TimeoutError):
                await asyncio.wait_for(self._link.nak(msg, settings.js_nak_delay_ms), _STOP_NAK_S)
            raise

    def _still_queued(self, pending_id: int) -> bool:
        """True while the link's pending queue holds the item ``pending_id``."""
        item = self._link.pending.oldest_after(pending_id - 1)  # ids only grow
        return item is not None and item.id == pending_id

    async def retry_later(self, msg: JsMessage, delivered: int) -> None:
        if delivered >= self._settings.js_max_deliver:
            self._events.maxdeliver_exhausted(self.name, delivered)
            await self.dead_letter(msg, "max_deliver", f"failed on delivery {delivered}")
            return
        await self._link.nak(msg, self._settings.js_nak_delay_ms)


class AcksConsumer(_Consumer[ExecAck]):
    """ExecAssignmentAcks: counted by status; no other side effect."""

    name = "acks"

    def parse(self, msg: JsMessage) -> ExecAck:
        return parse_exec_ack(msg.data, msg.headers, self._settings.nats_max_payload_size)

    def duplicate(self) -> None:
        self._events.metrics.acks_duplicate.inc()

    async def apply(self, msg: JsMessage, parsed: ExecAck, delivered: int) -> None:
        self._idempotency.record(parsed.idempotency_key)
        self._events.metrics.acks.labels(parsed.status).inc()
        await self._link.ack(msg)


class ResultsConsumer(_Consumer[ExecResult]):
    """ExecResults: a confirmed UsageEvent and provider health, then the ack."""

    name = "results"

    def __init__(
        self,
        link: Link,
        settings: Settings,
        events: RouterEvents,
        idempotency: IdempotencyWindow,
        health: ProviderHealth,
    ) -> None:
        super().__init__(link, settings, events, idempotency)
        self._health = health

    def parse(self, msg: JsMessage) -> ExecResult:
        return parse_exec_result(msg.data, msg.headers, self._settings.nats_max_payload_size)

    def duplicate(self) -> None:
        self._events.metrics.results_duplicate.inc()

    async def apply(self, msg: JsMessage, result: ExecResult, delivered: int) -> None:
        trace_id = result.trace_id or new_trace_id()
        published = await self.publish_held(
            msg,
            self._link.publish_with_ack(
                self._settings.usage_subject,
                strict_json.dumps(usage_event(result)),
                headers_for(trace_id, result.tenant_id, msg_id=result.usage_msg_id),
            ),
        )
        if published.outcome is not Outcome.SENT or published.pub_ack is None:
            # Queued counts as not confirmed: the replay stores it under the same id, and the
            # redelivered result then finds it a duplicate.
            reason = published.reason.value if published.reason else None
            self._events.usage_failed(published.outcome.value, reason)
            await self.retry_later(msg, delivered)
            return
        self._events.metrics.usage_emitted.inc()
        if published.pub_ack.duplicate:
            # Stored before, by an earlier delivery or another Router process: no new effect.
            self.duplicate()
        else:
            self._events.metrics.results.labels(result.status).inc()
            if result.status != "cancelled":
                success = result.status == "success"
                self._health.record(result.provider_id, success, result.latency_ms, result.cost)
        if result.assignment_id:  # answered: no longer busy (least_busy)
            self._health.in_flight.finished(result.assignment_id)
        self._idempotency.record(result.idempotency_key)
        await self._link.ack(msg)
