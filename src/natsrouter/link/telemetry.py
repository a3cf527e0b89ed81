"""What the link reports: each event of CONTRACT §4 as one log line plus its metrics.

The link decides; this module says. Keeping every ``error_code`` in one place makes the
contract easy to check against (tests/unit/test_contract_names.py reads the codes here).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from natsrouter.errors import LinkError, Reason
from natsrouter.link.outcome import Operation
from natsrouter.observability.logging import get_logger
from natsrouter.observability.metrics import LinkMetrics

# A burst of "queued" (or "fail-open") lines is logged once, then at most once per window.
BURST_WINDOW_S = 5.0

_ERROR_CODES = {
    Operation.PUBLISH: "NATS_PUBLISH_ERROR",
    Operation.PUBLISH_WITH_ACK: "NATS_PUBLISH_WITH_ACK_ERROR",
    Operation.ACK: "NATS_ACK_ERROR",
    Operation.NAK: "NATS_NAK_ERROR",
    Operation.SUBSCRIBE: "NATS_SUBSCRIBE_ERROR",
}
_QUEUED_CODES = {
    Operation.PUBLISH: "NATS_PUBLISH_QUEUED",
    Operation.PUBLISH_WITH_ACK: "NATS_PUBLISH_WITH_ACK_QUEUED",
}


@dataclass
class _Burst:
    """Rate limit for one kind of repeated line."""

    last_logged: float = -1e18
    suppressed: int = 0

    def allow(self, now: float) -> int | None:
        """The number of lines suppressed since the last one, or None to stay silent."""
        if now - self.last_logged < BURST_WINDOW_S:
            self.suppressed += 1
            return None
        suppressed, self.suppressed, self.last_logged = self.suppressed, 0, now
        return suppressed


@dataclass
class LinkTelemetry:
    metrics: LinkMetrics
    clock: Any = time.monotonic
    log: Any = field(default_factory=lambda: get_logger("natsrouter.link"))
    _bursts: dict[str, _Burst] = field(default_factory=dict)

    def _burst(self, key: str) -> int | None:
        return self._bursts.setdefault(key, _Burst()).allow(self.clock())

    def end_bursts(self) -> None:
        """A new connection starts new bursts: the next queued line is logged at once."""
        self._bursts.clear()

    # -- connection ------------------------------------------------------------------------

    def established(self, server: str) -> None:
        self.metrics.connection_established.inc()
        self.log.info("connected to NATS", error_code="NATS_CONNECTION_ESTABLISHED", server=server)

    def connect_failed(self, err: LinkError, server: str, attempt: int) -> None:
        self.metrics.connection_failures.labels(err.reason.value).inc()
        self.log.warning(
            "connection attempt failed",
            error_code="NATS_CONNECTION_FAILED",
            reason=err.reason.value,
            server=server,
            attempt=attempt,
            error=str(err),
        )

    def lost(self, err: LinkError, max_attempts: int) -> None:
        self.metrics.connection_lost.inc()
        self.log.error(
            "connection to NATS lost",
            error_code="NATS_CONNECTION_LOST",
            error_tag="nats_connection_failure",
            reason=err.reason.value,
            reconnect_attempts=max_attempts,
            error=str(err),
        )

    def reconnect_attempt(self, attempt: int, max_attempts: int, delay_ms: float) -> None:
        self.metrics.reconnect_attempts.inc()
        self.log.info(
            "reconnecting to NATS",
            error_code="NATS_RECONNECT_ATTEMPT",
            error_tag="nats_reconnecting",
            attempt=attempt,
            max_attempts=max_attempts,
            delay_ms=round(delay_ms),
        )

    def reconnect_failed(self, err: LinkError, attempt: int) -> None:
        self.metrics.reconnect_failures.labels(err.reason.value).inc()
        self.log.warning(
            "reconnection attempt failed",
            error_code="NATS_RECONNECT_FAILED",
            attempt=attempt,
            reason=err.reason.value,
        )

    def restored(self, attempts: int, outage_s: float) -> None:
        self.metrics.connection_restored.inc()
        self.metrics.outage_duration.observe(outage_s)
        self.log.info(
            "connection to NATS restored",
            error_code="NATS_CONNECTION_RESTORED",
            error_tag="nats_connection_recovered",
            reconnect_attempts=attempts,
            outage_ms=round(outage_s * 1000),
        )

    def exhausted(self, max_attempts: int, policy: str) -> None:
        self.metrics.reconnection_exhausted.inc()
        self.log.error(
            "reconnection attempts exhausted",
            error_code="NATS_RECONNECTION_EXHAUSTED",
            max_attempts=max_attempts,
            policy=policy,
        )

    # -- operations ------------------------------------------------------------------------

    def succeeded(self, op: Operation, duration_s: float | None = None) -> None:
        """Count a success; ``duration_s`` only for operations that wait on the server."""
        self.metrics.operation_total[op].value += 1
        if duration_s is not None:
            self.metrics.duration_of[op].observe(duration_s)

    def failed(
        self, op: Operation, err: LinkError, subject: str | None = None, *, log: bool = True
    ) -> None:
        self.metrics.operation_failures[op].labels(err.reason.value).inc()
        code = _ERROR_CODES.get(op)
        if not log:
            return
        if code is None:  # request, kv_*: counted; the caller gets the typed error
            self.log.debug(f"{op.value} failed", reason=err.reason.value, error=str(err))
            return
        fields: dict[str, Any] = {"reason": err.reason.value, "error": str(err)}
        if subject is not None:
            fields["subject"] = subject
        if op is Operation.SUBSCRIBE:
            self.log.error("subscribe failed", error_code=code, **fields)
        else:
            self.log.warning(f"{op.value} failed", error_code=code, **fields)

    def queued(self, op: Operation, subject: str, state: str, queue_size: int) -> None:
        suppressed = self._burst(f"queued:{op.value}")
        if suppressed is not None:
            self.log.warning(
                "operation queued until NATS is back",
                error_code=_QUEUED_CODES[op],
                subject=subject,
                connection_state=state,
                queue_size=queue_size,
                suppressed=suppressed,
            )

    def fail_open(self, op: Operation, subject: str | None, reason: Reason) -> None:
        self.metrics.fail_open.labels(op.value).inc()
        suppressed = self._burst(f"fail_open:{op.value}")
        if suppressed is not None:
            self.log.warning(
                "operation not sent: fail-open mode",
                error_code="NATS_PUBLISH_FAIL_OPEN",
                subject=subject,
                operation=op.value,
                reason=reason.value,
                suppressed=suppressed,
            )

    def pending_failed(self, subject: str, err: LinkError, attempts: int) -> None:
        """A queued item ended ``failed`` (poison): counted each, logged once per burst."""
        self.metrics.pending_failed.labels(err.reason.value).inc()
        suppressed = self._burst("pending_failed")
        if suppressed is not None:
            self.log.error(
                "queued operation refused for good: removed as failed",
                error_code="NATS_PENDING_FAILED",
                subject=subject,
                reason=err.reason.value,
                attempts=attempts,
                error=str(err),
                suppressed=suppressed,
            )

    def reply_dropped(self, subject: str, err: LinkError) -> None:
        self.metrics.replies_dropped.labels(err.reason.value).inc()
        suppressed = self._burst("reply_dropped")
        if suppressed is not None:
            self.log.warning(
                "reply not sent: replies are never queued",
                error_code="NATS_REPLY_DROPPED",
                subject=subject,
                reason=err.reason.value,
                suppressed=suppressed,
            )

    def queue_full(
        self, queue_size: int, max_size: int, policy: str, dropped: int, *, rejected: bool
    ) -> None:
        if dropped:
            self.metrics.pending_dropped.labels(Reason.QUEUE_FULL.value).inc(dropped)
        if rejected:
            self.metrics.pending_rejected.inc()
        suppressed = self._burst("queue_full")
        if suppressed is not None:
            self.log.warning(
                "pending queue full",
                error_code="NATS_QUEUE_FULL",
                queue_size=queue_size,
                max_size=max_size,
                policy=policy,
                suppressed=suppressed,
            )

    def dropped_in_flight(self, reason: Reason) -> None:
        """An item dropped while it was being sent, whose send then failed: dropped now."""
        self.metrics.pending_dropped.labels(reason.value).inc()

    def expired(self, count: int) -> None:
        self.metrics.pending_dropped.labels(Reason.EXPIRED.value).inc(count)
        self.log.warning("pending operations expired", error_code="NATS_QUEUE_EXPIRED", count=count)

    def pending_gauges(self, count: int, size_bytes: int) -> None:
        self.metrics.pending_count.set(count)
        self.metrics.pending_operations.set(count)
        self.metrics.pending_bytes.set(size_bytes)

    def replay_started(self, pending_count: int) -> None:
        self.log.info(
            "replaying pending operations",
            error_code="NATS_RETRY_PENDING",
            pending_count=pending_count,
        )

    def replay_item(self, sent: bool) -> None:
        self.metrics.pending_retry.inc()
        if sent:
            self.metrics.pending_retry_success.inc()
        else:
            self.metrics.pending_retry_failed.inc()

    def replay_complete(self, success: int, failed: int, remaining: int) -> None:
        self.log.info(
            "replay finished",
            error_code="NATS_RETRY_COMPLETE",
            success_count=success,
            failed_count=failed,
            remaining=remaining,
        )

    def publish_retry(self, err: LinkError, subject: str, attempt: int) -> None:
        """An ambiguous JetStream publish is sent again with its Nats-Msg-Id (counted, debug)."""
        self.metrics.publish_retries.inc()
        self.log.debug(
            "retrying publish_with_ack with the same Nats-Msg-Id",
            subject=subject,
            attempt=attempt,
            reason=err.reason.value,
        )

    def past_dedup_window(self, subject: str, msg_id: str, age_s: float, window_s: float) -> None:
        self.metrics.past_dedup_window.inc()
        self.log.warning(
            "replaying a publish older than its stream's duplicate window",
            error_code="NATS_REPLAY_PAST_DEDUP_WINDOW",
            subject=subject,
            msg_id=msg_id,
            age_ms=round(age_s * 1000),
            window_ms=round(window_s * 1000),
        )

    def spool_recovered(self, path: str, count: int, size_bytes: int) -> None:
        self.log.info(
            "pending operations recovered from the spool",
            error_code="NATS_SPOOL_RECOVERED",
            path=path,
            count=count,
            bytes=size_bytes,
        )

    def spool_failed(self, action: str, err: Exception, *, dropped: bool = False) -> None:
        if dropped:
            self.metrics.pending_dropped.labels(Reason.SPOOL_ERROR.value).inc()
        self.log.error(
            "pending spool failed",
            error_code="NATS_SPOOL_ERROR",
            action=action,
            dropped=dropped,
            error=str(err),
        )

    def fault_injected(self, operation: str, fault: str) -> None:
        self.log.warning(
            "fault injected", error_code="NATS_FAULT_INJECTED", operation=operation, fault=fault
        )

    def stream_created(self, name: str, subjects: tuple[str, ...]) -> None:
        self.log.info("stream created", stream=name, subjects=list(subjects))

    def stream_failed(self, name: str, err: LinkError) -> None:
        self.log.error(
            "stream could not be checked or created",
            error_code="NATS_STREAM_ERROR",
            stream=name,
            reason=err.reason.value,
            error=str(err),
        )

    def slow_consumer(self, subject: str) -> None:
        """nats-py dropped an inbound message (a full subscription buffer)."""
        self.metrics.slow_consumer_drops.inc()
        suppressed = self._burst("slow_consumer")
        if suppressed is not None:
            self.log.warning(
                "message dropped: subscription buffer full (slow consumer)",
                error_code="NATS_SLOW_CONSUMER",
                subject=subject,
                suppressed=suppressed,
            )

    def unreadable_message(self, subject: str) -> None:
        """nats-py could not read an inbound message (bytes that are not UTF-8, a header block
        it cannot parse): dropped."""
        self.metrics.unreadable_messages.inc()
        suppressed = self._burst("unreadable_message")
        if suppressed is not None:
            self.log.warning(
                "message dropped: not readable (a subject, reply subject or header status "
                "line that is not UTF-8, or a header block nats-py cannot parse)",
                error_code="NATS_MESSAGE_UNREADABLE",
                subject=subject,
                suppressed=suppressed,
            )

    def handler_bound(self, subject: str) -> None:
        """A subscription or consumer is bound: its failure count is exposed from 0, so that
        a rate over it (the dashboard, an alert) has a series before the first failure."""
        self.metrics.handler_failures.labels(subject)

    def handler_failed(self, subject: str, exc: BaseException) -> None:
        """A message handler raised (a bug in it): counted per subscription, and logged with
        its traceback at most once per window, so a handler failing on every message does not
        flood the log. ``subject`` is the subscription's subject or the consumer's filter (a
        handful per process), never a message's own."""
        self.metrics.handler_failures.labels(subject).inc()
        suppressed = self._burst(f"handler_failed:{subject}")
        if suppressed is not None:
            self.log.error(
                "message handler raised",
                error_code="NATS_HANDLER_FAILED",
                subject=subject,
                error=exc,
                suppressed=suppressed,
                exc_info=exc,
            )
