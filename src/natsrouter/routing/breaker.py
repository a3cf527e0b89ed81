"""A circuit breaker for one provider, fed by execution results.

closed --(failure_threshold consecutive failures)--> open
open --(timeout_ms elapsed)--> half_open
half_open --(success_threshold successes)--> closed
half_open --(any failure)--> open

While open, the provider is not available to the weighted pick; while half-open it takes at
most ``half_open_max_calls`` trial decisions until results come back. The clock is injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> float:
        """Value of ``router_circuit_breaker_state``: 0 closed, 0.5 half-open, 1 open."""
        return {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 0.5, BreakerState.OPEN: 1.0}[self]


@dataclass(frozen=True)
class BreakerConfig:
    enabled: bool = False
    failure_threshold: int = 5
    success_threshold: int = 2
    timeout_ms: int = 30_000
    half_open_max_calls: int = 1


class CircuitBreaker:
    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive, while closed
        self._successes = 0  # while half-open
        self._trials = 0  # decisions handed out while half-open
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker whose timeout has passed is half-open."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.config.timeout_ms / 1000
        ):
            self._state = BreakerState.HALF_OPEN
            self._successes = self._trials = 0
        return self._state

    def available(self) -> bool:
        """May the provider be picked now? Always, when the breaker is disabled."""
        if not self.config.enabled:
            return True
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        return state is BreakerState.HALF_OPEN and self._trials < self.config.half_open_max_calls

    def seconds_until_trial(self) -> float:
        """How long until the breaker lets a call through (0 when it does now)."""
        if self.available():
            return 0.0
        if self._state is BreakerState.OPEN:
            return self.config.timeout_ms / 1000 - (self._clock() - self._opened_at)
        return 1.0  # half-open, trial calls in progress: their results decide

    def picked(self) -> None:
        """The provider was chosen: while half-open that uses one trial call."""
        if self.config.enabled and self.state is BreakerState.HALF_OPEN:
            self._trials += 1

    def record(self, success: bool) -> None:
        """Feed one execution result."""
        if not self.config.enabled:
            return
        state = self.state
        if state is BreakerState.CLOSED:
            self._failures = 0 if success else self._failures + 1
            if self._failures >= self.config.failure_threshold:
                self._open()
        elif state is BreakerState.HALF_OPEN:
            if not success:
                self._open()
                return
            self._successes += 1
            if self._successes >= self.config.success_threshold:
                self._state = BreakerState.CLOSED
                self._failures = 0
        # Results arriving while open (from calls made before it opened) change nothing.

    def open_for(self, seconds: float) -> bool:
        """Open for ``seconds`` (another Router's breaker opened); False when already open.

        Then it turns half-open as if it had opened itself ``timeout_ms - seconds`` ago.
        """
        if not self.config.enabled or self.state is BreakerState.OPEN or seconds <= 0:
            return False
        self._open()
        self._opened_at -= max(0.0, self.config.timeout_ms / 1000 - seconds)
        return True

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._failures = self._successes = self._trials = 0
