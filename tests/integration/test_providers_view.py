"""The providers view against a real nats-server: GET /v1/providers and the NATS admin subject."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.service.providers import ADMIN_SUBJECT
from natsrouter.service.router import Router
from tests.conftest import RouterFactory, write_policy
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker
from tests.integration.test_router_decide import decide_request, http_decide

pytestmark = pytest.mark.integration

BUSY = {
    "providers": [
        {"name": "a", "weight": 50, "expected_latency_ms": 200, "expected_cost": 0.5},
        {"name": "b", "weight": 50},
    ],
    "strategy": "least_busy",
    "rate_limit": {"enabled": True, "requests_per_second": 0.01, "burst": 5},
    "circuit_breaker": {"enabled": True, "failure_threshold": 1, "timeout_ms": 60000},
}
ACME_TOKEN = "acme-token-0123456789"


async def get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp,
    ):
        return resp.status, json.loads(await resp.read())


async def nats_view(url: str, body: bytes = b"") -> Any:
    nc = await nats.connect(url)
    try:
        reply = await nc.request(ADMIN_SUBJECT, body, timeout=5)
    finally:
        await nc.close()
    return json.loads(reply.data)


def provider(view: dict[str, Any], policy_id: str, name: str) -> dict[str, Any]:
    policy = next(p for p in view["policies"] if p["policy_id"] == policy_id)
    return next(p for p in policy["providers"] if p["provider_id"] == name)


async def test_view_shows_in_flight_breaker_estimates_and_headroom(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """One pushed assignment is in flight until its result; a failure opens the breaker."""
    write_policy(policies_dir, "acme", "busy", BUSY)
    router: Router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    try:
        body = decide_request(policy_id="busy", push_assignment=True)
        status, answer = await http_decide(router.http.port, json.dumps(body).encode())
        assert status == 200
        chosen = answer["decision"]["provider_id"]
        status, view = await get(router.http.port, "/v1/providers?policy_id=busy")
        assert status == 200
        assert view["instance_id"] == router.nats_service.id
        [policy] = view["policies"]
        assert (policy["tenant_id"], policy["strategy"]) == ("acme", "least_busy")
        assert policy["rate_limit"] == {"requests_per_second": 0.01, "burst": 5, "headroom": 4}
        assert provider(view, "busy", chosen)["in_flight"] == 1
        assert provider(view, "busy", "a")["breaker_state"] == "closed"
        assert provider(view, "busy", "a")["expected_latency_ms"] == 200
        assert provider(view, "busy", "b")["expected_cost"] is None

        [(assignment, _)] = await worker.assignments(1)
        await worker.result(assignment, "error")
        await wait_for(
            lambda: router.health.in_flight.count(chosen) == 0, 5, "the result to be consumed"
        )
        over_nats = await nats_view(nats_server.url, b'{"tenant_id":"acme","policy_id":"busy"}')
        assert provider(over_nats, "busy", chosen)["in_flight"] == 0
        assert provider(over_nats, "busy", chosen)["breaker_state"] == "open"
        assert [p["policy_id"] for p in over_nats["policies"]] == ["busy"]
        # The default policy has no rate limit: no headroom to show.
        everything = await nats_view(nats_server.url)
        assert {p["policy_id"]: p["rate_limit"] for p in everything["policies"]} == {
            "busy": {"requests_per_second": 0.01, "burst": 5, "headroom": 4},
            "default": None,
        }
    finally:
        await worker.close()


async def test_view_refuses_an_unknown_filter_naming_it(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """A body with 'tenant' over NATS, or ?tenant= over HTTP: invalid_request naming 'tenant'."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    answer = await nats_view(nats_server.url, b'{"tenant":"acme"}')
    assert (answer["error"]["code"], answer["error"]["details"]) == (
        "invalid_request",
        {"field": "tenant"},
    )
    status, body = await get(router.http.port, "/v1/providers?tenant=acme")
    assert (status, body["error"]["details"]) == (400, {"field": "tenant"})


async def test_view_needs_a_decide_token_and_shows_only_its_tenants(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path, tmp_path: Path
) -> None:
    """With decide tokens: no token is 401; an acme token sees acme's policies only."""
    write_policy(policies_dir, "globex", "default", BUSY)
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'[[token]]\ntoken = "{ACME_TOKEN}"\ntenants = ["acme"]\n')
    router = await make_router([nats_server.url], decide_tokens_file=str(tokens))
    assert await router.link.wait_connected(5)
    status, body = await get(router.http.port, "/v1/providers")
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    status, view = await get(router.http.port, "/v1/providers", ACME_TOKEN)
    assert status == 200
    assert [(p["tenant_id"], p["policy_id"]) for p in view["policies"]] == [("acme", "default")]
