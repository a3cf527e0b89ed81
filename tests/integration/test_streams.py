"""The link creates the streams it is told about when they are missing, on every connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

from natsrouter.embedded import NatsServer
from natsrouter.link.transport import StreamSpec
from tests.conftest import LinkFactory
from tests.helpers.observe import codes, metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


async def stream_config(url: str, name: str) -> StreamConfig:
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().stream_info(name)
    finally:
        await nc.close()
    return info.config


async def test_declared_stream_is_created_with_its_subjects_and_window(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A stream declared while connected exists at once, with the declared duplicate window."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    await link.declare_stream(StreamSpec("ORDERS", ("orders.new",), duplicate_window_s=30))
    config = await stream_config(nats_server.url, "ORDERS")
    assert config.subjects == ["orders.new"]
    assert config.duplicate_window == 30


async def test_existing_stream_is_left_as_it_is(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """An operator's stream with the same name keeps its own configuration."""
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(StreamConfig(name="ORDERS", subjects=["orders.*"]))
    await nc.close()
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    await link.declare_stream(StreamSpec("ORDERS", ("orders.new",)))
    assert (await stream_config(nats_server.url, "ORDERS")).subjects == ["orders.*"]


async def test_stream_lost_with_the_server_store_is_created_again_on_reconnect(
    tmp_path: Path, make_link: LinkFactory
) -> None:
    """A server restarted with an empty store gets the stream again before consumers bind."""
    first = NatsServer(store_dir=tmp_path / "a")
    first.start()
    try:
        link = await make_link([first.url])
        assert await link.wait_connected(5)
        await link.declare_stream(StreamSpec("ORDERS", ("orders.new",)))
        port = first.port
    finally:
        first.kill()
    second = NatsServer(port=port, store_dir=tmp_path / "b")
    second.start()
    try:
        await wait_for(lambda: metric(link, "router_nats_connection_restored_total") == 1, 10)
        result = await link.publish_with_ack("orders.new", b"x")
        assert result.pub_ack is not None
        assert result.pub_ack.stream == "ORDERS"
    finally:
        second.kill()


async def test_stream_refused_by_the_server_is_logged_and_the_link_stays_up(
    nats_server: NatsServer, make_link: LinkFactory, logs: list[dict[str, Any]]
) -> None:
    """Subjects that overlap another stream are refused: NATS_STREAM_ERROR, still connected."""
    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(StreamConfig(name="ALL", subjects=["orders.>"]))
    await nc.close()
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    await link.declare_stream(StreamSpec("ORDERS", ("orders.new",)))
    assert "NATS_STREAM_ERROR" in codes(logs)
    assert link.state.value == "connected"
