"""Backoff: exact delays, cap, and jitter bounds, with no sleeping."""

from __future__ import annotations

import random

import pytest

from natsrouter.link.backoff import BackoffPolicy


def test_delays_double_then_cap_without_jitter() -> None:
    """With no jitter the sequence is base * 2**n, capped."""
    policy = BackoffPolicy(base_ms=500, cap_ms=2000, jitter=0.0)
    rng = random.Random(1)
    assert [policy.delay_ms(n, rng) for n in range(6)] == [500, 1000, 2000, 2000, 2000, 2000]


def test_jittered_delay_is_nominal_times_the_drawn_factor() -> None:
    """The jitter factor is 1 + jitter * U(-1, 1) drawn from the injected random source."""
    policy = BackoffPolicy(base_ms=100, cap_ms=10_000, jitter=0.2)
    draws = random.Random(7)
    expected = [100 * 2**n * (1 + 0.2 * draws.uniform(-1, 1)) for n in range(5)]
    rng = random.Random(7)
    assert [policy.delay_ms(n, rng) for n in range(5)] == expected


@pytest.mark.parametrize("retry", range(0, 12))
def test_jittered_delays_stay_within_bounds(retry: int) -> None:
    """Every delay lies within nominal * [1 - jitter, 1 + jitter]."""
    policy = BackoffPolicy(base_ms=50, cap_ms=2000, jitter=0.2)
    low, high = policy.bounds_ms(retry)
    rng = random.Random(retry)
    for _ in range(200):
        assert low <= policy.delay_ms(retry, rng) <= high


def test_huge_retry_numbers_stay_at_the_cap() -> None:
    """No overflow: retry 10_000 is the cap."""
    policy = BackoffPolicy(base_ms=1, cap_ms=30_000, jitter=0.0)
    assert policy.nominal_ms(10_000) == 30_000


@pytest.mark.parametrize(("base", "cap", "jitter"), [(0, 10, 0.1), (20, 10, 0.1), (10, 20, 1.5)])
def test_invalid_policies_are_refused(base: int, cap: int, jitter: float) -> None:
    """A zero base, a cap below the base, or jitter above 1 is refused."""
    with pytest.raises(ValueError, match="backoff"):
        BackoffPolicy(base_ms=base, cap_ms=cap, jitter=jitter)
