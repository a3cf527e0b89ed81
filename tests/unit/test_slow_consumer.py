"""nats-py's slow-consumer drops become a metric and a rate-limited WARN line."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.link import Link
from natsrouter.link.nats_transport import ConnectOptions, NatsConnection, NatsTransport
from natsrouter.observability.metrics import LinkMetrics
from tests.helpers.observe import codes, metric


def test_each_drop_is_counted_and_a_burst_logged_once(logs: list[dict[str, Any]]) -> None:
    """Three drops: router_nats_slow_consumer_drops_total 3, one NATS_SLOW_CONSUMER line."""
    settings = build_settings({"nats_url": "nats://127.0.0.1:1"})
    transport = NatsTransport(ConnectOptions.from_settings(settings))
    link = Link(settings, LinkMetrics(CollectorRegistry()), transport=transport)
    assert transport.on_slow_consumer is not None  # the link hooked its telemetry in
    conn = NatsConnection("nats://127.0.0.1:1", lambda *_: None, transport.on_slow_consumer)
    drop = nats.errors.SlowConsumerError(subject="s.x", reply="", sid=1, sub=None)

    async def drops() -> None:
        for _ in range(3):
            await conn._on_error(drop)

    asyncio.run(drops())
    assert metric(link, "router_nats_slow_consumer_drops_total") == 3
    assert codes(logs) == ["NATS_SLOW_CONSUMER"]
