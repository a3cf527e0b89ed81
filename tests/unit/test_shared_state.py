"""Shared state with a fake transport: codecs, and deciding on when the buckets fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.errors import NotConnectedError, OperationTimeoutError
from natsrouter.link.link import Link
from natsrouter.observability.metrics import SHARED_STATE_OPERATIONS, LinkMetrics, RouterMetrics
from natsrouter.routing.breaker import BreakerState
from natsrouter.routing.decider import Decision, DecisionReason
from natsrouter.routing.messages import DecideRequest, Task, parse_decide_request
from natsrouter.service.events import RouterEvents
from natsrouter.service.remembered import asked
from natsrouter.service.shared_decide import sticky_decide
from natsrouter.service.shared_state import (
    BreakerSync,
    SharedDecide,
    SharedOp,
    SharedState,
    fingerprint,
    key_of,
)
from tests.conftest import FAST
from tests.helpers.fake_transport import FakeServer, FakeTransport
from tests.helpers.waiting import wait_for
from tests.unit.test_decider import BREAKER, TWO, make, request


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


DECISION = Decision("a", DecisionReason.WEIGHTED, "default", 0, 120.0, 0.5, retry=2)


def mine(assignment_id: str = "id-1") -> SharedDecide:
    return SharedDecide("fp", DECISION, assignment_id)


async def shared_state(server: FakeServer, clock: Clock) -> tuple[SharedState, RouterMetrics]:
    settings = build_settings(
        {**FAST, "nats_url": "nats://fake:4222", "shared_state_enabled": True}
    )
    registry = CollectorRegistry()
    link = Link(settings, LinkMetrics(registry), transport=FakeTransport(server))
    metrics = RouterMetrics(registry)
    shared = SharedState(settings, link, RouterEvents(metrics), wall_clock=clock, clock=clock)
    await shared.start()
    await link.start()
    assert await link.wait_connected(2)
    return shared, metrics


def sample(metrics: RouterMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


def test_the_operation_label_values_are_the_shared_operations() -> None:
    """The metric's primed operations are exactly SharedOp's values."""
    assert set(SHARED_STATE_OPERATIONS) == {op.value for op in SharedOp}


def test_any_text_makes_a_key_a_lone_surrogate_too() -> None:
    """A session value with a lone surrogate gets its own key (no error), unlike its pair."""
    assert key_of("acme", "default", "s\ud800") != key_of("acme", "default", "s\udc00")


def test_a_stored_decision_reads_back_equal() -> None:
    """encode then decode keeps the decision (retry too) and the assignment id."""
    assert SharedDecide.decode(mine().encode()) == mine()


def test_a_stored_decision_of_numbers_a_policy_may_hold_reads_back_equal() -> None:
    """Priority and retry written 1.0 (a schema integer), estimates as ints: read back."""
    decision = Decision("a", DecisionReason.FALLBACK, "default", 1.0, 12, 0, True, 2.0)  # type: ignore[arg-type]
    stored = SharedDecide("fp", decision, "as-1")
    assert SharedDecide.decode(stored.encode()) == stored


def test_the_fingerprint_ignores_the_order_of_metadata_keys() -> None:
    """Two processes parsing {"x","y"} and {"y","x"} agree; another value does not."""
    task = ("text", None, {"p": 1})  # type, payload_ref, payload; then the two limits
    one = fingerprint(("default", *task, None, None, {"x": 1, "y": 2}, None))
    two = fingerprint(("default", *task, None, None, {"y": 2, "x": 1}, None))
    other = fingerprint(("default", *task, None, None, {"y": 3, "x": 1}, None))
    assert one == two != other


def test_the_fingerprint_of_a_request_without_metadata_is_that_of_empty_metadata() -> None:
    """A request built without metadata and one parsed with {} get one fingerprint."""
    raw = b'{"version":"1","request_id":"r","tenant_id":"t","task":{"type":"x","payload":null}}'
    parsed = parse_decide_request(raw, 10_000)
    built = DecideRequest("r", "t", Task("x"))
    assert asked(built) == asked(parsed)
    assert fingerprint(asked(built)) == fingerprint(asked(parsed))


async def test_the_first_claim_wins_and_a_second_gets_the_first(logs: list[Any]) -> None:
    """Two claims of one request id: both get the first's assignment id."""
    server, clock = FakeServer(), Clock()
    shared, _ = await shared_state(server, clock)
    first = await shared.claim_decide("acme", "req-1", mine("id-1"))
    second = await shared.claim_decide("acme", "req-1", mine("id-2"))
    assert first is not None and second is not None
    assert (first.assignment_id, second.assignment_id) == ("id-1", "id-1")


