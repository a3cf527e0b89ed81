"""RouterEvents: a refusal any client can cause is logged at most once per code per interval."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from natsrouter.observability.metrics import RouterMetrics
from natsrouter.service.events import RATE_LIMIT_INTERVAL_S, RouterEvents


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
