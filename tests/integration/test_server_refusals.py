"""JetStream refusals: the ones that can pass stay queued, the permanent ones end ``failed``.

A real stream makes the server answer each refusal (no injected faults): a full
``discard=new`` stream answers 503 err_code 10077 until a consumer drains it, a message
over ``max_msg_size`` answers 400 err_code 10054 for ever.
"""

from __future__ import annotations

from typing import Any

import nats
import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from natsrouter.embedded import NatsServer
from natsrouter.errors import Reason
from natsrouter.link import Outcome
from tests.conftest import LinkFactory
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


async def _add_stream(url: str, config: StreamConfig) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(config)
    finally:
        await nc.close()


async def _purge(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().purge_stream(stream)
    finally:
        await nc.close()


async def test_a_full_discard_new_stream_keeps_the_publish_queued_until_it_is_drained(
    nats_server: NatsServer, make_link: LinkFactory, logs: list[dict[str, Any]]
) -> None:
    """A publish refused by a full discard-new stream (10077) is queued, its subject blocked;
    once the stream is drained the replay stores it, and nothing ends failed."""
    await _add_stream(
        nats_server.url,
        StreamConfig(name="FULL", subjects=["full.>"], max_msgs=1, discard=DiscardPolicy.NEW),
    )
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    assert (await link.publish_with_ack("full.x", b"first")).outcome is Outcome.SENT
    second = await link.publish_with_ack("full.x", b"second")
    assert (second.outcome, second.reason) == (Outcome.QUEUED, Reason.SERVER_ERROR)
    assert link.status()["pending"]["blocked"]["full.x"]["reason"] == "server_error"
    [refusal] = [e for e in logs if e.get("error_code") == "NATS_PUBLISH_WITH_ACK_ERROR"]
    assert "err_code=10077" in refusal["error"]
    await _purge(nats_server.url, "FULL")
    await wait_for(lambda: link.pending.count == 0, 15, "the replay after the drain")
    assert [m.data for m in await stored_messages(nats_server.url, "FULL")] == [b"second"]
    assert link.accounting.failed == 0
    assert metric(link, "router_nats_pending_operations_failed_total", reason="server_error") == 0
    assert link.accounting.balanced(0)


async def test_a_message_over_max_msg_size_ends_failed_direct_and_queued(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Over the stream's max_msg_size (10054): a direct publish ends failed at once, and a
    queued one is removed as poison on replay; the next item of the subject is stored."""
    await _add_stream(
        nats_server.url, StreamConfig(name="SMALL", subjects=["small.>"], max_msg_size=64)
    )
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    direct = await link.publish_with_ack("small.x", b"x" * 100)
    assert (direct.outcome, direct.reason) == (Outcome.FAILED, Reason.SERVER_ERROR)
    assert getattr(direct.error, "err_code", None) == 10054
    nats_server.kill()
    await wait_for(lambda: not link.ready, 5, "the outage")
    assert (await link.publish_with_ack("small.x", b"y" * 100)).outcome is Outcome.QUEUED
    assert (await link.publish_with_ack("small.x", b"ok")).outcome is Outcome.QUEUED
    await nats_server.astart()
    await wait_for(lambda: link.pending.count == 0, 15, "the replay")
    assert [m.data for m in await stored_messages(nats_server.url, "SMALL")] == [b"ok"]
    assert metric(link, "router_nats_pending_operations_failed_total", reason="server_error") == 1
    assert link.accounting.failed == 2
