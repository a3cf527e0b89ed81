"""RouterEvents: a refusal any client can cause is logged at most once per code per interval."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from natsrouter.observability.metrics import RouterMetrics
from natsrouter.service.events import LOGGED_TEXT_MAX, RATE_LIMIT_INTERVAL_S, RouterEvents


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refused(logs: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [
        (e["code"], e["suppressed"]) for e in logs if e.get("error_code") == "ROUTER_DECIDE_REFUSED"
    ]


def test_decide_refused_is_one_line_per_code_per_interval(logs: list[dict[str, Any]]) -> None:
    """A flood of refusals: one line per code per interval, the next one says how many were
    left out; each code has its own interval."""
    clock = Clock()
    events = RouterEvents(RouterMetrics(CollectorRegistry()), clock=clock)
    for _ in range(100):
        events.decide_refused("invalid_request", "bad", "http", field="task")
    events.decide_refused("unauthorized", "no", "nats", tenant_id="t")
    clock.now += RATE_LIMIT_INTERVAL_S - 0.01
    events.decide_refused("invalid_request", "bad", "http", field="task")
    clock.now += 0.02
    events.decide_refused("invalid_request", "bad", "http", field="task")
    assert _refused(logs) == [("invalid_request", 0), ("unauthorized", 0), ("invalid_request", 100)]


def test_an_invalid_worker_message_is_logged_with_its_quoted_text_cut(
    logs: list[dict[str, Any]],
) -> None:
    """A worker value of 60,000 characters: the ROUTER_MESSAGE_INVALID line carries at most
    LOGGED_TEXT_MAX characters of the field and of the error, and says how long each was."""
    events = RouterEvents(RouterMetrics(CollectorRegistry()))
    events.invalid("results", "x" * 60_000, "bad: " + "y" * 60_000, 7)
    (line,) = [e for e in logs if e.get("error_code") == "ROUTER_MESSAGE_INVALID"]
    assert (len(line["field"]), len(line["error"])) == (LOGGED_TEXT_MAX, LOGGED_TEXT_MAX)
    assert (line["field_length"], line["error_length"], line["stream_seq"]) == (60_000, 60_005, 7)


def test_assignments_not_sent_are_one_line_per_outcome_per_interval(
    logs: list[dict[str, Any]],
) -> None:
    """Fail-open during an outage: 50 assignments failed_open give one line, the next interval's
    line says 49 were left out; each is counted."""
    clock = Clock()
    metrics = RouterMetrics(CollectorRegistry())
    events = RouterEvents(metrics, clock=clock)
    for _ in range(50):
        events.assignment("failed_open", "not_connected", "caf.exec.assign.v1")
    events.assignment("dropped", "queue_full", "caf.exec.assign.v1")
    clock.now += RATE_LIMIT_INTERVAL_S
    events.assignment("failed_open", "not_connected", "caf.exec.assign.v1")
    lines = [
        (e["outcome"], e["suppressed"])
        for e in logs
        if e.get("error_code") == "ROUTER_ASSIGNMENT_NOT_SENT"
    ]
    assert lines == [("failed_open", 0), ("dropped", 0), ("failed_open", 49)]
    assert metrics.assignments.labels("failed_open").value == 51


def _lines(logs: list[dict[str, Any]], code: str, *names: str) -> list[tuple[Any, ...]]:
    return [tuple(e[n] for n in names) for e in logs if e.get("error_code") == code]


def test_rate_limited_refusals_are_one_line_per_interval_with_the_count(
    logs: list[dict[str, Any]],
) -> None:
    """Three refusals, one just inside the interval, one at its end: two lines, refused 1
    then 4 (the three left out and the one logged); each counted in
    router_rate_limited_total."""
    clock = Clock()
    metrics = RouterMetrics(CollectorRegistry())
    events = RouterEvents(metrics, clock=clock)
    fields = {"tenant_id": "acme", "policy_id": "p", "requests_per_second": 2}
    for _ in range(3):
        events.decide_refused("rate_limit_exceeded", "over", "http", **fields)
    clock.now += RATE_LIMIT_INTERVAL_S - 0.01
    events.decide_refused("rate_limit_exceeded", "over", "nats", **fields)
    clock.now += 0.01
    events.decide_refused("rate_limit_exceeded", "over", "nats", **fields)
    names = ("transport", "tenant_id", "policy_id", "requests_per_second", "refused")
    assert _lines(logs, "ROUTER_DECIDE_RATE_LIMITED", *names) == [
        ("http", "acme", "p", 2, 1),
        ("nats", "acme", "p", 2, 4),
    ]
    assert metrics.rate_limited.labels("acme", "p")._value.get() == 5


def test_overloaded_refusals_are_one_line_per_interval_with_the_count(
    logs: list[dict[str, Any]],
) -> None:
    """Five overloaded answers, then one an interval later: refused 1, then 5."""
    clock = Clock()
    events = RouterEvents(RouterMetrics(CollectorRegistry()), clock=clock)
    for _ in range(5):
        events.decide_overloaded("nats", 100)
    clock.now += RATE_LIMIT_INTERVAL_S
    events.decide_overloaded("http", 100)
    names = ("transport", "limit", "refused")
    assert _lines(logs, "ROUTER_DECIDE_OVERLOADED", *names) == [
        ("nats", 100, 1),
        ("http", 100, 5),
    ]


def test_unsent_answers_are_one_line_per_interval(logs: list[dict[str, Any]]) -> None:
    """Answers not sent: the first line, none within the interval, one after it."""
    clock = Clock()
    events = RouterEvents(RouterMetrics(CollectorRegistry()), clock=clock)
    events.reply_failed("dropped", "not_connected")
    events.reply_failed("queued", None)
    clock.now += RATE_LIMIT_INTERVAL_S
    events.reply_failed("queued", None)
    assert _lines(logs, "ROUTER_DECIDE_REPLY_FAILED", "outcome", "reason") == [
        ("dropped", "not_connected"),
        ("queued", None),
    ]


def test_decided_counts_and_observes_as_the_metrics_own_methods_do() -> None:
    """decided (counter and histogram written out) scrapes as inc and observe would have."""
    registry, reference = CollectorRegistry(), CollectorRegistry()
    events, metrics = RouterEvents(RouterMetrics(registry)), RouterMetrics(reference)
    answers = [("ok", "nats", 0.0), ("ok", "nats", 0.0004), ("ok", "http", 0.25)]
    answers += [("invalid_request", "nats", 7.5), ("ok", "nats", 1e9), ("ok", "nats", 0.005)]
    for outcome, transport, seconds in answers:
        events.decided(outcome, transport, seconds)
        metrics.decide.labels(outcome).inc()
        metrics.decide_duration.labels(transport).observe(seconds)
    families = ("router_decide", "router_decide_duration_seconds")
    scraped = [f for f in registry.collect() if f.name in families]
    assert len(scraped) == 2
    assert scraped == [f for f in reference.collect() if f.name in families]
