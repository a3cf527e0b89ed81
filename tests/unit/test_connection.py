"""Connection supervision with a fake transport: backoff resets only on a healthy connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.errors import ConnectionClosedError
from natsrouter.link import ConnectionState, Link
from natsrouter.observability.metrics import LinkMetrics
from tests.conftest import FAST
from tests.helpers.fake_transport import FakeConnection, FakeServer, FakeTransport
from tests.helpers.observe import metric
from tests.helpers.waiting import wait_for


@pytest.fixture
async def links() -> AsyncIterator[list[Link]]:
    made: list[Link] = []
    yield made
    for link in made:
        await link.close()


def _drop_soon(conn: FakeConnection) -> None:
    """Accept, then drop the connection a moment later (after the link called it connected)."""
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, lambda: loop.create_task(conn.abort(ConnectionClosedError("dropped"))))


def _link(server: FakeServer, **overrides: Any) -> Link:
    settings = build_settings({**FAST, "nats_url": "nats://fake:4222", **overrides})
    return Link(settings, LinkMetrics(CollectorRegistry()), transport=FakeTransport(server))


async def test_accept_then_drop_backs_off_to_exhaustion(
    links: list[Link], logs: list[dict[str, Any]]
) -> None:
    """A server that accepts then drops: attempts keep counting, the exit policy applies."""
    server = FakeServer(on_connect=_drop_soon)
    link = _link(server, nats_reconnect_attempts=4, nats_on_reconnect_exhausted="exit")
    links.append(link)
    await link.start()
    await wait_for(link.exit_requested.is_set, 10, "exhaustion")
    delays = [e["delay_ms"] for e in logs if e.get("error_code") == "NATS_RECONNECT_ATTEMPT"]
    assert [e["attempt"] for e in logs if e.get("error_code") == "NATS_RECONNECT_ATTEMPT"] == [
        1,
        2,
        3,
        4,
    ]
    assert delays[-1] >= 160  # the cap (200 ms, jitter 0.2), not the base again
    assert metric(link, "router_nats_reconnection_exhausted_total") == 1


async def test_a_healthy_connection_resets_the_backoff(links: list[Link]) -> None:
    """Up long enough with a ping answered: the next outage starts again from attempt 1."""
    server = FakeServer(refuse=2)
    link = _link(server, nats_reconnect_attempts=0)
    links.append(link)
    await link.start()
    assert await link.wait_connected(5)
    assert link.status()["reconnect_attempts"] == 2  # not yet proved healthy
    await wait_for(lambda: link.status()["reconnect_attempts"] == 0, 5, "a healthy connection")


async def test_a_loss_before_proving_healthy_stays_exhausted(links: list[Link]) -> None:
    """Exhausted, reconnected but not yet proved healthy, lost again: disconnected at once (the
    exhaustion policy still applies), not reconnecting as if the outage were new."""
    server = FakeServer(refuse=3)
    link = _link(server, nats_reconnect_attempts=2, nats_max_reconnect_delay_ms=50)
    links.append(link)
    await link.start()
    assert await link.wait_connected(5)
    assert (
        link.status()["exhausted"],
        metric(link, "router_nats_reconnection_exhausted_total"),
    ) == (
        True,
        1,
    )
    await server.connections[-1].abort(ConnectionClosedError("dropped"))
    await wait_for(lambda: not link.ready, 5, "the loss")
    assert link.state is ConnectionState.DISCONNECTED
    assert metric(link, "router_nats_connection_status") == 0
    assert metric(link, "router_nats_reconnection_exhausted_total") == 1  # the same episode
