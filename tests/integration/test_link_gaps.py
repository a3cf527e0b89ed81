"""Link behaviours that had no test: a deleted consumer, a subscription refused on reconnect,
a dead link task, spool errors in replay and expiry, a spool over newly lowered limits.

Through the public API (``Link`` and its constructor's ``transport`` and ``pending``), so
they hold whatever the link's insides look like.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import nats
import pytest
from prometheus_client import CollectorRegistry

from natsrouter.api.http import HttpServer, build_app
from natsrouter.config import OverflowPolicy, build_settings
from natsrouter.embedded import NatsServer, free_port
from natsrouter.errors import Reason
from natsrouter.link import (
    ConsumerSpec,
    Fault,
    FaultTarget,
    InboundMessage,
    JsMessage,
    Link,
    Outcome,
)
from natsrouter.link.pending import Limits, PendingQueue
from natsrouter.link.spool import SpoolError, SqlitePendingQueue
from natsrouter.link.transport import Connection, LostCallback
from natsrouter.observability.metrics import LinkMetrics
from tests.conftest import FAST, LinkFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import codes, metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


class Worker:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.seen: list[bytes] = []

    async def __call__(self, msg: JsMessage) -> None:
        self.seen.append(msg.data)
        await self.link.ack(msg)


class Inbox:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def __call__(self, msg: InboundMessage) -> None:
        self.data.append(msg.data)


async def test_a_deleted_consumer_is_bound_again_and_delivers(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """The durable is deleted under the link: the failed fetch is counted, the durable is
    created again and delivers; being new, it starts again from the stream's first message."""
    await create_stream(nats_server.url, "WORK", ["work.>"])
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    worker = Worker(link)
    await link.consume(ConsumerSpec("WORK", "w", "work.items"), worker, fetch_timeout_s=0.2)
    assert (await link.publish_with_ack("work.items", b"before")).outcome is Outcome.SENT
    await wait_for(lambda: worker.seen == [b"before"], 5, "the first delivery")
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().delete_consumer("WORK", "w")
    finally:
        await nc.close()
    assert (await link.publish_with_ack("work.items", b"after")).outcome is Outcome.SENT
    await wait_for(lambda: b"after" in worker.seen, 10, "delivery after the re-bind")
    assert worker.seen == [b"before", b"before", b"after"]
    assert metric(link, "router_nats_subscribe_total") == 2
    assert metric(link, "router_nats_subscribe_failures_total", reason="server_error") == 1


async def test_a_subscription_refused_on_reconnect_leaves_the_others_bound(
    nats_server: NatsServer, make_link: LinkFactory, logs: list[dict[str, Any]]
) -> None:
    """After a server restart the server refuses one subscription: the link connects, the
    refusal is on that handle, counted and logged, and the other subscription delivers."""
    link = await make_link([nats_server.url], nats_fault_injection_enabled=True)
    assert await link.wait_connected(5)
    ok_inbox, no_inbox = Inbox(), Inbox()
    ok = await link.subscribe("ok.x", ok_inbox)
    refused = await link.subscribe("no.x", no_inbox)
    link.inject(FaultTarget.SUBSCRIBE, Fault.error(Reason.SERVER_ERROR).on_subject("no.>"))
    await nats_server.arestart()
    await wait_for(lambda: metric(link, "router_nats_connection_restored_total") == 1, 10)
    assert (ok.error, refused.error is not None) == (None, True)
    assert metric(link, "router_nats_subscribe_failures_total", reason="server_error") == 1
    assert "NATS_SUBSCRIBE_ERROR" in codes(logs)
    assert (await link.publish("ok.x", b"hello")).outcome is Outcome.SENT
    await wait_for(lambda: ok_inbox.data == [b"hello"], 5, "the bound subscription")
    assert link.status()["subscriptions"] == 2


