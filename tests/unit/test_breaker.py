"""The per-provider circuit breaker: every transition, with an injected clock."""

from __future__ import annotations

from natsrouter.routing.breaker import BreakerConfig, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **overrides: int) -> CircuitBreaker:
    config = BreakerConfig(
        enabled=True,
        failure_threshold=3,
        success_threshold=2,
        timeout_ms=1000,
        half_open_max_calls=1,
    )
    return CircuitBreaker(BreakerConfig(**{**config.__dict__, **overrides}), clock)


def test_opens_after_consecutive_failures_only() -> None:
    """threshold 3: two failures, a success, two failures stay closed; the third opens."""
    b = breaker(Clock())
    for success in (False, False, True, False, False):
        b.record(success)
    assert b.state is BreakerState.CLOSED
    b.record(False)
    assert b.state is BreakerState.OPEN
    assert not b.available()


def test_half_open_after_the_timeout_with_limited_trials() -> None:
    """After timeout_ms the breaker is half-open and lets half_open_max_calls through."""
    clock = Clock()
    b = breaker(clock, half_open_max_calls=2)
    for _ in range(3):
        b.record(False)
    clock.now += 0.999
    assert b.state is BreakerState.OPEN
    clock.now += 0.001
    assert b.state is BreakerState.HALF_OPEN
    assert b.available()
    b.picked()
    assert b.available()
    b.picked()
    assert not b.available()


def test_half_open_closes_after_successes() -> None:
    """success_threshold successes while half-open close it."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(False)
    clock.now += 1
    b.picked()
    b.record(True)
    assert b.state is BreakerState.HALF_OPEN
    b.record(True)
    assert b.state is BreakerState.CLOSED
    assert b.available()


def test_a_failure_while_half_open_opens_again_for_a_full_timeout() -> None:
    """One failure in half-open re-opens it, and the timeout starts over."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(False)
    clock.now += 1
    assert b.state is BreakerState.HALF_OPEN
    b.record(False)
    assert b.state is BreakerState.OPEN
    clock.now += 0.5
    assert b.state is BreakerState.OPEN
    clock.now += 0.5
    assert b.state is BreakerState.HALF_OPEN


def test_results_while_open_change_nothing() -> None:
    """Late results of calls made before it opened neither close nor extend it."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(False)
    b.record(True)
    b.record(False)
    clock.now += 1
    assert b.state is BreakerState.HALF_OPEN


def test_disabled_breaker_is_always_available() -> None:
    """enabled=false: failures never make the provider unavailable."""
    b = CircuitBreaker(BreakerConfig(enabled=False, failure_threshold=1), Clock())
    for _ in range(10):
        b.record(False)
    assert b.available()
    assert b.state is BreakerState.CLOSED


def test_gauge_values() -> None:
    """router_circuit_breaker_state: 0 closed, 0.5 half-open, 1 open."""
    assert [s.gauge for s in BreakerState] == [0.0, 1.0, 0.5]


def test_open_for_opens_a_closed_breaker_for_the_time_given_then_half_open() -> None:
    """open_for(0.4) on a 1 s breaker: open, half-open 0.4 s later (not 1 s)."""
    clock = Clock()
    b = breaker(clock)
    assert b.open_for(0.4) is True
    assert b.state is BreakerState.OPEN
    clock.now += 0.39
    assert b.state is BreakerState.OPEN
    clock.now += 0.02
    assert b.state is BreakerState.HALF_OPEN


def test_open_for_leaves_an_open_breaker_alone() -> None:
    """Already open: open_for returns False and the breaker's own timeout stands."""
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(False)
    assert b.open_for(0.1) is False
    clock.now += 0.5
    assert b.state is BreakerState.OPEN
