"""Rate limits per policy: token buckets with an injected clock, refusals with a wait."""

from __future__ import annotations

from pathlib import Path

import pytest

from natsrouter.routing.messages import ErrorCode, RequestError
from natsrouter.routing.policy import PolicyError, RateLimitConfig
from natsrouter.routing.rate_limit import RateLimits, TokenBucket
from tests.unit.test_decider import Clock, make, request
from tests.unit.test_policy import write

TEN_A_SECOND = RateLimitConfig(enabled=True, requests_per_second=10, burst=3)


def test_bucket_lets_the_burst_through_then_refuses() -> None:
    """A full bucket of 3 lets 3 decides through at once; the 4th waits 0.1 s."""
    bucket = TokenBucket(TEN_A_SECOND, Clock())
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.1)


def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    """After 0.25 s two tokens are back; after an hour no more than the burst of 3."""
    clock = Clock()
    bucket = TokenBucket(TEN_A_SECOND, clock)
    for _ in range(3):
        bucket.take()
    clock.now += 0.25
    assert bucket.tokens == pytest.approx(2.5)
    clock.now += 3600
    assert bucket.tokens == 3.0


def test_limits_refuse_with_rate_limit_exceeded() -> None:
    """Past the burst: rate_limit_exceeded naming tenant and policy, retry_after_s 1."""
    limits = RateLimits(Clock())
    for _ in range(3):
        limits.take("acme", "default", TEN_A_SECOND)
    with pytest.raises(RequestError) as caught:
        limits.take("acme", "default", TEN_A_SECOND)
    assert caught.value.code is ErrorCode.RATE_LIMIT_EXCEEDED
    assert caught.value.code.http_status == 429
    assert caught.value.details == {
        "tenant_id": "acme",
        "policy_id": "default",
        "requests_per_second": 10,
        "burst": 3,
        "retry_after_s": 1,
    }


def test_a_token_given_back_passes_the_next_decide_but_never_beyond_the_burst() -> None:
    """Burst 3 spent, one given back: one decide passes; given back to a full bucket: 3."""
    limits = RateLimits(Clock())
    for _ in range(3):
        limits.take("acme", "default", TEN_A_SECOND)
    limits.give_back("acme", "default", TEN_A_SECOND)
    assert limits.headroom("acme", "default", TEN_A_SECOND) == 1
    limits.take("acme", "default", TEN_A_SECOND)
    limits.give_back("acme", "other", TEN_A_SECOND)
    assert limits.headroom("acme", "other", TEN_A_SECOND) == 3


def test_each_tenant_and_policy_has_its_own_bucket() -> None:
    """acme/default past its burst leaves acme/cheap and other/default untouched."""
    limits = RateLimits(Clock())
    for _ in range(3):
        limits.take("acme", "default", TEN_A_SECOND)
    assert limits.headroom("acme", "default", TEN_A_SECOND) == 0
    assert limits.headroom("acme", "cheap", TEN_A_SECOND) == 3
    assert limits.headroom("other", "default", TEN_A_SECOND) == 3


def test_disabled_limit_never_refuses_and_has_no_headroom() -> None:
    """rate_limit disabled: 1000 decides pass and the headroom is None."""
    limits = RateLimits(Clock())
    off = RateLimitConfig(enabled=False, requests_per_second=1, burst=1)
    for _ in range(1000):
        limits.take("acme", "default", off)
    assert limits.headroom("acme", "default", off) is None


def test_a_changed_limit_starts_a_full_bucket() -> None:
    """A reload with a new burst replaces the empty bucket with a full one."""
    limits = RateLimits(Clock())
    for _ in range(3):
        limits.take("acme", "default", TEN_A_SECOND)
    bigger = RateLimitConfig(enabled=True, requests_per_second=10, burst=5)
    assert limits.headroom("acme", "default", bigger) == 5


def test_decider_applies_the_policy_rate_limit(tmp_path: Path) -> None:
    """A policy with burst 2 and 1 rps: the 3rd decide is refused, one second later allowed."""
    policy = {
        "providers": [{"name": "a", "weight": 1}],
        "rate_limit": {"enabled": True, "requests_per_second": 1, "burst": 2},
    }
    decider, _, clock, _ = make(tmp_path, policy)
    decider.decide(request())
    decider.decide(request())
    with pytest.raises(RequestError) as caught:
        decider.decide(request())
    assert caught.value.code is ErrorCode.RATE_LIMIT_EXCEEDED
    clock.now += 1.0
    assert decider.decide(request()).provider_id == "a"


def test_a_zero_rate_is_refused_with_the_field(tmp_path: Path) -> None:
    """requests_per_second 0 is an invalid policy naming rate_limit.requests_per_second."""
    write(
        tmp_path,
        "acme",
        "default",
        {
            "providers": [{"name": "a", "weight": 1}],
            "rate_limit": {"enabled": True, "requests_per_second": 0},
        },
    )
    decider, *_ = make(tmp_path / "ok", {"providers": [{"name": "a", "weight": 1}]})
    decider.policies.root = tmp_path
    with pytest.raises(PolicyError) as caught:
        decider.policies.reload()
    assert caught.value.field == "rate_limit.requests_per_second"


def test_stored_answer_lookups_of_refused_decides_are_bounded_by_the_policy_rate() -> None:
    """Burst 3 spent: 3 look-ups allowed, the 4th not; 0.1 s later (10/s) one more."""
    clock = Clock()
    limits = RateLimits(clock)
    for _ in range(3):
        limits.take("acme", "default", TEN_A_SECOND)
    allowed = [limits.may_look_up("acme", "default", TEN_A_SECOND) for _ in range(4)]
    assert allowed == [True, True, True, False]
    clock.now += 0.1
    assert limits.may_look_up("acme", "default", TEN_A_SECOND) is True
    assert limits.headroom("acme", "default", TEN_A_SECOND) == 1  # decides' bucket untouched


def test_stored_answer_lookups_of_a_policy_without_a_limit_are_bounded_at_100_a_second() -> None:
    """No rate limit: 100 look-ups at once, the 101st refused; 15 ms later (100/s) one more."""
    clock = Clock()
    limits = RateLimits(clock)
    unlimited = RateLimitConfig()
    allowed = [limits.may_look_up("acme", "default", unlimited) for _ in range(101)]
    assert allowed == [True] * 100 + [False]
    clock.now += 0.015
    assert [limits.may_look_up("acme", "default", unlimited) for _ in range(2)] == [True, False]
