"""What the Router reports: each of its events as one log line (with a stable code) and metrics.

The Router decides; this module says. Every ``ROUTER_*`` error code lives here (but the
embedded server's, in ``embedded.py``), so docs/logging.md can be checked against it
(tests/unit/test_docs_match_code.py).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from natsrouter.observability.logging import RateLimit, get_logger
from natsrouter.observability.metrics import DECIDE_OUTCOMES, DECIDE_TRANSPORTS, RouterMetrics
from natsrouter.routing.breaker import BreakerState

# At most one line per interval for events a flood repeats (overload, unsent answers).
RATE_LIMIT_INTERVAL_S = 10.0


#: The most characters of text a worker or client chose that one log line carries.
LOGGED_TEXT_MAX = 512


def _lengths(**texts: str) -> dict[str, int]:
    """``<name>_length`` for each text cut to LOGGED_TEXT_MAX, so a reader knows it was cut."""
    return {
        f"{name}_length": len(text) for name, text in texts.items() if len(text) > LOGGED_TEXT_MAX
    }


class RouterEvents:
    def __init__(
        self, metrics: RouterMetrics, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self._clock = clock
        self.log = get_logger("natsrouter.router")
        self._breaker_states: dict[str, BreakerState] = {}
        # Resolved once: labels() costs a lock and a dict lookup per request.
        self._decide = {o: metrics.decide.labels(o) for o in DECIDE_OUTCOMES}
        self._decide_duration = {t: metrics.decide_duration.labels(t) for t in DECIDE_TRANSPORTS}
        self._assignments: dict[str, Any] = {}
        # Called with (outcome, transport, seconds) for every decide: the $SRV.STATS counts.
        self.decide_observers: list[Callable[[str, str, float], None]] = []
        # Lines that a flood would repeat are logged at most once per interval, each kind on
        # its own clock: by ROUTER_* code (over rate limit, overloaded, answer not sent), by
        # refusal code and by assignment outcome (closed sets: any client can send refused
        # requests in a loop).
        self._flood_limits: dict[str, RateLimit] = {}
        self._refused_limits: dict[str, RateLimit] = {}
        self._not_sent_limits: dict[str, RateLimit] = {}

    # -- decide ----------------------------------------------------------------------------

    def decided(self, outcome: str, transport: str, duration_s: float) -> None:
        # FastCounter.inc and FastHistogramChild.observe written out: once per decide.
        self._decide[outcome].value += 1
        duration = self._decide_duration[transport]
        duration.counts[bisect_left(duration.bounds, duration_s)] += 1
        duration.sum += duration_s
        for observe in self.decide_observers:
            observe(outcome, transport, duration_s)

    def decide_refused(self, code: str, message: str, transport: str, **fields: Any) -> None:
        if code == "rate_limit_exceeded":
            # Counted here, where the refusal is answered: a decide refused a token that
            # repeats a request answered elsewhere gets that answer, and is no refusal.
            tenant_id, policy_id = fields.get("tenant_id"), fields.get("policy_id")
            self.metrics.rate_limited.labels(tenant_id, policy_id).inc()
            # A client over its limit must not flood the log.
            self._log_rate_limited(transport, fields)
            return
        # Any other code: one line per code per interval, the line says how many of that
        # code were left out. Every refusal is still counted, per request, in
        # router_decide_total{outcome}.
        suppressed = self._allow(self._refused_limits, code)
        if suppressed is None:
            return
        self.log.warning(
            "decide request refused",
            error_code="ROUTER_DECIDE_REFUSED",
            code=code,
            error=message,
            transport=transport,
            suppressed=suppressed,
            **fields,
        )

    def _allow(self, limits: dict[str, RateLimit], key: str) -> int | None:
        """``key``'s line per interval: None to leave it out, else how many were left out.

        The one helper for every rate-limited line, on the injected clock."""
        limit = limits.get(key)
        if limit is None:
            limit = limits[key] = RateLimit(RATE_LIMIT_INTERVAL_S, self._clock)
        return limit.allow()

    def _log_rate_limited(self, transport: str, fields: dict[str, Any]) -> None:
        """The first refusal, then at most one line per interval with the count."""
        suppressed = self._allow(self._flood_limits, "ROUTER_DECIDE_RATE_LIMITED")
        if suppressed is None:
            return
        self.log.warning(
            "decide requests refused: over the policy's rate limit",
            error_code="ROUTER_DECIDE_RATE_LIMITED",
            transport=transport,
            tenant_id=fields.get("tenant_id"),
            policy_id=fields.get("policy_id"),
            requests_per_second=fields.get("requests_per_second"),
            refused=suppressed + 1,  # this one and those left out since the last line
        )

    def decide_overloaded(self, transport: str, limit: int) -> None:
        """Log the first refusal, then at most one line per interval with the count."""
        suppressed = self._allow(self._flood_limits, "ROUTER_DECIDE_OVERLOADED")
        if suppressed is None:
            return
        self.log.warning(
            "decide requests refused: too many in flight",
            error_code="ROUTER_DECIDE_OVERLOADED",
            transport=transport,
            limit=limit,
            refused=suppressed + 1,
        )

    def reply_failed(self, outcome: str, reason: str | None) -> None:
        if self._allow(self._flood_limits, "ROUTER_DECIDE_REPLY_FAILED") is None:
            return
        self.log.warning(
            "decide answer not sent",
            error_code="ROUTER_DECIDE_REPLY_FAILED",
            outcome=outcome,
            reason=reason,
        )

    def decide_replayed(self) -> None:
        self.metrics.decide_replayed.inc()

    def assignment_subject_refused(self, reason: str) -> None:
        self.metrics.assignment_subject_refused.labels(reason).inc()

    def internal_error(self, where: str, exc: BaseException, **fields: Any) -> None:
        self.log.error(
            "unexpected error; the process keeps serving",
            error_code="ROUTER_INTERNAL_ERROR",
            where=where,
            error=repr(exc),
            exc_info=exc,
            **fields,
        )

    def assignment(self, outcome: str, reason: str | None, subject: str) -> None:
        counter = self._assignments.get(outcome)
        if counter is None:
            counter = self._assignments[outcome] = self.metrics.assignments.labels(outcome)
        counter.inc()
        if outcome in ("sent", "queued"):
            return
        # In fail-open during an outage every decide ends here: one line per outcome per
        # interval, saying how many were left out (each is counted above).
        suppressed = self._allow(self._not_sent_limits, outcome)
        if suppressed is None:
            return
        self.log.warning(
            "assignment not sent nor kept",
            error_code="ROUTER_ASSIGNMENT_NOT_SENT",
            outcome=outcome,
            reason=reason,
            subject=subject,
            suppressed=suppressed,
        )

    # -- consumers -------------------------------------------------------------------------

    def invalid(self, consumer: str, field: str, error: str, stream_seq: int | None) -> None:
        self.metrics.messages_invalid.labels(consumer).inc()
        # Both may quote a worker's keys or values: a line stays short whatever a worker sends.
        self.log.warning(
            "invalid message",
            error_code="ROUTER_MESSAGE_INVALID",
            consumer=consumer,
            field=field[:LOGGED_TEXT_MAX],
            error=error[:LOGGED_TEXT_MAX],
            stream_seq=stream_seq,
            **_lengths(field=field, error=error),
        )

    def tenant_rejected(self, consumer: str, tenant_id: str) -> None:
        self.metrics.tenant_rejected.labels(consumer).inc()
        self.log.warning(
            "tenant not allowed",
            error_code="ROUTER_TENANT_REJECTED",
            consumer=consumer,
            tenant_id=tenant_id,
        )

    def dead_lettered(
        self, consumer: str, reason: str, subject: str, stream_seq: int | None
    ) -> None:
        self.metrics.dlq.labels(consumer, reason).inc()
        self.log.warning(
            "message dead-lettered",
            error_code="ROUTER_DEAD_LETTERED",
            consumer=consumer,
            reason=reason,
            dlq_subject=subject,
            stream_seq=stream_seq,
        )

    def dead_letter_failed(
        self,
        consumer: str,
        reason: str,
        outcome: str,
        *,
        last_delivery: bool = False,
        attempt: int = 1,
    ) -> None:
        self.metrics.dlq_failures.labels(consumer).inc()
        self.log.error(
            "dead letter not stored; tried again on the last delivery"
            if last_delivery
            else "dead letter not stored; the message is nak'd and tried again",
            error_code="ROUTER_DLQ_FAILED",
            consumer=consumer,
            reason=reason,
            outcome=outcome,
            last_delivery=last_delivery,
            attempt=attempt,
        )

    def dead_letter_abandoned(
        self, consumer: str, reason: str, attempts: int, stream_seq: int | None
    ) -> None:
        self.log.error(
            "dead letter of a last delivery not stored before the stop; the message is nak'd"
            "; its next delivery tries the dead letter again",
            error_code="ROUTER_DLQ_ABANDONED",
            consumer=consumer,
            reason=reason,
            attempts=attempts,
            stream_seq=stream_seq,
        )

    def maxdeliver_exhausted(self, consumer: str, num_delivered: int) -> None:
        self.metrics.maxdeliver_exhausted.labels(consumer).inc()
        self.log.error(
            "last allowed delivery failed",
            error_code="ROUTER_MAXDELIVER_EXHAUSTED",
            consumer=consumer,
            num_delivered=num_delivered,
        )

    def usage_failed(self, outcome: str, reason: str | None) -> None:
        self.metrics.usage_emit_failures.inc()
        self.log.warning(
            "usage event not confirmed; the result will be processed again",
            error_code="ROUTER_USAGE_EMIT_FAILED",
            outcome=outcome,
            reason=reason,
        )

    # -- shared state ------------------------------------------------------------------------

    def shared_state_available(self, available: bool) -> None:
        self.metrics.shared_state_available.set(1 if available else 0)

    def shared_state_unavailable(
        self, operation: str, bucket: str, reason: str, error: str, *, first: bool
    ) -> None:
        """Count it; log the first failure of a bucket's outage (the next ones only count)."""
        self.metrics.shared_state_unavailable.labels(operation).inc()
        if first:
            self.log.warning(
                "shared state unavailable; deciding with this process's state only",
                error_code="ROUTER_SHARED_STATE_UNAVAILABLE",
                operation=operation,
                bucket=bucket,
                reason=reason,
                error=error,
            )

    def shared_state_skipped(self, operation: str) -> None:
        self.metrics.shared_state_unavailable.labels(operation).inc()

    def shared_state_restored(self, bucket: str) -> None:
        self.log.info(
            "shared state available again",
            error_code="ROUTER_SHARED_STATE_RESTORED",
            bucket=bucket,
        )

    # -- policies and breakers -------------------------------------------------------------

    def policies_loaded(self, count: int, path: str) -> None:
        self.metrics.policies_loaded.set(count)
        self.log.info(
            "policies loaded", error_code="ROUTER_POLICIES_LOADED", count=count, path=path
        )

    def policy_reload_failed(self, error: str, file: str | None, field: str | None) -> None:
        self.metrics.policy_reload_failures.inc()
        self.log.error(
            "policies not reloaded; the previous set stays in force",
            error_code="ROUTER_POLICY_RELOAD_FAILED",
            error=error,
            file=file,
            field=field,
        )

    def breaker_state(self, provider: str, state: BreakerState) -> None:
        """Set the gauge; log only a change (the state is reported periodically too)."""
        self.metrics.breaker_state.labels(provider).set(state.gauge)
        before = self._breaker_states.get(provider, BreakerState.CLOSED)
        self._breaker_states[provider] = state
        if state is before:
            return
        log = self.log.warning if state is BreakerState.OPEN else self.log.info
        log(
            "circuit breaker changed state",
            error_code="ROUTER_CIRCUIT_BREAKER_STATE",
            provider=provider,
            state=state.value,
        )
