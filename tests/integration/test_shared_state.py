"""Shared state between Router processes (decide idempotency, sticky sessions, breakers).

Two Routers in one test process, each with its own link, on one real nats-server: what one
stores in the key-value buckets the other reads. The three-process proof on a cluster is
tests/integration/test_many_routers.py.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.routing.breaker import BreakerState
from natsrouter.routing.messages import parse_decide_request
from natsrouter.service.remembered import asked
from natsrouter.service.router import Router
from natsrouter.service.shared_state import fingerprint, key_of
from tests.conftest import TWO_PROVIDERS, RouterFactory, write_policy
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import rmetric
from tests.helpers.waiting import wait_for
from tests.integration.test_router_decide import decide_request, http_decide, nats_decide

pytestmark = pytest.mark.integration

SHARED = {"shared_state_enabled": True}


def push(**overrides: object) -> bytes:
    return json.dumps(decide_request(push_assignment=True, **overrides)).encode()


async def two_routers(url: str, make_router: RouterFactory, **overrides: object) -> list[Router]:
    # Different seeds: left alone the two would pick differently for a new session.
    routers = [
        await make_router([url], rng=random.Random(seed), **SHARED, **overrides) for seed in (1, 2)
    ]
    for router in routers:
        assert await router.link.wait_connected(5)
    return routers


async def test_a_decide_retried_on_another_router_gets_the_same_assignment_stored_once(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Router A decides and pushes; the same request on Router B: same answer, one stored."""
    a, b = await two_routers(nats_server.url, make_router)
    _, first = await http_decide(a.http.port, push())
    _, second = await http_decide(b.http.port, push(trace_id="retry"))
    assert first["decision"] == second["decision"]
    stored = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [first["decision"]["assignment_id"]]
    assert rmetric(b, "router_decide_replayed_total") == 1


async def test_racing_copies_on_two_routers_agree_on_one_assignment(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Ten request ids, each sent to both Routers at once: one assignment per id, stored once."""
    a, b = await two_routers(nats_server.url, make_router)
    for n in range(10):
        answers = await asyncio.gather(
            http_decide(a.http.port, push(request_id=f"race-{n}")),
            http_decide(b.http.port, push(request_id=f"race-{n}")),
        )
        ids = {body["decision"]["assignment_id"] for _, body in answers}
        assert len(ids) == 1
    assert len(await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")) == 10


async def test_a_request_id_reused_for_another_request_on_another_router_is_refused(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """The same request id with another task on Router B: invalid_request naming request_id."""
    a, b = await two_routers(nats_server.url, make_router)
    await http_decide(a.http.port, push())
    other = push(task={"type": "image", "payload": {"prompt": "hi"}})
    status, body = await http_decide(b.http.port, other)
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert body["error"]["details"] == {"field": "request_id"}


async def test_a_session_sticks_to_one_provider_whichever_router_answers(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Twenty sessions, each asked alternately of two Routers six times: one provider each."""
    write_policy(policies_dir, "acme", "default", {**TWO_PROVIDERS, "sticky": {"enabled": True}})
    routers = await two_routers(nats_server.url, make_router)
    for session in range(20):
        providers = set()
        for n in range(6):
            metadata = {"session_id": f"{session}"}
            body = decide_request(request_id=f"s{session}-{n}", metadata=metadata)
            _, answer = await http_decide(routers[n % 2].http.port, json.dumps(body).encode())
            providers.add(answer["decision"]["provider_id"])
        assert len(providers) == 1, f"session {session} split: {providers}"


async def test_a_breaker_opened_on_one_router_is_open_on_the_other_within_the_sync_interval(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """A's breaker for provider a opens; B's opens within shared_state_breaker_sync_ms."""
    a, b = await two_routers(nats_server.url, make_router, shared_state_breaker_sync_ms=200)
    for _ in range(2):  # failure_threshold of TWO_PROVIDERS
        a.health.record("a", False, 10.0, 0.0)
    assert a.health.state("a") is BreakerState.OPEN
    await wait_for(lambda: b.health.state("a") is BreakerState.OPEN, 2.0)
    assert rmetric(b, "router_circuit_breaker_state", provider="a") == 1.0


async def test_with_nats_down_a_router_decides_with_its_own_state_and_says_so(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """NATS stopped: decides still answer; counted, available gauge 0, /status says why."""
    (a, _) = await two_routers(nats_server.url, make_router)
    nats_server.kill()
    await wait_for(lambda: not a.link.ready, 5.0)
    status, body = await http_decide(a.http.port, push())
    assert status == 200 and body["assignment"]["outcome"] == "queued"
    assert rmetric(a, "router_shared_state_unavailable_total", operation="decision_claim") == 1
    assert rmetric(a, "router_shared_state_available") == 0
    assert a.link.status()["shared_state"]["available"] is False


async def test_with_nats_down_and_no_decide_the_breaker_sync_says_shared_state_is_unavailable(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """NATS stopped, no decide sent: the next breaker read makes the gauge 0 and logs it."""
    (a, _) = await two_routers(nats_server.url, make_router, shared_state_breaker_sync_ms=100)
    assert rmetric(a, "router_shared_state_available") == 1
    nats_server.kill()
    await wait_for(lambda: rmetric(a, "router_shared_state_available") == 0, 3.0)
    assert rmetric(a, "router_shared_state_unavailable_total", operation="breaker_read") >= 1
    # not_connected, or connection_closed when the read was on the wire as the server died
    assert a.link.status()["shared_state"]["last_error"].startswith("breaker_read: ")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("provider_id", 5),
        ("policy_id", None),
        ("priority", "high"),
        ("expected_cost", [1]),
        ("fallback_used", 5),
        ("retry", "twice"),
    ],
)
async def test_a_stored_decision_of_the_wrong_type_is_an_invalid_value_and_is_answered(
    nats_server: NatsServer, make_router: RouterFactory, field: str, value: object
) -> None:
    """A stored answer with a field of another type: decided here, answered over NATS."""
    router = await make_router([nats_server.url], **SHARED)
    assert await router.link.wait_connected(5)
    raw = json.dumps(decide_request()).encode()
    decision = {
        "provider_id": "a",
        "priority": 0,
        "expected_latency_ms": None,
        "expected_cost": None,
        "reason": "weighted",
        "policy_id": "default",
        "fallback_used": False,
        "retry": 0,
        field: value,
    }
    stored = {
        "asked": fingerprint(asked(parse_decide_request(raw, 10_000))),
        "assignment_id": "as-1",
        "decision": decision,
    }
    key = key_of("acme", "req-1")
    await router.link.kv_put("ROUTER_DECIDES", key, json.dumps(stored).encode())
    answer = await nats_decide(nats_server.url, raw)
    assert answer["decision"]["provider_id"] in {"a", "b"}
    assert router.link.status()["shared_state"]["last_error"] == "decision_claim: invalid_value"
