"""Three `natsrouter run` processes on a three-node cluster act as one Router.

R3 streams and R3 key-value buckets (``jetstream_stream_replicas = 3``,
``shared_state_enabled``), each Router connected first to a different node. Proves, over
real processes: a session sticks to one provider whichever Router answers; a decide retried
on another Router gets the same assignment, stored once; a breaker opened from the results
one Router consumed is respected by the others within ``shared_state_breaker_sync_ms`` plus
one round trip (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from tests.helpers.cluster import NatsCluster, running_cluster
from tests.helpers.jetstream import bucket_facts, stored_messages
from tests.helpers.process import RouterProcess

pytestmark = pytest.mark.integration

POLICY = {
    "providers": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
    "sticky": {"enabled": True},
    "circuit_breaker": {
        "enabled": True,
        "failure_threshold": 2,
        "success_threshold": 1,
        "timeout_ms": 60_000,
        "half_open_max_calls": 1,
    },
}
SYNC_MS = 1000  # shared_state_breaker_sync_ms's default, the documented bound's first term


def router_env(urls: list[str], first: int) -> dict[str, str]:
    rotated = urls[first:] + urls[:first]
    return {
        "ROUTER_NATS_URL": ",".join(rotated),
        "ROUTER_NATS_CONNECT_TIMEOUT_MS": "500",
        "ROUTER_NATS_RECONNECT_DELAY_MS": "50",
        "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "500",
        "ROUTER_NATS_PING_INTERVAL_MS": "500",
        "ROUTER_NATS_REQUEST_TIMEOUT_MS": "2000",
        "ROUTER_JETSTREAM_STREAM_REPLICAS": "3",
        "ROUTER_SHARED_STATE_ENABLED": "true",
        "ROUTER_SHARED_STATE_BREAKER_SYNC_MS": str(SYNC_MS),
        # Five test suites share two cores here: an R3 write can take longer than the 1 s
        # default, and the proof is about agreement, not about the timeout.
        "ROUTER_SHARED_STATE_TIMEOUT_MS": "3000",
        "ROUTER_JS_ACK_WAIT_MS": "2000",
    }


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with running_cluster(tmp_path / "cluster", name="many") as nodes:
        yield nodes


@pytest.fixture
async def routers(cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        for i in range(3):
            home = tmp_path / f"router{i}"
            policy = home / "policies" / "acme" / "default.json"
            policy.parent.mkdir(parents=True)
            policy.write_text(json.dumps(POLICY))
            started.append(RouterProcess(router_env(cluster.urls, i), home))
        for router in started:
            await asyncio.to_thread(router.wait, router.ready, 60, "the Router to be ready")
        yield started
    finally:
        for router in started:
            router.kill()


async def decide(
    http: aiohttp.ClientSession, router: RouterProcess, **fields: Any
) -> dict[str, Any]:
    body = {
        "version": "1",
        "request_id": "req-1",
        "tenant_id": "acme",
        "task": {"type": "text", "payload": {"prompt": "hi"}},
        **fields,
    }
    async with http.post(router.decide_url, json=body) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
        return answer


async def test_three_routers_share_sessions_decides_and_breakers(
    cluster: NatsCluster, routers: list[RouterProcess]
) -> None:
    """Sticky across Routers, one assignment per retried decide, breakers opened everywhere."""
    for bucket in ("ROUTER_DECIDES", "ROUTER_STICKY", "ROUTER_BREAKERS"):
        facts = await bucket_facts(cluster.urls[0], bucket)
        assert facts is not None and facts.replicas == 3
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        # Sticky: 10 sessions, each asked 6 times round the three Routers.
        for session in range(10):
            providers = {
                (
                    await decide(
                        http,
                        routers[n % 3],
                        request_id=f"s{session}-{n}",
                        metadata={"session_id": f"session-{session}"},
                    )
                )["decision"]["provider_id"]
                for n in range(6)
            }
            assert len(providers) == 1, f"session {session} split: {providers}"

        # Retried on each Router in turn, then 10 ids sent to all three at once.
        retried = [
            await decide(http, r, request_id="retry-1", push_assignment=True) for r in routers
        ]
        racing = [
            await asyncio.gather(
                *(decide(http, r, request_id=f"race-{n}", push_assignment=True) for r in routers)
            )
            for n in range(10)
        ]
        for answers in [retried, *racing]:
            assert len({a["decision"]["assignment_id"] for a in answers}) == 1
            assert len({json.dumps(a["decision"], sort_keys=True) for a in answers}) == 1
        stored = await stored_messages(cluster.urls[0], "ROUTER_ASSIGNMENTS")
        ids = [m.headers["Nats-Msg-Id"] for m in stored]
        assert sorted(ids) == sorted(a[0]["decision"]["assignment_id"] for a in [retried, *racing])

        # Breaker: failures of provider a, consumed by whichever Router the consumer hands
        # them to; once one Router's breaker is open, every Router's is within the bound.
        nc = await nats.connect(cluster.urls[0])
        try:
            js = nc.jetstream()
            for n in range(6):
                await js.publish("caf.exec.result.v1", json.dumps(failure(n)).encode())
        finally:
            await nc.close()
        opened = await asyncio.to_thread(first_open, routers, 20.0)
        spread = await asyncio.to_thread(all_open_after, routers, opened, 10.0)
        assert spread <= SYNC_MS / 1000 + 1.0, f"open everywhere {spread:.2f}s after the first"
        for n, router in enumerate(routers):
            answer = await decide(http, router, request_id=f"after-{n}")
            assert answer["decision"]["provider_id"] == "b"
    print(f"breaker open on every Router {spread:.3f}s after the first")


def failure(n: int) -> dict[str, Any]:
    return {
        "assignment_id": f"failed-{n}",
        "request_id": f"failed-{n}",
        "status": "error",
        "provider_id": "a",
        "job": {"type": "text"},
        "latency_ms": 100,
        "cost": 0.0,
        "trace_id": f"trace-{n}",
        "tenant_id": "acme",
        "timestamp": 1_700_000_000_000,
    }


def breaker_open(router: RouterProcess) -> bool:
    return router.metric("router_circuit_breaker_state", provider="a") == 1.0


def first_open(routers: list[RouterProcess], timeout_s: float) -> float:
    """The monotonic time at which the first Router showed provider a's breaker open."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(breaker_open(r) for r in routers):
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError("no Router opened the breaker")


def all_open_after(routers: list[RouterProcess], since: float, timeout_s: float) -> float:
    """Seconds from ``since`` until every Router shows the breaker open."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(breaker_open(r) for r in routers):
            return time.monotonic() - since
        time.sleep(0.02)
    raise AssertionError("the breaker did not open on every Router")
