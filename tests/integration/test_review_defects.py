"""Defects found in review of the link split and the hostile-input work, each against a real
nats-server: a stream that is full for now must not cost queued work.
"""

from __future__ import annotations

import nats
import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from natsrouter.embedded import NatsServer
from natsrouter.link import Outcome
from tests.conftest import LinkFactory
from tests.helpers.jetstream import stored_messages
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


async def _full_stream(url: str) -> None:
    """A stream of one message that refuses more (``discard: new``), holding that one."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="FULL", subjects=["full.x"], max_msgs=1, discard=DiscardPolicy.NEW)
        )
        await js.publish("full.x", b"first")
    finally:
        await nc.close()


async def _purge(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().purge_stream("FULL")
    finally:
        await nc.close()


async def test_a_queued_item_refused_by_a_full_stream_stays_queued_until_it_fits(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A queued publish refused with 503 "maximum messages exceeded" is kept, not failed:
    once the stream has room (here: purged) the replay stores it."""
    await _full_stream(nats_server.url)
    link = await make_link([nats_server.url], start=False)
    queued = await link.publish_with_ack("full.x", b"second")  # not connected yet: queued
    assert queued.outcome is Outcome.QUEUED
    await link.start()
    assert await link.wait_connected(5)
    # The replay has tried it and the stream refused it (the subject is blocked).
    await wait_for(lambda: bool(link.status()["pending"]["blocked"]), 5, "a refused replay")
    assert (link.pending.count, link.accounting.failed) == (1, 0)
    await _purge(nats_server.url)
    await wait_for(lambda: link.pending.count == 0, 5, "the replay after the purge")
    assert [m.data for m in await stored_messages(nats_server.url, "FULL")] == [b"second"]
    assert link.accounting.failed == 0
