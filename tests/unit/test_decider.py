"""The decider: fallback rules, sticky sessions, weighted pick, breakers, constraints."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from natsrouter.routing.breaker import BreakerState
from natsrouter.routing.decider import (
    MAX_SESSION_CHARS,
    Decider,
    DecisionReason,
    StickySessions,
    matches,
    request_document,
)
from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.messages import DecideRequest, ErrorCode, RequestError, parse_decide_request
from natsrouter.routing.policy import PolicyStore
from tests.unit.test_policy import write


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(**overrides: Any) -> DecideRequest:
    doc: dict[str, Any] = {
        "version": "1",
        "request_id": "r1",
        "tenant_id": "acme",
        "task": {"type": "text", "payload": {}},
        **overrides,
    }
    return parse_decide_request(json.dumps(doc).encode(), 1 << 20)


def make(
    tmp_path: Path, policy: dict[str, Any], *, seed: int = 7
) -> tuple[Decider, ProviderHealth, Clock, list[tuple[str, BreakerState]]]:
    write(tmp_path, "acme", "default", policy)
    store = PolicyStore(tmp_path)
    store.reload()
    clock = Clock()
    states: list[tuple[str, BreakerState]] = []
    health = ProviderHealth(clock, on_state=lambda n, s: states.append((n, s)))
    health.configure(store.all())
    return Decider(store, health, rng=random.Random(seed), clock=clock), health, clock, states


TWO = {"providers": [{"name": "a", "weight": 75}, {"name": "b", "weight": 25}]}
BREAKER = {
    **TWO,
    "circuit_breaker": {
        "enabled": True,
        "failure_threshold": 2,
        "success_threshold": 1,
        "timeout_ms": 1000,
        "half_open_max_calls": 1,
    },
}


def test_weighted_pick_follows_the_weights(tmp_path: Path) -> None:
    """Over 4000 picks a 75/25 policy gives 'a' between 72% and 78% of them."""
    decider, *_ = make(tmp_path, TWO)
    picks = Counter(decider.decide(request()).provider_id for _ in range(4000))
    assert 0.72 < picks["a"] / 4000 < 0.78
    assert picks["a"] + picks["b"] == 4000


def test_the_common_path_decides_as_the_strategy_pick_does(tmp_path: Path) -> None:
    """Weighted, no constraints, no breaker: 2,000 decisions equal those, for the same draws,
    of the same policy with a (closed) breaker, which picks through strategies.pick."""
    providers = [
        {"name": "a", "weight": 60, "priority": 2, "expected_latency_ms": 40},
        {"name": "off", "weight": 0},
        {"name": "b", "weight": 25.5, "expected_cost": 0.25},
        {"name": "c", "weight": 14.5},
    ]
    common, *_ = make(tmp_path / "1", {"providers": providers}, seed=11)
    general, *_ = make(tmp_path / "2", {**BREAKER, "providers": providers}, seed=11)
    decided = [common.decide(request()) for _ in range(2000)]
    assert decided == [general.decide(request()) for _ in range(2000)]
    assert {d.provider_id for d in decided} == {"a", "b", "c"}
    assert {d.reason for d in decided} == {DecisionReason.WEIGHTED}


def test_same_seed_same_picks(tmp_path: Path) -> None:
    """The random source is injected: one seed, one sequence of decisions."""
    first, *_ = make(tmp_path / "1", TWO, seed=3)
    second, *_ = make(tmp_path / "2", TWO, seed=3)
    assert [first.decide(request()).provider_id for _ in range(50)] == [
        second.decide(request()).provider_id for _ in range(50)
    ]


def test_zero_weight_provider_is_never_picked(tmp_path: Path) -> None:
    """Weight 0 keeps a provider out of the weighted pick."""
    decider, *_ = make(
        tmp_path, {"providers": [{"name": "a", "weight": 0}, {"name": "b", "weight": 1}]}
    )
    assert {decider.decide(request()).provider_id for _ in range(200)} == {"b"}


def test_all_weights_zero_is_decision_failed(tmp_path: Path) -> None:
    """No provider with weight: decision_failed naming the policy's providers."""
    decider, *_ = make(tmp_path, {"providers": [{"name": "a", "weight": 0}]})
    with pytest.raises(RequestError) as caught:
        decider.decide(request())
    assert caught.value.code is ErrorCode.DECISION_FAILED
    assert caught.value.details == {"policy_id": "default", "providers": ["a"]}


def test_unknown_policy_is_policy_not_found(tmp_path: Path) -> None:
    """A policy_id with no file is policy_not_found with tenant and policy named."""
    decider, *_ = make(tmp_path, TWO)
    with pytest.raises(RequestError) as caught:
        decider.decide(request(policy_id="premium"))
    assert caught.value.code is ErrorCode.POLICY_NOT_FOUND
    assert caught.value.details == {"tenant_id": "acme", "policy_id": "premium"}


