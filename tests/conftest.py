"""Shared fixtures: real nats-servers on free loopback ports, links with fast timings, logs."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.embedded import NatsServer
from natsrouter.link import Link
from natsrouter.observability.metrics import LinkMetrics

# Timings that make every failure path run in well under a second.
FAST: dict[str, Any] = {
    "nats_connect_timeout_ms": 500,
    "nats_reconnect_delay_ms": 50,
    "nats_max_reconnect_delay_ms": 200,
    "nats_reconnect_jitter": 0.2,
    "nats_ping_interval_ms": 200,
    "nats_request_timeout_ms": 1000,
}


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with JetStream on a free port, its store in tmp_path."""
    server = NatsServer(store_dir=tmp_path / "js", log_file=tmp_path / "nats.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


LinkFactory = Callable[..., Awaitable[Link]]


@pytest.fixture
async def make_link() -> AsyncIterator[LinkFactory]:
    """Build started links with FAST timings plus overrides; all closed at teardown."""
    links: list[Link] = []

    async def factory(
        servers: list[str],
        *,
        start: bool = True,
        rng: random.Random | None = None,
        **overrides: Any,
    ) -> Link:
        settings = build_settings({**FAST, "nats_url": ",".join(servers), **overrides})
        link = Link(settings, LinkMetrics(CollectorRegistry()), rng=rng)
        links.append(link)
        if start:
            await link.start()
        return link

    try:
        yield factory
    finally:
        for link in links:
            await link.close()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every structured log event emitted during the test, as dicts."""
    with structlog.testing.capture_logs() as captured:
        yield captured
