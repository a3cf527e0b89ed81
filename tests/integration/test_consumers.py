"""JetStream durable pull consumers through the link: delivery survives restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.link import ConnectionState, ConsumerSpec, JsMessage, Link, Outcome
from tests.conftest import LinkFactory
from tests.helpers.jetstream import create_stream
from tests.helpers.observe import metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


class Worker:
    """Acks every message and records its payload and the server's delivery count."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.seen: list[tuple[bytes, int]] = []

    async def __call__(self, msg: JsMessage) -> None:
        assert msg.metadata is not None
        self.seen.append((msg.data, msg.metadata.num_delivered))
        assert (await self.link.ack(msg)).outcome is Outcome.SENT


async def test_consumer_delivers_again_after_sigkill_and_restart(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Messages published before and after a server crash are all consumed again."""
    await create_stream(nats_server.url, "WORK", ["work.>"])
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    worker = Worker(link)
    await link.consume(
        ConsumerSpec("WORK", "workers", "work.items"), worker, batch=5, fetch_timeout_s=0.3
    )
    for i in range(10):
        assert (await link.publish_with_ack("work.items", b"a%d" % i)).outcome is Outcome.SENT
    await wait_for(lambda: len(worker.seen) == 10, 5)
    await nats_server.arestart()
    await wait_for(lambda: link.state is ConnectionState.CONNECTED, 5)
    for i in range(10):
        assert (await link.publish_with_ack("work.items", b"b%d" % i)).outcome is Outcome.SENT
    expected = {b"a%d" % i for i in range(10)} | {b"b%d" % i for i in range(10)}
    await wait_for(lambda: {d for d, _ in worker.seen} == expected, 10, "deliveries after restart")
    # Acks sent just before a SIGKILL may not be persisted, so JetStream may redeliver (at
    # least once): every repeat is marked by the server's delivery count, never silent.
    first_seen: set[bytes] = set()
    for data, delivered in worker.seen:
        assert delivered == 1 or data in first_seen, (data, delivered)
        first_seen.add(data)
    assert [d for d, _ in worker.seen if d.startswith(b"b")] == [b"b%d" % i for i in range(10)]
    assert metric(link, "router_nats_subscribe_total") >= 2  # bound again on the new connection
    assert metric(link, "router_nats_ack_total") == len(worker.seen)


async def test_consumer_asked_for_while_down_starts_when_connected(
    tmp_path: Path, make_link: LinkFactory
) -> None:
    """consume() while NATS is down registers it; it binds and delivers once connected."""
    server = NatsServer(store_dir=tmp_path / "js")
    link = await make_link([server.url], nats_reconnect_attempts=0)
    worker = Worker(link)
    await link.consume(ConsumerSpec("LATE", "late-workers", "late.x"), worker, fetch_timeout_s=0.3)
    assert link.status()["consumers"] == 1
    try:
        await server.astart()
        await create_stream(server.url, "LATE", ["late.>"])
        await wait_for(lambda: link.ready, 5)
        assert (await link.publish_with_ack("late.x", b"hello")).outcome is Outcome.SENT
        await wait_for(lambda: worker.seen == [(b"hello", 1)], 10)
    finally:
        server.kill()


async def test_nak_redelivers_and_term_does_not(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """nak(delay) brings the message back with num_delivered 2; term ends it."""
    await create_stream(nats_server.url, "NAKS", ["naks.>"])
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    seen: list[tuple[bytes, int]] = []

    async def handler(msg: JsMessage) -> None:
        assert msg.metadata is not None
        seen.append((msg.data, msg.metadata.num_delivered))
        if msg.data == b"retry" and msg.metadata.num_delivered == 1:
            await link.nak(msg, delay_ms=50)
        elif msg.data == b"poison":
            await link.term(msg)
        else:
            await link.ack(msg)

    await link.consume(ConsumerSpec("NAKS", "nakker", "naks.x"), handler, fetch_timeout_s=0.3)
    await link.publish_with_ack("naks.x", b"retry")
    await link.publish_with_ack("naks.x", b"poison")
    await wait_for(lambda: (b"retry", 2) in seen, 5)
    # Settled on the server (nothing pending, nothing awaiting an ack): nothing more can come.
    nc = await nats.connect(nats_server.url)
    try:
        for _ in range(100):
            info = await nc.jetstream().consumer_info("NAKS", "nakker")
            if (info.num_pending, info.num_ack_pending) == (0, 0):
                break
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert sorted(seen) == [(b"poison", 1), (b"retry", 1), (b"retry", 2)]
    assert metric(link, "router_nats_nak_total") == 1
    assert metric(link, "router_nats_ack_total") == 2  # one ack, one term


async def test_a_failing_handler_does_not_stop_the_consumer(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A handler that raises is logged; the next messages are still delivered."""
    await create_stream(nats_server.url, "BUGS", ["bugs.>"])
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    seen: list[bytes] = []

    async def handler(msg: JsMessage) -> None:
        seen.append(msg.data)
        await link.ack(msg)
        if msg.data == b"boom":
            raise RuntimeError("handler bug")

    await link.consume(ConsumerSpec("BUGS", "bugs", "bugs.x"), handler, fetch_timeout_s=0.3)
    for data in (b"boom", b"after"):
        await link.publish_with_ack("bugs.x", data)
    await wait_for(lambda: seen == [b"boom", b"after"], 5)
    assert link.alive