def test_decision_carries_policy_values(tmp_path: Path) -> None:
    """priority and the static estimates of the chosen provider are in the decision."""
    policy = {
        "providers": [
            {
                "name": "a",
                "weight": 1,
                "priority": 7,
                "expected_latency_ms": 120,
                "expected_cost": 0.5,
            }
        ]
    }
    decider, *_ = make(tmp_path, policy)
    decision = decider.decide(request())
    assert decision.to_dict() == {
        "provider_id": "a",
        "priority": 7,
        "expected_latency_ms": 120,
        "expected_cost": 0.5,
        "reason": "weighted",
        "policy_id": "default",
        "fallback_used": False,
    }


def test_fallback_rule_matching_the_request_wins(tmp_path: Path) -> None:
    """A rule on task.type sends image tasks to its provider, with fallback_used and retry."""
    policy = {**TWO, "fallbacks": [{"when": {"task.type": ["image"]}, "to": "local", "retry": 2}]}
    decider, *_ = make(tmp_path, policy)
    decision = decider.decide(request(task={"type": "image", "payload_ref": "s3://x"}))
    assert (decision.provider_id, decision.reason, decision.fallback_used, decision.retry) == (
        "local",
        DecisionReason.FALLBACK,
        True,
        2,
    )
    assert decider.decide(request()).reason is DecisionReason.WEIGHTED


def test_bare_when_key_reads_metadata() -> None:
    """{"status": "timeout"} matches metadata.status; types are compared strictly."""
    doc = request_document(request(metadata={"status": "timeout", "n": 1, "flag": True}))
    assert matches({"status": ("timeout", "5xx")}, doc)
    assert not matches({"status": ("ok",)}, doc)
    assert matches({"metadata.n": (1,)}, doc)
    assert not matches({"metadata.n": (True,)}, doc)
    assert not matches({"flag": (1,)}, doc)
    assert not matches({"missing.path": ("x",)}, doc)
    assert matches({"tenant_id": ("acme",), "task.type": ("text",)}, doc)


def test_sticky_session_keeps_its_provider_until_the_ttl(tmp_path: Path) -> None:
    """Same session, same provider (reason sticky) until ttl_seconds have passed."""
    policy = {**TWO, "sticky": {"enabled": True, "session_key": "sid", "ttl_seconds": 60}}
    decider, _, clock, _ = make(tmp_path, policy)
    first = decider.decide(request(metadata={"sid": "s1"}))
    assert first.reason is DecisionReason.WEIGHTED
    again = [decider.decide(request(metadata={"sid": "s1"})) for _ in range(30)]
    assert {(d.provider_id, d.reason) for d in again} == {
        (first.provider_id, DecisionReason.STICKY)
    }
    clock.now += 60
    assert decider.decide(request(metadata={"sid": "s1"})).reason is DecisionReason.WEIGHTED


def test_open_breaker_removes_the_provider_from_the_pick(tmp_path: Path) -> None:
    """Two failures open 'a': every decision goes to 'b' as circuit_breaker_fallback."""
    decider, health, _, states = make(tmp_path, BREAKER)
    health.record("a", False, 0, 0)
    health.record("a", False, 0, 0)
    assert states[-1] == ("a", BreakerState.OPEN)
    assert states.count(("a", BreakerState.OPEN)) == 1
    reasons = {(d.provider_id, d.reason) for d in (decider.decide(request()) for _ in range(100))}
    assert reasons == {("b", DecisionReason.CIRCUIT_BREAKER_FALLBACK)}


def test_half_open_breaker_allows_one_trial_then_closes_on_success(tmp_path: Path) -> None:
    """After timeout_ms one decision may go to 'a'; a success closes the breaker."""
    decider, health, clock, states = make(tmp_path, BREAKER, seed=1)
    health.record("a", False, 0, 0)
    health.record("a", False, 0, 0)
    clock.now += 1.0
    picks = [decider.decide(request()).provider_id for _ in range(100)]
    assert picks.count("a") == 1
    health.record("a", True, 10, 1)
    assert health.state("a") is BreakerState.CLOSED
    assert states[-1] == ("a", BreakerState.CLOSED)


def test_sticky_provider_with_open_breaker_is_replaced(tmp_path: Path) -> None:
    """The session moves to a healthy provider and stays there."""
    policy = {**BREAKER, "sticky": {"enabled": True, "session_key": "sid", "ttl_seconds": 600}}
    decider, health, _, _ = make(tmp_path, policy, seed=2)
    first = decider.decide(request(metadata={"sid": "s"})).provider_id
    health.record(first, False, 0, 0)
    health.record(first, False, 0, 0)
    moved = decider.decide(request(metadata={"sid": "s"}))
    assert moved.provider_id != first
    assert moved.reason is DecisionReason.CIRCUIT_BREAKER_FALLBACK
    assert decider.decide(request(metadata={"sid": "s"})).reason is DecisionReason.STICKY


