"""Smoke: the link connects to a real server, publishes, and survives one restart."""

from __future__ import annotations

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.link import ConnectionState, Outcome
from tests.conftest import LinkFactory
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


async def test_publish_queue_and_replay_across_restart(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A publish made while the server is down is queued, then delivered after restart."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    got: list[bytes] = []

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        got.append(msg.data)

    await link.subscribe("smoke.x", on_msg)
    assert (await link.publish("smoke.x", b"1")).outcome is Outcome.SENT
    await wait_for(lambda: got == [b"1"], 5)
    nats_server.kill()
    await wait_for(lambda: link.state is ConnectionState.RECONNECTING, 5)
    result = await link.publish("smoke.x", b"2")
    assert result.outcome is Outcome.QUEUED
    await nats_server.astart()
    await wait_for(lambda: got == [b"1", b"2"], 10)
    assert link.state is ConnectionState.CONNECTED