async def test_a_failing_bucket_is_skipped_for_the_retry_time_then_asked_again(
    logs: list[Any],
) -> None:
    """Timeout: None, counted, logged once, gauge 0; skipped for 1 s; then restored."""
    server, clock = FakeServer(), Clock()
    shared, metrics = await shared_state(server, clock)
    server.kv_error = OperationTimeoutError("no answer")
    assert await shared.claim_decide("acme", "req-1", mine()) is None
    clock.now = 0.5  # within shared_state_retry_ms: not asked
    server.kv_error = None
    assert await shared.claim_decide("acme", "req-2", mine()) is None
    assert server.kv["ROUTER_DECIDES"] == {}
    assert sample(metrics, "router_shared_state_unavailable_total", operation="decision_claim") == 2
    assert sample(metrics, "router_shared_state_available") == 0
    assert shared.status()["last_error"] == "decision_claim: timeout"
    clock.now = 1.5
    assert await shared.claim_decide("acme", "req-3", mine()) is not None
    assert sample(metrics, "router_shared_state_available") == 1
    codes = [e["error_code"] for e in logs if e.get("error_code", "").startswith("ROUTER_SHARED")]
    assert codes == ["ROUTER_SHARED_STATE_UNAVAILABLE", "ROUTER_SHARED_STATE_RESTORED"]


async def test_start_declares_the_three_buckets() -> None:
    """start() declares the three buckets; the connection creates them."""
    server = FakeServer()
    await shared_state(server, Clock())
    await wait_for(lambda: len(server.kv) == 3, 2.0)
    assert sorted(server.kv) == ["ROUTER_BREAKERS", "ROUTER_DECIDES", "ROUTER_STICKY"]


async def test_not_connected_is_counted_but_not_skipped(logs: list[Any]) -> None:
    """Not connected fails at once: the next decide asks again (no retry window)."""
    server, clock = FakeServer(), Clock()
    shared, metrics = await shared_state(server, clock)
    server.kv_error = NotConnectedError()
    assert await shared.claim_decide("acme", "req-1", mine()) is None
    server.kv_error = None
    assert await shared.claim_decide("acme", "req-2", mine()) is not None
    assert sample(metrics, "router_shared_state_unavailable_total", operation="decision_claim") == 1


SESSION = ("acme", "default", "s-1")


async def test_a_new_session_is_claimed_once_and_the_loser_gets_the_winner() -> None:
    """Two claims of a session nobody holds: the first provider stands for both."""
    server, clock = FakeServer(), Clock()
    shared, _ = await shared_state(server, clock)
    first = await shared.sticky_claim(SESSION, "a", 60, None)
    second = await shared.sticky_claim(SESSION, "b", 60, None)
    assert first is not None and second is not None
    assert (first.provider, second.provider) == ("a", "a")


async def test_a_session_whose_time_is_up_is_replaced() -> None:
    """Past its TTL the stored provider is not read, and a claim replaces it."""
    server, clock = FakeServer(), Clock()
    shared, _ = await shared_state(server, clock)
    await shared.sticky_claim(SESSION, "a", 60, None)
    clock.now = 61.0
    assert await shared.sticky_get(SESSION) is None
    claimed = await shared.sticky_claim(SESSION, "b", 60, None)
    held = await shared.sticky_get(SESSION)
    assert claimed is not None and held is not None
    assert (claimed.provider, held.provider, held.seconds_left) == ("b", "b", 60.0)


async def test_a_change_of_provider_loses_to_a_newer_live_choice() -> None:
    """Replacing the provider read, after another Router replaced it: theirs stands."""
    server, clock = FakeServer(), Clock()
    shared, _ = await shared_state(server, clock)
    await shared.sticky_claim(SESSION, "a", 60, None)
    seen = await shared.sticky_get(SESSION)
    assert seen is not None
    other = await shared.sticky_claim(SESSION, "b", 60, seen)  # another Router, first
    mine = await shared.sticky_claim(SESSION, "c", 60, seen)
    assert other is not None and mine is not None
    assert (other.provider, mine.provider) == ("b", "b")


