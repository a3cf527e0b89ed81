"""Shared fixtures: real nats-servers on free loopback ports, links with fast timings, logs."""

from __future__ import annotations

import json
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
from natsrouter.observability.metrics import LinkMetrics, RouterMetrics
from natsrouter.service.router import Router
from tests.helpers.proxy import TcpProxy

# The /admin/faults bearer token of every test that enables fault injection.
ADMIN_TOKEN = "test-admin-token-0123456789"

# Timings that make every failure path run in well under a second.
FAST: dict[str, Any] = {
    "nats_connect_timeout_ms": 500,
    "nats_reconnect_delay_ms": 50,
    "nats_max_reconnect_delay_ms": 200,
    "nats_reconnect_jitter": 0.2,
    "nats_ping_interval_ms": 200,
    "nats_request_timeout_ms": 1000,
    # Needed only where a test enables fault injection (it guards /admin/faults).
    "nats_fault_injection_token": ADMIN_TOKEN,
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


@pytest.fixture
async def proxy(nats_server: NatsServer) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of ``nats_server`` (black-hole, lose replies, cut), stopped after."""
    tcp = TcpProxy("127.0.0.1", nats_server.port)
    await tcp.start()
    try:
        yield tcp
    finally:
        await tcp.stop()


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


# A policy with two providers and a quick circuit breaker, for Router tests.
TWO_PROVIDERS: dict[str, Any] = {
    "providers": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
    "circuit_breaker": {
        "enabled": True,
        "failure_threshold": 2,
        "success_threshold": 1,
        "timeout_ms": 800,
        "half_open_max_calls": 1,
    },
}

# Consumer timings that make redelivery quick.
ROUTER_FAST: dict[str, Any] = {
    **FAST,
    "http_host": "127.0.0.1",
    "http_port": 0,
    "js_ack_wait_ms": 2000,
    "js_nak_delay_ms": 100,
    "shutdown_timeout_ms": 3000,
}


def write_policy(root: Path, tenant: str, policy_id: str, document: dict[str, Any]) -> Path:
    path = root / tenant / f"{policy_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    return path


RouterFactory = Callable[..., Awaitable[Router]]


@pytest.fixture
def policies_dir(tmp_path: Path) -> Path:
    """A policy directory with acme/default = TWO_PROVIDERS."""
    root = tmp_path / "policies"
    write_policy(root, "acme", "default", TWO_PROVIDERS)
    return root


@pytest.fixture
async def make_router(policies_dir: Path) -> AsyncIterator[RouterFactory]:
    """Started Routers (each with its own link and registry); stopped at teardown."""
    routers: list[Router] = []

    async def factory(
        servers: list[str], *, rng: random.Random | None = None, **overrides: Any
    ) -> Router:
        values = {
            **ROUTER_FAST,
            "nats_url": ",".join(servers),
            "policies_path": str(policies_dir),
            **overrides,
        }
        settings = build_settings(values)
        registry = CollectorRegistry()
        link = Link(settings, LinkMetrics(registry), rng=rng)
        router = Router(settings, link, RouterMetrics(registry), rng=rng)
        routers.append(router)
        await link.start()
        await router.start()
        return router

    try:
        yield factory
    finally:
        for router in routers:
            await router.stop()
            await router.link.close()