async def test_a_subscription_refused_on_reconnect_is_retried_while_connected(
    nats_server: NatsServer, make_link: LinkFactory, logs: list[dict[str, Any]]
) -> None:
    """The server refuses one subscription on reconnect: it is tried again with backoff on
    the same connection, each refusal counted, and bound once the refusal ends."""
    link = await make_link([nats_server.url], nats_fault_injection_enabled=True)
    assert await link.wait_connected(5)
    inbox = Inbox()
    refused = await link.subscribe("no.x", inbox)
    link.inject(FaultTarget.SUBSCRIBE, Fault.error(Reason.SERVER_ERROR).on_subject("no.>"))
    await nats_server.arestart()
    await wait_for(lambda: metric(link, "router_nats_connection_restored_total") == 1, 10)
    await wait_for(
        lambda: metric(link, "router_nats_subscribe_failures_total", reason="server_error") >= 3,
        10,
        "refusals retried",
    )
    assert refused.error is not None
    link.clear_faults()
    await wait_for(lambda: refused.error is None, 10, "the subscription bound")
    assert (await link.publish("no.x", b"hello")).outcome is Outcome.SENT
    await wait_for(lambda: inbox.data == [b"hello"], 5, "delivery on the retried subscription")
    assert metric(link, "router_nats_connection_restored_total") == 1


class _BrokenTransport:
    """A transport with a bug: connecting raises something that is not a LinkError."""

    async def connect(self, server: str, on_lost: LostCallback) -> Connection:
        raise RuntimeError("a bug in the transport")


async def test_live_is_503_once_a_link_task_has_died(logs: list[dict[str, Any]]) -> None:
    """The supervisor dies of a bug: /health/live answers 503 "dead", and it is logged."""
    settings = build_settings({**FAST, "nats_url": f"nats://127.0.0.1:{free_port()}"})
    link = Link(settings, LinkMetrics(CollectorRegistry()), transport=_BrokenTransport())
    server = HttpServer(build_app(link, fault_admin=False), "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{server.port}/health/live"
            async with session.get(url) as resp:
                assert resp.status == 200
            await link.start()
            await wait_for(lambda: not link.alive, 5, "the task's death")
            async with session.get(url) as resp:
                assert (resp.status, await resp.json()) == (503, {"status": "dead"})
    finally:
        await server.stop()
        await link.close()
    [died] = [e for e in logs if e["event"] == "link task died"]
    assert died["task"] == "supervisor"


class FlakySpool:
    """A real spool whose methods named in ``failing`` raise ``SpoolError`` (a disk fault)."""

    def __init__(self, inner: SqlitePendingQueue) -> None:
        self.inner = inner
        self.failing: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.failing:
            return attr

        def fail(*_: object, **__: object) -> Any:
            raise SpoolError(f"{self.inner.path}: injected I/O error in {name}")

        return fail


@pytest.fixture
async def flaky_link(
    nats_server: NatsServer, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Link, FlakySpool]]:
    """A link on a FlakySpool, connected, with stream SP on sp.>."""
    await create_stream(nats_server.url, "SP", ["sp.>"])
    settings = build_settings(
        {
            **FAST,
            "nats_url": nats_server.url,
            # Short only where a test is about expiry: elsewhere a slow machine must not expire.
            "nats_pending_operation_timeout_ms": getattr(request, "param", 0),
        }
    )
    limits = Limits(100, 1 << 20, OverflowPolicy.DROP_OLDEST)
    spool = FlakySpool(SqlitePendingQueue.open(tmp_path / "spool.db", limits))
    link = Link(settings, LinkMetrics(CollectorRegistry()), pending=cast(PendingQueue, spool))
    await link.start()
    try:
        assert await link.wait_connected(5)
        yield link, spool
    finally:
        await link.close()


