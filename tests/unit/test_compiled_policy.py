"""Policies compiled at load decide exactly as the per-call rules they replace."""

from __future__ import annotations

import random
from bisect import bisect_right
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing.breaker import BreakerConfig
from natsrouter.routing.decider import matches, matches_compiled, request_document
from natsrouter.routing.messages import DecideRequest, Task
from natsrouter.routing.policy import Fallback, Policy, Provider, RateLimitConfig, Sticky
from natsrouter.routing.strategies import Strategy

KEYS = ["task.type", "status", "region", "metadata.region", "tenant_id", "task", "a.b", "policy_id"]
SCALARS = st.none() | st.booleans() | st.integers(0, 2) | st.sampled_from(["x", "eu", "1"])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(KEYS), st.lists(SCALARS, min_size=1, max_size=2), max_size=3),
    st.dictionaries(st.sampled_from(["status", "region", "a"]), SCALARS, max_size=3),
    st.sampled_from(["x", "eu", "1"]),
)
def test_compiled_when_matches_as_the_rule_does(
    when: dict[str, list[Any]], metadata: dict[str, Any], task_type: str
) -> None:
    """A rule's compiled ``when`` matches the same requests as ``matches`` on its keys."""
    rule = Fallback({k: tuple(v) for k, v in when.items()}, "p")
    request = DecideRequest("r", "t", Task(task_type, None, None), metadata=metadata)
    document = request_document(request)
    assert matches_compiled(rule.matchers, document) is matches(rule.when, document)


def _loop_pick(providers: tuple[Provider, ...], point: float) -> str:
    """The pick by subtraction that the running sums replace."""
    for provider in providers:
        point -= provider.weight
        if point < 0:
            return provider.name
    return providers[-1].name


def test_running_sums_pick_as_the_subtraction_did() -> None:
    """For 10,000 random points the pick from the load-time sums is the same provider."""
    policy = Policy(
        "t",
        "default",
        (Provider("a", 60.0), Provider("off", 0.0), Provider("b", 25.5), Provider("c", 14.5)),
    )
    rng = random.Random(7)
    for _ in range(10_000):
        point = rng.random() * policy.cumulative[-1]
        index = min(bisect_right(policy.cumulative, point), len(policy.weighted) - 1)
        assert policy.weighted[index].name == _loop_pick(policy.weighted, point)


def test_policy_tables_are_built_at_load() -> None:
    """by_name, weighted and cumulative are set when the policy is built."""
    policy = Policy("t", "p", (Provider("a", 2.0), Provider("z", 0.0), Provider("b", 1.0)))
    assert list(policy.by_name) == ["a", "z", "b"]
    assert [p.name for p in policy.weighted] == ["a", "b"]
    assert policy.cumulative == (2.0, 3.0)


def test_one_draw_only_for_weighted_policies_without_a_breaker() -> None:
    """one_draw: the weighted strategy, no breaker and a provider with weight; else False."""
    providers = (Provider("a", 2.0), Provider("b", 1.0))
    assert Policy("t", "p", providers).one_draw is True
    assert Policy("t", "p", providers, strategy=Strategy.LATENCY).one_draw is False
    assert (
        Policy("t", "p", providers, circuit_breaker=BreakerConfig(enabled=True)).one_draw is False
    )
    assert Policy("t", "p", (Provider("z", 0.0),)).one_draw is False


def test_direct_only_without_rate_limit_fallbacks_or_sticky() -> None:
    """direct: no rate limit, no fallback rule and no sticky sessions; any of them: False."""
    providers = (Provider("a", 2.0),)
    assert Policy("t", "p", providers).direct is True
    assert Policy("t", "p", providers, rate_limit=RateLimitConfig(enabled=True)).direct is False
    assert Policy("t", "p", providers, sticky=Sticky(enabled=True)).direct is False
    rule = Fallback({"task.type": ("x",)}, "a")
    assert Policy("t", "p", providers, fallbacks=(rule,)).direct is False
