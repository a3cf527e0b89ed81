"""Reconnect delays: a pure function of the attempt number, the policy and a random source.

Nothing here sleeps or reads a clock, so tests assert exact sequences.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """``min(base * 2**n, cap)``, scaled by a uniform factor in ``[1 - jitter, 1 + jitter]``."""

    base_ms: int
    cap_ms: int
    jitter: float

    def __post_init__(self) -> None:
        if self.base_ms <= 0 or self.cap_ms < self.base_ms:
            raise ValueError("backoff needs 0 < base_ms <= cap_ms")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("backoff jitter must be within [0, 1]")

    def bounds_ms(self, retry: int) -> tuple[float, float]:
        """The lowest and highest delay the ``retry``-th retry (0-based) can get."""
        nominal = self.nominal_ms(retry)
        return nominal * (1 - self.jitter), nominal * (1 + self.jitter)

    def nominal_ms(self, retry: int) -> float:
        if retry < 0:
            raise ValueError("retry must be >= 0")
        # Compare exponents instead of computing 2**retry, which grows without bound.
        if retry >= 62 or self.base_ms * 2**retry >= self.cap_ms:
            return float(self.cap_ms)
        return float(self.base_ms * 2**retry)

    def delay_ms(self, retry: int, rng: random.Random) -> float:
        """The delay before the ``retry``-th retry (0-based) of one outage."""
        return self.nominal_ms(retry) * (1 + self.jitter * rng.uniform(-1.0, 1.0))
