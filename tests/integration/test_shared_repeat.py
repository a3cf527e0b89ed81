"""A repeat that another Router answered gets that answer when this Router cannot decide.

Two Routers in one test process on one real nats-server, sharing ``ROUTER_DECIDES``: A
answers a request; the same request sent again to B, whose own decide fails for a reason
the request did not cause (its breakers open, its estimates, its bucket), gets A's decision
and assignment id, and B's reads of the stored answers stay bounded per policy.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.routing.policy import RateLimitConfig
from natsrouter.service.router import Router
from tests.conftest import RouterFactory, write_policy
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import rmetric
from tests.helpers.waiting import ordered_flush
from tests.integration.test_router_decide import decide_request, http_decide

pytestmark = pytest.mark.integration

#: A breaker that stays open for the whole test once its failures are recorded.
BREAKER = {
    "enabled": True,
    "failure_threshold": 2,
    "success_threshold": 1,
    "timeout_ms": 600_000,
    "half_open_max_calls": 1,
}
GUARDED = {"providers": [{"name": "a", "weight": 1}], "circuit_breaker": BREAKER}
# 0.01 a second: no token comes back while the test runs.
LIMITED_GUARDED = {
    **GUARDED,
    "rate_limit": {"enabled": True, "requests_per_second": 0.01, "burst": 2},
}


def request(request_id: str, policy_id: str = "guarded", **overrides: Any) -> bytes:
    body = decide_request(
        request_id=request_id, policy_id=policy_id, push_assignment=True, **overrides
    )
    return json.dumps(body).encode()


async def two_routers(url: str, make_router: RouterFactory, **b_overrides: Any) -> list[Router]:
    a = await make_router([url], rng=random.Random(1), shared_state_enabled=True)
    b = await make_router([url], rng=random.Random(2), shared_state_enabled=True, **b_overrides)
    for router in (a, b):
        assert await router.link.wait_connected(5)
    return [a, b]


def open_breakers(router: Router) -> None:
    for _ in range(BREAKER["failure_threshold"]):
        router.health.record("a", False, 10.0, 0.0)


async def decides_reads(url: str, router: Router, bodies: list[bytes]) -> tuple[list[int], int]:
    """The statuses of ``bodies`` sent to ``router``, and the ROUTER_DECIDES reads they made."""
    watcher = await nats.connect(url)
    try:
        api = await watcher.subscribe("$JS.API.>")
        # The SUB is on the server before the decides (nats-py's PING could overtake it).
        await ordered_flush(watcher)
        statuses = [(await http_decide(router.http.port, body))[0] for body in bodies]
        await watcher.flush()  # every request the Router made is now in api's queue
        seen = [(await api.next_msg(timeout=1)).subject for _ in range(api.pending_msgs)]
    finally:
        await watcher.close()
    return statuses, len([s for s in seen if "KV_ROUTER_DECIDES" in s and ".GET." in s])


async def test_a_repeat_on_a_router_whose_breakers_are_open_gets_the_stored_answer(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """A answers r0; B's only breaker opens: r1 on B is decision_failed, r0 on B A's answer."""
    write_policy(policies_dir, "acme", "guarded", GUARDED)
    a, b = await two_routers(nats_server.url, make_router)
    _, first = await http_decide(a.http.port, request("r0"))
    open_breakers(b)
    new_status, new = await http_decide(b.http.port, request("r1"))
    status, again = await http_decide(b.http.port, request("r0", trace_id="retry"))
    assert (new_status, new["error"]["code"]) == (503, "decision_failed")
    assert (status, again["decision"]) == (200, first["decision"])
    assert again["context"] == {"request_id": "r0", "trace_id": "retry"}
    stored = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [first["decision"]["assignment_id"]]
    assert rmetric(b, "router_decide_total", outcome="decision_failed") == 1
    assert rmetric(b, "router_decide_replayed_total") == 1


async def test_a_repeat_whose_constraints_this_router_cannot_meet_gets_the_stored_answer(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """A answers r0 (max 100 ms, no estimate); B learnt 5000 ms: r0 on B is A's answer."""
    write_policy(policies_dir, "acme", "guarded", GUARDED)
    a, b = await two_routers(nats_server.url, make_router)
    fast = {"max_latency_ms": 100}
    _, first = await http_decide(a.http.port, request("r0", constraints=fast))
    b.health.record("a", True, 5000.0, 0.0)
    new_status, new = await http_decide(b.http.port, request("r1", constraints=fast))
    status, again = await http_decide(b.http.port, request("r0", constraints=fast))
    assert (new_status, new["error"]["code"]) == (422, "constraints_unsatisfiable")
    assert (status, again["decision"]) == (200, first["decision"])
    assert rmetric(b, "router_decide_replayed_total") == 1


async def test_a_repeat_of_a_policy_this_router_does_not_have_keeps_policy_not_found(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path, tmp_path: Path
) -> None:
    """A answers r0 with acme/guarded; B has no such policy: r0 on B is policy_not_found."""
    write_policy(policies_dir, "acme", "guarded", GUARDED)
    other = tmp_path / "other-policies"
    write_policy(other, "acme", "default", GUARDED)
    a, b = await two_routers(nats_server.url, make_router, policies_path=str(other))
    assert (await http_decide(a.http.port, request("r0")))[0] == 200
    statuses, reads = await decides_reads(nats_server.url, b, [request("r0")])
    assert (statuses, reads) == ([404], 0)
    assert rmetric(b, "router_decide_replayed_total") == 0


async def test_a_repeat_answered_after_its_decide_failed_gives_back_the_token_it_took(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Burst 2, B's breaker open: r0 on B is A's answer and B's bucket still holds 2 tokens."""
    write_policy(policies_dir, "acme", "guarded", LIMITED_GUARDED)
    a, b = await two_routers(nats_server.url, make_router)
    _, first = await http_decide(a.http.port, request("r0"))
    open_breakers(b)
    status, again = await http_decide(b.http.port, request("r0"))
    assert (status, again["decision"]) == (200, first["decision"])
    limit = RateLimitConfig(enabled=True, requests_per_second=0.01, burst=2)
    assert b.decider.rate_limits.headroom("acme", "guarded", limit) == 2


async def test_failing_decides_without_a_rate_limit_read_the_stored_answers_boundedly(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """No rate limit, breaker open, look-ups bounded to a burst of 3: 12 failures, 3 reads."""
    write_policy(policies_dir, "acme", "guarded", GUARDED)
    router = await make_router([nats_server.url], shared_state_enabled=True)
    assert await router.link.wait_connected(5)
    router.decider.rate_limits.unlimited_look_ups = RateLimitConfig(True, 0.01, 3)
    open_breakers(router)
    bodies = [request(f"r{n}") for n in range(12)]
    statuses, reads = await decides_reads(nats_server.url, router, bodies)
    assert (statuses, reads) == ([503] * 12, 3)


async def test_failing_and_refused_decides_share_the_policy_rate_for_their_reads(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Burst 2, breaker open: 2 decision_failed and 8 rate-limited decides make 2 reads."""
    write_policy(policies_dir, "acme", "guarded", LIMITED_GUARDED)
    router = await make_router([nats_server.url], shared_state_enabled=True)
    assert await router.link.wait_connected(5)
    open_breakers(router)
    bodies = [request(f"r{n}") for n in range(10)]
    statuses, reads = await decides_reads(nats_server.url, router, bodies)
    assert (statuses, reads) == ([503] * 2 + [429] * 8, 2)
