"""Every Prometheus metric of the link, declared once (CONTRACT §3, docs/metrics.md).

The container takes its ``CollectorRegistry`` as an argument: production passes one registry
for the process, each test builds a fresh one and reads values with ``get_sample_value``.
Label values are bounded: ``reason`` is an ``errors.Reason``, ``operation`` a
``operation.Operation``; never a subject or an id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, Metric

from natsrouter.errors import Reason
from natsrouter.observability.fast import (
    FastCollector,
    FastCounter,
    FastHistogram,
    FastLabelledCounter,
)
from natsrouter.operation import Operation

# `*_created` series double the exposition and no alert or panel uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_OUTAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_OPERATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


#: Where an accepted publish can end (besides still pending): ``outcome`` label values.
SETTLED_OUTCOMES = ("sent", "dropped", "rejected", "failed_open", "failed")


class _LedgerCollector:
    """The no-silent-loss ledger at scrape time (``link.accounting``), read, never counted.

    accepted_total = sum(outcome_total) + pending_operations_count, for this process.
    """

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def collect(self) -> Iterator[Metric]:
        values = self.source() if self.source is not None else {}
        accepted = CounterMetricFamily(
            "router_nats_publishes_accepted",
            "Publishes the link took responsibility for (incl. items recovered from the spool)",
            value=values.get("accepted", 0),
        )
        outcome = CounterMetricFamily(
            "router_nats_publishes_outcome",
            "Where accepted publishes ended; the rest is pending",
            labels=("outcome",),
        )
        for name in SETTLED_OUTCOMES:
            outcome.add_metric((name,), values.get(name, 0))
        yield accepted
        yield outcome


class LinkMetrics:
    """The link's metrics; attribute names follow the metric names without ``router_nats_``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            # prometheus_client appends `_total` to counters on exposition.
            return Counter(f"router_nats_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"router_nats_{name}", doc, registry=registry)

        reason = ("reason",)
        self.connection_status = gauge(
            "connection_status", "1 connected, 0.5 connecting or reconnecting, 0 disconnected"
        )
        self.connection_established = counter(
            "connection_established", "Connections made (first and after a loss)"
        )
        self.connection_lost = counter("connection_lost", "Established connections lost")
        self.connection_restored = counter(
            "connection_restored", "Connections made again after a loss"
        )
        self.connection_failures = counter(
            "connection_failures", "Failed connection attempts", reason
        )
        self.reconnect_attempts = counter("reconnect_attempts", "Reconnection attempts")
        self.reconnect_failures = counter(
            "reconnect_failures", "Failed reconnection attempts", reason
        )
        self.reconnection_exhausted = counter(
            "reconnection_exhausted", "Outages that used up nats_reconnect_attempts"
        )
        self.outage_duration = Histogram(
            "router_nats_outage_duration_seconds",
            "Time from connection lost to connection restored",
            buckets=_OUTAGE_BUCKETS,
            registry=registry,
        )
        self.operation_total = {
            op: FastCounter(f"router_nats_{op.value}", f"Successful {op.value} operations")
            for op in Operation
        }

        self.operation_failures = {
            op: counter(f"{op.value}_failures", f"Failed {op.value} operations", reason)
            for op in Operation
        }
        self.fail_open = counter(
            "fail_open", "Operations not sent nor kept because of fail-open mode", ("operation",)
        )
        # Only operations that wait on the server are timed: a core publish, ack or nak
        # completes when it is buffered, which says nothing about NATS.
        self.operation_duration = FastHistogram(
            "router_nats_operation_duration_seconds",
            "Time until the server answered (publish_with_ack, request, kv_*)",
            "operation",
            (
                Operation.PUBLISH_WITH_ACK.value,
                Operation.REQUEST.value,
                Operation.KV_GET.value,
                Operation.KV_PUT.value,
                Operation.KV_CREATE.value,
                Operation.KV_UPDATE.value,
            ),
            _OPERATION_BUCKETS,
        )
        self.duration_of = {
            Operation(v): child for v, child in self.operation_duration.children.items()
        }
        registry.register(
            FastCollector(list(self.operation_total.values()), [self.operation_duration])
        )
        self.slow_consumer_drops = counter(
            "slow_consumer_drops",
            "Inbound messages nats-py dropped: a subscription buffer was full",
        )
        self.unreadable_messages = counter(
            "unreadable_messages",
            "Inbound messages dropped because nats-py cannot read them (bytes not UTF-8)",
        )
        self.handler_failures = counter(
            "handler_failures",
            "Inbound messages whose handler raised (a bug): logged, and delivery goes on",
            ("subject",),
        )
        # The contract's name ends in _count, which Prometheus reserves for histograms and
        # summaries (promtool check metrics flags it); it stays for compatibility, and the
        # lint-clean twin below carries the same value for alerts and dashboards.
        self.pending_count = gauge("pending_operations_count", "Operations in the pending queue")
        self.pending_operations = gauge(
            "pending_operations", "Operations in the pending queue (lint-clean name)"
        )
        self.pending_bytes = gauge("pending_operations_bytes", "Bytes in the pending queue")
        # The bounds as series, so an alert can say "80% full" without copying the settings.
        self.pending_limit = gauge(
            "pending_operations_limit", "nats_max_pending_operations (0: nothing is queued)"
        )
        self.pending_bytes_limit = gauge("pending_operations_bytes_limit", "nats_max_pending_bytes")
        self.pending_dropped = counter(
            "pending_operations_dropped", "Pending operations dropped", reason
        )
        self.pending_failed = counter(
            "pending_operations_failed",
            "Queued operations the server refused for a reason retrying cannot fix",
            reason,
        )
        self.replies_dropped = counter(
            "replies_dropped",
            "Replies not sent (never queued): the reason they could not go",
            reason,
        )
        self.blocked_destinations = gauge(
            "blocked_destinations",
            "Subjects whose queued publishes wait out their own backoff after failing",
        )
        self.pending_rejected = counter(
            "pending_operations_rejected", "Operations refused by a full queue (reject_new)"
        )
        self.pending_retry = counter("pending_operations_retry", "Replays of pending operations")
        self.pending_retry_success = counter(
            "pending_operations_retry_success", "Replays that sent the operation"
        )
        self.pending_retry_failed = counter(
            "pending_operations_retry_failed", "Replays that left the operation queued"
        )
        self.past_dedup_window = counter(
            "pending_operations_past_dedup_window",
            "Replayed JetStream publishes older than their stream's duplicate window",
        )
        self.publish_retries = counter(
            "publish_with_ack_retries",
            "Extra attempts of an ambiguous JetStream publish with the same Nats-Msg-Id",
        )
        self._ledger = _LedgerCollector()
        registry.register(self._ledger)
        self._prime()

    def track_ledger(self, source: Callable[[], Mapping[str, int]]) -> None:
        """Export ``router_nats_publishes_*`` from ``source`` (the link's accounting)."""
        self._ledger.source = source

    def _prime(self) -> None:
        """Create every labelled child at zero, so series exist before the first event."""
        for r in Reason:
            self.connection_failures.labels(r.value)
            self.reconnect_failures.labels(r.value)
            self.replies_dropped.labels(r.value)
            self.pending_failed.labels(r.value)
            for op in Operation:
                self.operation_failures[op].labels(r.value)
        for r in (Reason.QUEUE_FULL, Reason.EXPIRED, Reason.SPOOL_ERROR):
            self.pending_dropped.labels(r.value)
        for op in Operation:
            self.fail_open.labels(op.value)


# Decide latency: an in-process decision takes microseconds; with an assignment it waits for
# a PubAck (milliseconds), and a slow NATS pushes it toward the request timeout.
_DECIDE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1,
    5,
)

