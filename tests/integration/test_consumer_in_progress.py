"""A message held while its side effect is retried is kept in progress, with its whole batch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.embedded import NatsServer
from natsrouter.link import ConsumerSpec, Fault, FaultTarget, JsMessage, Link, Outcome
from natsrouter.observability.metrics import LinkMetrics, RouterMetrics
from natsrouter.service.router import Router
from tests.conftest import ROUTER_FAST, LinkFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import metric, rmetric
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker, result_for

pytestmark = pytest.mark.integration
ACK_WAIT_MS = 1000


def assignment(n: int) -> dict[str, object]:
    return {
        "assignment_id": f"a-{n}",
        "request_id": f"r-{n}",
        "tenant_id": "acme",
        "executor": {"provider_id": "a"},
        "job": {"type": "t"},
        "correlation": {"trace_id": f"t-{n}"},
    }


@pytest.fixture
async def held_router(nats_server: NatsServer, policies_dir: Path) -> AsyncIterator[Router]:
    """A Router whose JetStream publishes time out (and are retried) until the fault is
    cleared; three results already wait in its stream, so its first fetch takes all three."""
    settings = build_settings(
        {
            **ROUTER_FAST,
            "nats_url": nats_server.url,
            "policies_path": str(policies_dir),
            "nats_fault_injection_enabled": True,
            "js_ack_wait_ms": ACK_WAIT_MS,
            "js_max_deliver": 2,
            "js_publish_retry_deadline_ms": 20_000,
        }
    )
    await create_stream(nats_server.url, "ROUTER_RESULTS", ["caf.exec.result.v1"])
    worker = await FakeWorker.connect(nats_server.url)
    try:
        for n in range(3):
            await worker.result(assignment(n))
    finally:
        await worker.close()
    registry = CollectorRegistry()
    link = Link(settings, LinkMetrics(registry))
    link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.timeout())
    router = Router(settings, link, RouterMetrics(registry))
    await link.start()
    await router.start()
    try:
        yield router
    finally:
        await router.stop()
        await link.close()


async def test_a_held_usage_publish_keeps_its_batch_from_redelivery(
    nats_server: NatsServer, held_router: Router
) -> None:
    """Usage publishes retried for over twice the ack wait: another puller on the same durable
    gets nothing, no message is redelivered, three usage events and an empty DLQ at the end."""
    router = held_router
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await wait_for(
            lambda: rmetric(router, "router_nats_publish_with_ack_retries_total") >= 1,
            10,
            "the first message held",
        )
        info = await js.consumer_info("ROUTER_RESULTS", "router-results")
        assert info.num_ack_pending == 3  # the whole batch is in the Router's hands
        # Another Router on the same durable: it would get whatever the server redelivers.
        other = await js.pull_subscribe_bind("router-results", "ROUTER_RESULTS")
        taken: list[bytes] = []
        held = asyncio.Event()

        async def pull() -> None:
            while not held.is_set():
                with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                    taken.extend(m.data for m in await other.fetch(10, timeout=0.2))

        puller = asyncio.create_task(pull())
        # Retry pauses double from 50 ms to 1 s: six retries are over 2.5 s, 2.5 ack waits.
        await wait_for(
            lambda: rmetric(router, "router_nats_publish_with_ack_retries_total") >= 6,
            15,
            "a hold longer than twice the ack wait",
        )
        router.link.clear_faults()
        await wait_for(lambda: rmetric(router, "router_usage_emitted_total") == 3, 15, "usage")
        held.set()
        await puller
        info = await js.consumer_info("ROUTER_RESULTS", "router-results")
    finally:
        await nc.close()
    assert taken == []
    assert (info.num_redelivered, info.num_ack_pending, info.num_pending) == (0, 0, 0)
    assert rmetric(router, "router_jetstream_redelivery_total", consumer="results") == 0
    usage = await stored_messages(nats_server.url, "ROUTER_USAGE")
    assert sorted(m.headers["Nats-Msg-Id"] for m in usage) == [
        f"usage-4:acme:{result_for(assignment(n))['assignment_id']}" for n in range(3)
    ]
    assert await stored_messages(nats_server.url, "ROUTER_DLQ") == []


async def test_in_progress_keeps_a_message_and_the_rest_of_its_batch(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Link API: a handler holds the first of three fetched messages for 2.5 ack waits,
    calling in_progress; another puller on the durable gets nothing, none is redelivered."""
    await create_stream(nats_server.url, "HOLD", ["hold.>"])
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    for n in range(3):
        assert (await link.publish_with_ack("hold.x", b"%d" % n)).outcome is Outcome.SENT
    seen: list[tuple[bytes, int]] = []

    async def handler(msg: JsMessage) -> None:
        assert msg.metadata is not None
        seen.append((msg.data, msg.metadata.num_delivered))
        if msg.data == b"0":  # the work in hand: 2.5 ack waits, saying so every third
            for _ in range(8):
                await asyncio.sleep(ACK_WAIT_MS / 3000)
                assert (await link.in_progress(msg)).outcome is Outcome.SENT
        await link.ack(msg)

    spec = ConsumerSpec("HOLD", "holder", "hold.x", ack_wait_ms=ACK_WAIT_MS)
    await link.consume(spec, handler, batch=3, fetch_timeout_s=0.2)
    await wait_for(lambda: len(seen) == 1, 5, "the first message in hand")
    nc = await nats.connect(nats_server.url)
    try:
        other = await nc.jetstream().pull_subscribe_bind("holder", "HOLD")
        taken: list[bytes] = []
        while len(seen) < 3:
            with contextlib.suppress(nats.errors.TimeoutError, TimeoutError):
                taken.extend(m.data for m in await other.fetch(10, timeout=0.2))
        info = await nc.jetstream().consumer_info("HOLD", "holder")
    finally:
        await nc.close()
    assert taken == []
    assert seen == [(b"0", 1), (b"1", 1), (b"2", 1)]
    assert info.num_redelivered == 0
    # 8 in-progress acks for the held one, 8 for each of the two waiting behind it, 3 acks.
    assert metric(link, "router_nats_ack_total") == 8 * 3 + 3