async def test_a_spool_that_cannot_be_read_during_replay_keeps_every_item(
    nats_server: NatsServer, flaky_link: tuple[Link, FlakySpool], logs: list[dict[str, Any]]
) -> None:
    """Reading the spool fails in the replay: logged (action read), nothing dropped or sent;
    once it reads again the next replay stores all three, in order."""
    link, spool = flaky_link
    nats_server.kill()
    await wait_for(lambda: not link.ready, 5, "the outage")
    for n in range(3):
        assert (await link.publish_with_ack("sp.x", b"%d" % n)).outcome is Outcome.QUEUED
    spool.failing = {"batch_after"}  # how a replay reads the spool
    await nats_server.astart()
    await wait_for(
        lambda: any(
            e.get("action") == "read" for e in logs if e.get("error_code") == "NATS_SPOOL_ERROR"
        ),
        10,
        "the failed read",
    )
    assert link.pending.count == 3
    assert (link.accounting.dropped, link.accounting.sent) == (0, 0)
    spool.failing = set()
    await wait_for(lambda: link.pending.count == 0, 10, "the next replay")
    assert [m.data for m in await stored_messages(nats_server.url, "SP")] == [b"0", b"1", b"2"]
    assert link.accounting.balanced(0)


@pytest.mark.parametrize("flaky_link", [300], indirect=True)
async def test_a_spool_that_cannot_expire_keeps_the_item_until_it_can(
    nats_server: NatsServer, flaky_link: tuple[Link, FlakySpool], logs: list[dict[str, Any]]
) -> None:
    """Expiry fails: logged (action expire), the old item is neither dropped nor counted;
    once expiry works it is dropped as expired, once."""
    link, spool = flaky_link
    nats_server.kill()
    await wait_for(lambda: not link.ready, 5, "the outage")
    spool.failing = {"expire"}
    queued_at = time.time()
    assert (await link.publish_with_ack("sp.x", b"old")).outcome is Outcome.QUEUED
    await wait_for(lambda: time.time() - queued_at > 0.5, 5, "the item past its expiry")
    await wait_for(
        lambda: any(
            e.get("action") == "expire" for e in logs if e.get("error_code") == "NATS_SPOOL_ERROR"
        ),
        5,
        "a failed expiry",
    )
    assert (link.pending.count, link.accounting.dropped) == (1, 0)
    spool.failing = set()
    await wait_for(lambda: link.pending.count == 0, 5, "the expiry")
    assert metric(link, "router_nats_pending_operations_dropped_total", reason="expired") == 1
    assert link.accounting.dropped == 1
    assert link.accounting.balanced(0)


@pytest.mark.parametrize(
    ("overflow", "outcome", "stored"),
    [
        ("drop_oldest", Outcome.QUEUED, [b"q4", b"q5", b"new"]),
        ("reject_new", Outcome.REJECTED, [b"q%d" % n for n in range(6)]),
    ],
)
async def test_a_spool_over_newly_lowered_limits_loses_nothing_silently(
    nats_server: NatsServer,
    make_link: LinkFactory,
    tmp_path: Path,
    logs: list[dict[str, Any]],
    overflow: str,
    outcome: Outcome,
    stored: list[bytes],
) -> None:
    """Six items spooled, reopened with a bound of three: all six are kept at open; the next
    publish applies the overflow policy (evictions counted and logged) and the rest is sent."""
    await create_stream(nats_server.url, "LOW", ["low.>"])
    nats_server.kill()
    spool = str(tmp_path / "spool.db")
    first = await make_link([nats_server.url], nats_pending_spool_path=spool)
    for n in range(6):
        assert (await first.publish_with_ack("low.x", b"q%d" % n)).outcome is Outcome.QUEUED
    await first.close()
    link = await make_link(
        [nats_server.url],
        nats_pending_spool_path=spool,
        nats_max_pending_operations=3,
        nats_pending_overflow=overflow,
    )
    assert (link.pending.count, link.status()["pending"]["recovered"]) == (6, 6)
    assert (await link.publish_with_ack("low.x", b"new")).outcome is outcome
    evicted = 6 - (len(stored) - (outcome is Outcome.QUEUED))
    assert metric(link, "router_nats_pending_operations_dropped_total", reason="queue_full") == (
        evicted
    )
    assert "NATS_QUEUE_FULL" in codes(logs)
    assert link.accounting.balanced(link.pending.count)
    await nats_server.astart()
    await wait_for(lambda: link.pending.count == 0, 10, "the replay")
    assert [m.data for m in await stored_messages(nats_server.url, "LOW")] == stored
    assert link.accounting.balanced(0)
