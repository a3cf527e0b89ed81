"""Router.stop (SIGTERM): in-flight work is finished, and what is pending is sent or kept."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.embedded import NatsServer
from natsrouter.link import Fault, FaultTarget, Link
from natsrouter.link.pending import Limits
from natsrouter.link.spool import SqlitePendingQueue
from natsrouter.observability.metrics import LinkMetrics, RouterMetrics
from natsrouter.service.router import Router
from tests.conftest import ROUTER_FAST
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import codes
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker
from tests.integration.test_router_consumers import consumer_state
from tests.integration.test_router_decide import decide_request, http_decide, nats_decide

pytestmark = pytest.mark.integration
StartRouter = Callable[..., Awaitable[Router]]


@pytest.fixture
async def start_router(nats_server: NatsServer, policies_dir: Path) -> AsyncIterator[StartRouter]:
    """Started Routers with fault injection; the test stops them, teardown closes the links."""
    links: list[Link] = []

    async def start(**overrides: Any) -> Router:
        settings = build_settings(
            {
                **ROUTER_FAST,
                "nats_url": nats_server.url,
                "policies_path": str(policies_dir),
                "nats_fault_injection_enabled": True,
                **overrides,
            }
        )
        registry = CollectorRegistry()
        link = Link(settings, LinkMetrics(registry))
        links.append(link)
        router = Router(settings, link, RouterMetrics(registry))
        await link.start()
        await router.start()
        assert await link.wait_connected(5)
        return router

    try:
        yield start
    finally:
        for link in links:
            await link.close()


ASSIGNMENT: dict[str, Any] = {
    "assignment_id": "a-1",
    "request_id": "r-1",
    "tenant_id": "acme",
    "executor": {"provider_id": "a"},
    "job": {"type": "t"},
    "correlation": {"trace_id": "t-1"},
}


async def test_in_flight_decides_and_results_are_finished_before_stop_returns(
    nats_server: NatsServer, start_router: StartRouter, logs: list[dict[str, Any]]
) -> None:
    """A decide and a result, each held in a 700 ms publish when stop begins: the decide is
    answered with its assignment sent, the result's usage stored and the result acked."""
    router = await start_router()
    router.link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.delay(700))
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await worker.result(ASSIGNMENT)
    finally:
        await worker.close()
    body = json.dumps(decide_request(push_assignment=True)).encode()
    answer = asyncio.create_task(nats_decide(nats_server.url, body))
    await wait_for(lambda: codes(logs).count("NATS_FAULT_INJECTED") == 2, 5, "both in flight")
    started = time.monotonic()
    left = await router.stop()
    took = time.monotonic() - started
    assert left == 0
    assert took < ROUTER_FAST["shutdown_timeout_ms"] / 1000
    reply = await answer
    assert reply["assignment"]["outcome"] == "sent"
    usage = await stored_messages(nats_server.url, "ROUTER_USAGE")
    assert [m.headers["Nats-Msg-Id"] for m in usage] == ["usage-4:acme:a-1"]
    assert await consumer_state(nats_server.url, "ROUTER_RESULTS", "router-results") == (0, 0)


async def test_pending_that_cannot_be_sent_is_kept_in_the_spool_within_the_timeout(
    nats_server: NatsServer, start_router: StartRouter, tmp_path: Path
) -> None:
    """Connected, but the server refuses the queued assignment: stop gives up at
    shutdown_timeout_ms and returns it; it is still in the spool for the next start."""
    spool = tmp_path / "spool.db"
    router = await start_router(nats_pending_spool_path=str(spool), shutdown_timeout_ms=1000)
    nats_server.kill()
    await wait_for(lambda: not router.link.ready, 5, "the outage")
    body = json.dumps(decide_request(push_assignment=True)).encode()
    status, answer = await http_decide(router.http.port, body)
    assert (status, answer["assignment"]["outcome"]) == (200, "queued")
    router.link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.timeout())  # can pass: kept
    await nats_server.astart()
    await wait_for(lambda: router.link.ready, 5, "reconnected")
    started = time.monotonic()
    left = await router.stop()
    took = time.monotonic() - started
    assert left == 1
    assert 1.0 <= took < 2.0
    await router.link.close()
    kept = SqlitePendingQueue.open(
        spool, Limits(10, 1 << 20, router.settings.nats_pending_overflow)
    )
    try:
        assert kept.count == 1
    finally:
        kept.close()


async def test_pending_is_flushed_before_stop_returns_when_connected(
    nats_server: NatsServer, start_router: StartRouter
) -> None:
    """Assignments queued in an outage and still being replayed (200 ms each) when stop
    begins: stop returns 0 once they are all stored, in order."""
    router = await start_router()
    nats_server.kill()
    await wait_for(lambda: not router.link.ready, 5, "the outage")
    ids = []
    for n in range(3):
        body = json.dumps(decide_request(push_assignment=True, request_id=f"r{n}")).encode()
        _, answer = await http_decide(router.http.port, body)
        assert answer["assignment"]["outcome"] == "queued"
        ids.append(answer["decision"]["assignment_id"])
    router.link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.delay(200))
    await nats_server.astart()
    await wait_for(lambda: router.link.ready, 5, "reconnected")
    assert router.link.pending.count > 0  # the replay is still sending
    assert await router.stop() == 0
    stored = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert [m.headers["Nats-Msg-Id"] for m in stored] == ids
