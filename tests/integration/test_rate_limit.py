"""A policy's rate limit against a real nats-server: 429 with Retry-After, NATS error reply."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from natsrouter.embedded import NatsServer
from tests.conftest import RouterFactory, write_policy
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import rmetric
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import wait_for
from tests.integration.test_router_decide import decide_request, nats_decide
from tests.integration.test_shared_repeat import decides_reads

pytestmark = pytest.mark.integration

LIMITED = {
    "providers": [{"name": "a", "weight": 1}],
    # 0.01 a second: no token comes back while the test runs.
    "rate_limit": {"enabled": True, "requests_per_second": 0.01, "burst": 2},
}


async def http_decide_full(port: int, body: bytes) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/v1/decide", data=body) as resp,
    ):
        return resp.status, dict(resp.headers), json.loads(await resp.read())


async def test_decides_beyond_the_limit_are_refused_over_http_and_nats(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Burst 2: the 3rd decide gets 429 + Retry-After 100, the 4th a NATS error; both counted."""
    write_policy(policies_dir, "acme", "limited", LIMITED)
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)

    def body(n: int) -> bytes:
        return json.dumps(decide_request(request_id=f"r{n}", policy_id="limited")).encode()

    for n in range(2):
        status, _, answer = await http_decide_full(router.http.port, body(n))
        assert (status, answer["ok"]) == (200, True)
    status, headers, answer = await http_decide_full(router.http.port, body(2))
    assert status == 429
    assert headers["Retry-After"] == "100"
    assert answer["error"]["code"] == "rate_limit_exceeded"
    assert answer["error"]["details"]["policy_id"] == "limited"
    reply = await nats_decide(nats_server.url, body(3))
    assert (reply["ok"], reply["error"]["code"]) == (False, "rate_limit_exceeded")
    assert reply["context"]["request_id"] == "r3"
    assert rmetric(router, "router_rate_limited_total", tenant_id="acme", policy_id="limited") == 2
    assert rmetric(router, "router_decide_total", outcome="rate_limit_exceeded") == 2
    # The other policy of the tenant is not limited.
    status, _, _ = await http_decide_full(router.http.port, json.dumps(decide_request()).encode())
    assert status == 200


def limited_push(request_id: str) -> bytes:
    body = decide_request(request_id=request_id, policy_id="limited", push_assignment=True)
    return json.dumps(body).encode()


async def test_a_repeat_on_the_same_router_takes_no_token_even_with_the_bucket_empty(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Burst 2: r0 twice and r1 pass, r2 is refused, and r0 sent again is its first answer."""
    write_policy(policies_dir, "acme", "limited", LIMITED)
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    port = router.http.port
    _, _, first = await http_decide_full(port, limited_push("r0"))
    statuses = [(await http_decide_full(port, limited_push(n)))[0] for n in ("r0", "r1", "r2")]
    status, _, again = await http_decide_full(port, limited_push("r0"))
    assert statuses == [200, 200, 429]
    assert (status, again["decision"]) == (200, first["decision"])
    assert rmetric(router, "router_rate_limited_total", tenant_id="acme", policy_id="limited") == 1


async def test_a_repeat_on_another_router_with_its_bucket_empty_gets_the_stored_answer(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Shared state: r0 on A; B spends its burst on r1, r2; r0 on B is A's answer, not a 429."""
    write_policy(policies_dir, "acme", "limited", LIMITED)
    a, b = [await make_router([nats_server.url], shared_state_enabled=True) for _ in range(2)]
    assert await a.link.wait_connected(5) and await b.link.wait_connected(5)
    _, _, first = await http_decide_full(a.http.port, limited_push("r0"))
    for n in ("r1", "r2"):
        assert (await http_decide_full(b.http.port, limited_push(n)))[0] == 200
    status, _, again = await http_decide_full(b.http.port, limited_push("r0"))
    assert (status, again["decision"]) == (200, first["decision"])
    assert rmetric(b, "router_rate_limited_total", tenant_id="acme", policy_id="limited") == 0
    stored = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert [m.headers["Nats-Msg-Id"] for m in stored].count(first["decision"]["assignment_id"]) == 1


async def test_a_repeat_on_another_router_gives_back_the_token_it_took(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Shared state: r0 on A, then r0, r1, r2 on B (burst 2): the repeat left B's token, all 200."""
    write_policy(policies_dir, "acme", "limited", LIMITED)
    a, b = [await make_router([nats_server.url], shared_state_enabled=True) for _ in range(2)]
    assert await a.link.wait_connected(5) and await b.link.wait_connected(5)
    await http_decide_full(a.http.port, limited_push("r0"))
    statuses = [
        (await http_decide_full(b.http.port, limited_push(n)))[0] for n in ("r0", "r1", "r2")
    ]
    assert statuses == [200, 200, 200]
    assert rmetric(b, "router_decide_replayed_total") == 1


async def test_refused_decides_read_the_stored_answers_at_most_at_the_policy_rate(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """Shared state, burst 2: 30 new decides over the limit make 2 stored-answer reads, not 30."""
    write_policy(policies_dir, "acme", "limited", LIMITED)
    router = await make_router([nats_server.url], shared_state_enabled=True)
    assert await router.link.wait_connected(5)
    bodies = [limited_push(f"r{n}") for n in range(32)]
    statuses, reads = await decides_reads(nats_server.url, router, bodies)
    assert statuses == [200] * 2 + [429] * 30
    assert reads == 2
    assert rmetric(router, "router_rate_limited_total", tenant_id="acme", policy_id="limited") == 30


async def test_a_repeat_holds_its_token_until_its_claim_returns(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path, proxy: TcpProxy
) -> None:
    """Burst 2, r0 answered by A: during r0's claim on B, r2 is refused; after it, r3 passes.

    The behaviour docs/policies.md describes (a repeat takes a token and gives it back when
    its claim finds the stored answer), with the claim's answer held by the proxy.
    """
    write_policy(policies_dir, "acme", "limited", LIMITED)
    a = await make_router([nats_server.url], shared_state_enabled=True)
    b = await make_router([proxy.url], shared_state_enabled=True)
    assert await a.link.wait_connected(5) and await b.link.wait_connected(5)

    def body(request_id: str) -> bytes:
        return json.dumps(decide_request(request_id=request_id, policy_id="limited")).encode()

    def kv_decides_sent() -> int:
        return proxy.sent.count(b"ROUTER_DECIDES")

    _, _, first = await http_decide_full(a.http.port, body("r0"))
    assert (await http_decide_full(b.http.port, body("r1")))[0] == 200  # 1 token left
    before = kv_decides_sent()
    proxy.hold_replies()
    repeat = asyncio.create_task(http_decide_full(b.http.port, body("r0")))
    await wait_for(lambda: kv_decides_sent() > before, 5, "the repeat's claim sent")
    # r2 is refused a token, and reads the store for an answer: that read is held too.
    refused = asyncio.create_task(http_decide_full(b.http.port, body("r2")))
    await wait_for(lambda: kv_decides_sent() > before + 1, 5, "r2's stored-answer read sent")
    proxy.resume()
    (status, _, again), (refused_status, _, _) = await asyncio.gather(repeat, refused)
    assert (status, again["decision"], refused_status) == (200, first["decision"], 429)
    assert (await http_decide_full(b.http.port, body("r3")))[0] == 200  # the token came back
