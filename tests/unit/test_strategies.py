"""Routing strategies: weighted, latency, cost, least_busy; assignments in flight."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from natsrouter.routing.decider import DecisionReason
from natsrouter.routing.policy import PolicyError, Provider
from natsrouter.routing.strategies import IN_FLIGHT_TTL_S, InFlight, Strategy, pick
from tests.unit.test_decider import Clock, make, request
from tests.unit.test_policy import write

A, B, C = Provider("a", 50.0), Provider("b", 50.0), Provider("c", 50.0)
ESTIMATES: dict[str, tuple[float | None, float | None]] = {
    "a": (300.0, 0.01),
    "b": (100.0, 0.05),
    "c": (200.0, 0.002),
}


def choose(strategy: Strategy, *, exploration: float = 0.0, seed: int = 3, **kw: Any) -> str:
    busy = kw.get("busy", {})
    estimates = kw.get("estimates", ESTIMATES)
    return pick(
        strategy,
        kw.get("providers", [A, B, C]),
        random.Random(seed),
        expected=lambda name: estimates.get(name, (None, None)),
        busy=lambda name: busy.get(name, 0),
        exploration=exploration,
    ).name


def test_latency_picks_the_lowest_expected_latency() -> None:
    """Without exploration the latency strategy picks 'b' (100 ms) over 200 and 300 ms."""
    assert choose(Strategy.LATENCY) == "b"


def test_cost_picks_the_lowest_expected_cost() -> None:
    """Without exploration the cost strategy picks 'c' (0.002) over 0.01 and 0.05."""
    assert choose(Strategy.COST) == "c"


def test_a_provider_without_estimates_is_measured_first() -> None:
    """A provider with no latency estimate yet is picked before known ones."""
    estimates = {"a": (300.0, 0.01), "b": (100.0, 0.05)}
    assert choose(Strategy.LATENCY, estimates=estimates) == "c"


def test_equal_estimates_go_to_the_heavier_weight() -> None:
    """Two providers at the same latency: the one with the higher weight is picked."""
    heavy = Provider("c", 80.0)
    estimates = {"a": (100.0, None), "c": (100.0, None)}
    assert choose(Strategy.LATENCY, providers=[A, heavy], estimates=estimates) == "c"


def test_exploration_shares_picks_by_weight() -> None:
    """With exploration 0.3, 10,000 latency picks: the best gets ~0.7 + 0.3/3, the others ~0.1."""
    rng = random.Random(11)
    picks = Counter(
        pick(
            Strategy.LATENCY,
            [A, B, C],
            rng,
            expected=lambda name: ESTIMATES[name],
            busy=lambda _: 0,
            exploration=0.3,
        ).name
        for _ in range(10_000)
    )
    assert 0.78 < picks["b"] / 10_000 < 0.82
    assert 0.08 < picks["a"] / 10_000 < 0.12
    assert 0.08 < picks["c"] / 10_000 < 0.12


def test_least_busy_picks_the_fewest_in_flight() -> None:
    """'c' with 1 assignment in flight is picked over 'a' (3) and 'b' (2)."""
    assert choose(Strategy.LEAST_BUSY, busy={"a": 3, "b": 2, "c": 1}) == "c"


def test_least_busy_ties_are_weighted_and_reproducible() -> None:
    """Tied providers share picks at random; the same seed gives the same sequence."""
    rng1, rng2 = random.Random(5), random.Random(5)

    busy = {"a": 0, "b": 0, "c": 9}

    def run(rng: random.Random) -> list[str]:
        return [
            pick(
                Strategy.LEAST_BUSY,
                [A, B, C],
                rng,
                expected=ESTIMATES.__getitem__,
                busy=busy.__getitem__,
            ).name
            for _ in range(200)
        ]

    first = run(rng1)
    assert first == run(rng2)
    assert set(first) == {"a", "b"}


def test_weighted_is_the_default_and_keeps_one_draw_per_pick() -> None:
    """The weighted strategy with seed 3 picks what one draw of Random(3) points at."""
    point = random.Random(3).random() * 150
    expected = "a" if point < 50 else "b" if point < 100 else "c"
    assert choose(Strategy.WEIGHTED) == expected


def test_in_flight_counts_until_the_result() -> None:
    """Two started on 'a', one finished (twice): 'a' has 1 in flight."""
    clock = Clock()
    flight = InFlight(clock)
    flight.started("x1", "a")
    flight.started("x1", "a")  # the same assignment pushed again
    flight.started("x2", "a")
    flight.finished("x1")
    flight.finished("x1")  # a redelivered result
    flight.finished("unknown")
    assert flight.count("a") == 1


def test_in_flight_forgets_an_assignment_without_a_result() -> None:
    """An assignment whose result never comes stops counting after IN_FLIGHT_TTL_S."""
    clock = Clock()
    flight = InFlight(clock)
    flight.started("x1", "a")
    clock.now += IN_FLIGHT_TTL_S
    assert flight.count("a") == 0


def test_in_flight_is_bounded() -> None:
    """Beyond max_entries the oldest assignment stops counting."""
    flight = InFlight(Clock(), max_entries=2)
    for name in ("x1", "x2", "x3"):
        flight.started(name, "a")
    flight.finished("x1")  # already forgotten: no effect
    assert flight.count("a") == 2


def test_policy_strategy_is_parsed_and_checked(tmp_path: Path) -> None:
    """'strategy': 'cost' with exploration 0.2 loads; an unknown strategy names the field."""
    decider, *_ = make(
        tmp_path,
        {"providers": [{"name": "a", "weight": 1}], "strategy": "cost", "exploration": 0.2},
    )
    policy = decider.policies.get("acme")
    assert policy is not None and (policy.strategy, policy.exploration) == (Strategy.COST, 0.2)
    write(tmp_path, "acme", "default", {"providers": [{"name": "a", "weight": 1}], "strategy": "x"})
    with pytest.raises(PolicyError) as caught:
        decider.policies.reload()
    assert caught.value.field == "strategy"


def test_decider_answers_with_the_strategy_as_reason(tmp_path: Path) -> None:
    """A latency policy with static estimates picks the faster provider, reason 'latency'."""
    policy = {
        "providers": [
            {"name": "slow", "weight": 50, "expected_latency_ms": 900},
            {"name": "fast", "weight": 50, "expected_latency_ms": 90},
        ],
        "strategy": "latency",
        "exploration": 0,
    }
    decider, *_ = make(tmp_path, policy)
    decision = decider.decide(request())
    assert (decision.provider_id, decision.reason) == ("fast", DecisionReason.LATENCY)


def test_least_busy_decider_spreads_unanswered_assignments(tmp_path: Path) -> None:
    """Six least_busy decides with no results spread 2/2/2 over three providers."""
    policy = {
        "providers": [{"name": n, "weight": 10} for n in ("a", "b", "c")],
        "strategy": "least_busy",
    }
    decider, health, *_ = make(tmp_path, policy)
    picks = []
    for index in range(6):
        name = decider.decide(request()).provider_id
        health.in_flight.started(f"x{index}", name)
        picks.append(name)
    assert Counter(picks) == {"a": 2, "b": 2, "c": 2}


def test_latency_strategy_follows_the_faster_provider_and_back(tmp_path: Path) -> None:
    """Simulation: traffic moves to 'b' while 'a' is slow, and back to 'a' once it recovers."""
    policy = {
        "providers": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
        "strategy": "latency",
        "exploration": 0.1,
    }
    decider, health, *_ = make(tmp_path, policy, seed=21)
    latency = {"a": 50.0, "b": 120.0}

    def run(decides: int) -> Counter[str]:
        picks: Counter[str] = Counter()
        for _ in range(decides):
            name = decider.decide(request()).provider_id
            picks[name] += 1
            health.record(name, True, latency[name], 0.01)
        return picks

    run(50)  # both measured; 'a' is faster
    assert run(200)["a"] > 170
    latency["a"] = 400.0  # 'a' degrades: its results pull its estimate up
    run(100)
    assert run(200)["b"] > 170
    latency["a"] = 40.0  # 'a' recovers: only exploration measures it again
    run(300)
    assert run(200)["a"] > 170