def test_every_breaker_open_is_decision_failed(tmp_path: Path) -> None:
    """With both providers open there is nobody to pick."""
    decider, health, _, _ = make(tmp_path, BREAKER)
    for name in ("a", "b"):
        health.record(name, False, 0, 0)
        health.record(name, False, 0, 0)
    with pytest.raises(RequestError) as caught:
        decider.decide(request())
    assert caught.value.code is ErrorCode.DECISION_FAILED
    assert "circuit breakers open" in caught.value.message


def test_constraints_leave_out_providers_known_to_exceed_them(tmp_path: Path) -> None:
    """max_latency_ms excludes the slow provider; unknown estimates do not exclude."""
    policy = {
        "providers": [
            {"name": "slow", "weight": 99, "expected_latency_ms": 900},
            {"name": "fast", "weight": 1, "expected_latency_ms": 50},
            {"name": "unknown", "weight": 1},
        ]
    }
    decider, *_ = make(tmp_path, policy)
    picks = {
        decider.decide(request(constraints={"max_latency_ms": 100})).provider_id for _ in range(200)
    }
    assert picks == {"fast", "unknown"}


def test_results_teach_the_estimates(tmp_path: Path) -> None:
    """The first success sets latency and cost; later ones move them by a fifth."""
    decider, health, _, _ = make(tmp_path, {"providers": [{"name": "a", "weight": 1}]})
    assert decider.decide(request()).expected_latency_ms is None
    health.record("a", True, 100, 2.0)
    health.record("a", True, 200, 4.0)
    decision = decider.decide(request())
    assert (decision.expected_latency_ms, decision.expected_cost) == (120.0, 2.4)


def test_sticky_table_is_bounded_and_forgets_the_least_recent() -> None:
    """Past its bound the table drops the least recently used session."""
    clock = Clock()
    table = StickySessions(clock, max_sessions=2)
    table.put(("t", "p", "1"), "a", 60)
    table.put(("t", "p", "2"), "b", 60)
    assert table.get(("t", "p", "1")) == "a"
    table.put(("t", "p", "3"), "c", 60)
    assert (table.get(("t", "p", "2")), len(table)) == (None, 2)


def test_breaker_config_survives_a_reload_with_the_same_thresholds(tmp_path: Path) -> None:
    """An open breaker stays open when the policy set is reloaded unchanged."""
    decider, health, _, _ = make(tmp_path, BREAKER)
    health.record("a", False, 0, 0)
    health.record("a", False, 0, 0)
    health.configure(decider.policies.all())
    assert health.state("a") is BreakerState.OPEN


def test_constraints_no_provider_can_meet_are_the_clients_problem(tmp_path: Path) -> None:
    """max_cost below every provider's estimate: constraints_unsatisfiable (422)."""
    policy = {
        "providers": [
            {"name": "a", "weight": 1, "expected_cost": 0.5},
            {"name": "b", "weight": 1, "expected_cost": 0.2},
        ]
    }
    decider, *_ = make(tmp_path, policy)
    with pytest.raises(RequestError) as caught:
        decider.decide(request(constraints={"max_cost": 0.1}))
    assert (caught.value.code, caught.value.code.http_status) == (
        ErrorCode.CONSTRAINTS_UNSATISFIABLE,
        422,
    )
    assert caught.value.details == {
        "field": "constraints",
        "policy_id": "default",
        "providers": ["a", "b"],
    }


def test_open_breakers_are_decision_failed_with_the_time_until_one_is_tried(
    tmp_path: Path,
) -> None:
    """Both breakers open: decision_failed, retry_after_s = seconds until the first half-opens."""
    decider, health, clock, _ = make(
        tmp_path,
        {**BREAKER, "circuit_breaker": {**BREAKER["circuit_breaker"], "timeout_ms": 30_000}},
    )
    for name in ("a", "b"):
        health.record(name, False, 0, 0)
        health.record(name, False, 0, 0)
        clock.now += 10
    with pytest.raises(RequestError) as caught:
        decider.decide(request())
    assert caught.value.code is ErrorCode.DECISION_FAILED
    assert caught.value.details["retry_after_s"] == 10


def test_a_session_value_over_the_limit_is_not_sticky_and_counted(tmp_path: Path) -> None:
    """257 characters: decided by weight, not remembered, counted; 256 are sticky."""
    write(tmp_path, "acme", "default", {**TWO, "sticky": {"enabled": True}})
    store = PolicyStore(tmp_path)
    store.reload()
    skipped: list[int] = []
    decider = Decider(
        store, ProviderHealth(), rng=random.Random(1), on_session_too_long=lambda: skipped.append(1)
    )
    decider.decide(request(metadata={"session_id": "x" * 257}))
    assert (len(decider.sticky), skipped) == (0, [1])
    decider.decide(request(metadata={"session_id": "x" * MAX_SESSION_CHARS}))
    assert decider.decide(request(metadata={"session_id": "x" * 256})).reason.value == "sticky"