async def test_a_failing_bucket_does_not_stop_the_others(logs: list[Any]) -> None:
    """Decides bucket timing out: claims skipped, sticky reads still asked; status per bucket."""
    server, clock = FakeServer(), Clock()
    shared, _ = await shared_state(server, clock)
    server.kv_refuse["ROUTER_DECIDES"] = OperationTimeoutError("electing a leader")
    assert await shared.claim_decide("acme", "req-1", mine()) is None
    assert await shared.sticky_claim(SESSION, "a", 60, None) is not None
    assert shared.status()["buckets"] == {
        "ROUTER_BREAKERS": True,
        "ROUTER_DECIDES": False,
        "ROUTER_STICKY": True,
    }
    unavailable = [e for e in logs if e.get("error_code") == "ROUTER_SHARED_STATE_UNAVAILABLE"]
    assert [e["bucket"] for e in unavailable] == ["ROUTER_DECIDES"]


@pytest.mark.parametrize(
    "value",
    [
        b'{"provider": "a", "until": 1e400}',
        b'{"provider": "a", "until": Infinity}',
        b'{"provider": "a", "until": true}',
        b'{"provider": {"x": 1}, "until": 100}',
        b"[" * 100_000 + b"]" * 100_000,
        b'"a"',
        b'{"provider": "a\\ud800", "until": 100}',
    ],
    ids=["1e400", "infinity", "bool", "provider-object", "deep", "not-object", "lone-surrogate"],
)
async def test_a_hostile_sticky_value_is_an_invalid_value_never_an_error(value: bytes) -> None:
    """A sticky value no Router writes: read as unavailable (invalid_value), nothing raised."""
    server, clock = FakeServer(), Clock()
    shared, _ = await shared_state(server, clock)
    await shared._link.kv_put("ROUTER_STICKY", key_of(*SESSION), value)
    assert await shared.sticky_get(SESSION) is None
    assert shared.status()["last_error"] == "sticky_read: invalid_value"


async def test_a_session_stored_by_a_clock_ahead_is_kept_here_no_longer_than_its_ttl(
    tmp_path: Path,
) -> None:
    """A stored end an hour ahead (the writer's clock): the local session lasts ttl_seconds."""
    policy = {**TWO, "sticky": {"enabled": True, "session_key": "sid", "ttl_seconds": 60}}
    decider, _, decider_clock, _ = make(tmp_path, policy)
    server, clock = FakeServer(), Clock()
    shared, _ = await shared_state(server, clock)
    asking = request(metadata={"sid": "s1"})
    session = decider.session_of(asking)
    assert session is not None
    ahead = json.dumps({"provider": "b", "until": clock.now + 3600}).encode()
    await shared._link.kv_put("ROUTER_STICKY", key_of(*session[0]), ahead)
    assert (await sticky_decide(shared, decider, asking)).provider_id == "b"
    decider_clock.now += 61
    assert decider.decide(asking).reason is DecisionReason.WEIGHTED


async def test_one_breaker_record_opens_the_breaker_once_whatever_its_end_time(
    tmp_path: Path,
) -> None:
    """A record ending an hour ahead (the writer's clock): opened once, then half-open stays."""
    _, health, health_clock, _ = make(tmp_path, BREAKER)
    server, clock = FakeServer(), Clock()
    shared, _ = await shared_state(server, clock)
    sync = BreakerSync(shared, health, 1.0)
    ahead = json.dumps({"until": clock.now + 3600}).encode()
    await shared._link.kv_put("ROUTER_BREAKERS", key_of("a"), ahead)
    await sync.sync_once()
    assert health.state("a") is BreakerState.OPEN
    health_clock.now += 1.5  # past the policy's timeout_ms
    await sync.sync_once()
    assert health.state("a") is BreakerState.HALF_OPEN


async def test_a_stored_answer_reads_back_and_a_request_never_answered_reads_none() -> None:
    """stored_decide: the claimed answer for req-1, None for req-2 (nothing counted)."""
    server, clock = FakeServer(), Clock()
    shared, metrics = await shared_state(server, clock)
    await shared.claim_decide("acme", "req-1", mine("id-1"))
    assert await shared.stored_decide("acme", "req-1") == mine("id-1")
    assert await shared.stored_decide("acme", "req-2") is None
    assert sample(metrics, "router_shared_state_unavailable_total", operation="decision_read") == 0