#: Bounded label values of the Router's metrics (docs/metrics.md).
#: ``service.shared_state.SharedOp`` values (checked equal by a unit test).
SHARED_STATE_OPERATIONS = (
    "decision_claim",
    "decision_read",
    "sticky_read",
    "sticky_claim",
    "breaker_write",
    "breaker_read",
)
DECIDE_OUTCOMES = (
    "ok",
    "invalid_request",
    "unauthenticated",
    "unauthorized",
    "policy_not_found",
    "constraints_unsatisfiable",
    "decision_failed",
    "rate_limit_exceeded",
    "overloaded",
    "internal",
    "reply_failed",
)
DECIDE_TRANSPORTS = ("nats", "http")
ASSIGNMENT_OUTCOMES = ("sent", "queued", "dropped", "rejected", "failed_open", "failed")
RESULT_STATUSES = ("success", "error", "timeout", "cancelled")
ACK_STATUSES = ("accepted", "rejected", "error")
CONSUMERS = ("results", "acks")
DLQ_REASONS = ("invalid", "unauthorized", "max_deliver")
SUBJECT_REFUSALS = ("reserved", "not_allowed")


class RouterMetrics:
    """The Router's own metrics (CONTRACT §3, "Router"), in the same registry as the link's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"router_{name}", doc, labels, registry=registry)

        # Counted once per decide request: plain numbers on the event loop thread, like the
        # link's per-message metrics (prometheus_client's locks cost microseconds each).
        self.decide = FastLabelledCounter(
            "router_decide", "Decide requests answered, by outcome", "outcome", DECIDE_OUTCOMES
        )
        self.decide_duration = FastHistogram(
            "router_decide_duration_seconds",
            "Time from a decide request received to its answer sent",
            "transport",
            DECIDE_TRANSPORTS,
            _DECIDE_BUCKETS,
        )
        # Once per push: as cheap as the decide counter.
        self.assignments = FastLabelledCounter(
            "router_assignments",
            "ExecAssignments pushed, by link outcome",
            "outcome",
            ASSIGNMENT_OUTCOMES,
        )
        registry.register(FastCollector([self.decide, self.assignments], [self.decide_duration]))
        self.decide_replayed = counter(
            "decide_replayed",
            "Decide requests answered with the answer already given to their "
            "(tenant_id, request_id)",
        )
        self.sticky_session_too_long = counter(
            "sticky_session_too_long",
            "Decides whose session value was over 256 characters: decided as not sticky",
        )
        self.rate_limited = counter(
            "rate_limited",
            "Decides refused by their policy's rate_limit (this Router's bucket)",
            ("tenant_id", "policy_id"),
        )
        self.assignment_subject_refused = counter(
            "assignment_subject_refused",
            "Decide requests refused for the assignment_subject they named",
            ("reason",),
        )
        self.results = counter("results", "ExecResults processed, by status", ("status",))
        self.acks = counter("acks", "ExecAssignmentAcks processed, by status", ("status",))
        self.results_duplicate = counter(
            "results_duplicate", "ExecResults acked without effect: seen within the TTL"
        )
        self.acks_duplicate = counter(
            "acks_duplicate", "ExecAssignmentAcks acked without effect: seen within the TTL"
        )
        self.messages_invalid = counter(
            "messages_invalid", "Consumed messages that failed validation", ("consumer",)
        )
        self.tenant_rejected = counter(
            "tenant_rejected", "Messages or requests from a tenant not allowed", ("consumer",)
        )
        self.usage_emitted = counter("usage_emitted", "UsageEvents confirmed by a PubAck")
        self.usage_emit_failures = counter(
            "usage_emit_failures", "UsageEvents not confirmed (the result is nak'd)"
        )
        self.redelivery = counter(
            "jetstream_redelivery", "Messages delivered more than once", ("consumer",)
        )
        self.maxdeliver_exhausted = counter(
            "jetstream_maxdeliver_exhausted",
            "Messages that failed on their last allowed delivery",
            ("consumer",),
        )
        self.dlq = counter("dlq", "Messages dead-lettered", ("consumer", "reason"))
        self.dlq_failures = counter(
            "dlq_failures", "Dead-letter publishes not stored (each attempt)", ("consumer",)
        )
        self.breaker_state = Gauge(
            "router_circuit_breaker_state",
            "0 closed, 0.5 half-open, 1 open",
            ("provider",),
            registry=registry,
        )
        self.policies_loaded = Gauge(
            "router_policies_loaded", "Policies in force", registry=registry
        )
        self.policy_reload_failures = counter(
            "policy_reload_failures", "Reloads refused (the previous set stays in force)"
        )
        # Shared state (service/shared_state.py): its operation names are bounded there.
        self.shared_state_unavailable = counter(
            "shared_state_unavailable",
            "Shared-state operations done with local state only: the key-value bucket failed "
            "or was being skipped after a failure",
            ("operation",),
        )
        self.shared_state_available = Gauge(
            "router_shared_state_available",
            "1 when shared state is enabled and answered at its last use, else 0",
            registry=registry,
        )
        self.embedded_nats_restarts = counter(
            "embedded_nats_restarts", "Times the embedded nats-server was restarted after it exited"
        )
        self._prime()

    def _prime(self) -> None:
        for reason in SUBJECT_REFUSALS:
            self.assignment_subject_refused.labels(reason)
        for status in RESULT_STATUSES:
            self.results.labels(status)
        for status in ACK_STATUSES:
            self.acks.labels(status)
        for consumer in CONSUMERS:
            self.messages_invalid.labels(consumer)
            self.redelivery.labels(consumer)
            self.maxdeliver_exhausted.labels(consumer)
            self.dlq_failures.labels(consumer)
            for reason in DLQ_REASONS:
                self.dlq.labels(consumer, reason)
        for consumer in ("decide", *CONSUMERS):
            self.tenant_rejected.labels(consumer)
        for op in SHARED_STATE_OPERATIONS:
            self.shared_state_unavailable.labels(op)
