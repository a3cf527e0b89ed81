"""Chaos fixtures: a real Router process, a raw link, the load, and the figures report.

Every scenario records its figures (recovery time, accepted during the outage, delivered
after, lost, duplicated, replay rate); they are printed at the end of the run and written to
``build/chaos-report.json`` (the README's table comes from there).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.embedded import NatsServer
from natsrouter.link import Link
from natsrouter.observability.metrics import LinkMetrics
from tests.chaos.harness import DecideLoad, RawLoad, settle
from tests.conftest import ADMIN_TOKEN
from tests.helpers.process import RouterProcess

ROOT = Path(__file__).resolve().parents[2]
REPORT: dict[str, dict[str, Any]] = {}

# The Router under chaos: fast detection and backoff, a spool, room for every queued item.
ROUTER_ENV = {
    "ROUTER_NATS_CONNECT_TIMEOUT_MS": "500",
    "ROUTER_NATS_RECONNECT_DELAY_MS": "50",
    "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "500",
    "ROUTER_NATS_PING_INTERVAL_MS": "500",
    "ROUTER_NATS_REQUEST_TIMEOUT_MS": "1000",
    "ROUTER_JS_PUBLISH_RETRY_DEADLINE_MS": "3000",
    "ROUTER_NATS_MAX_PENDING_OPERATIONS": "100000",
    "ROUTER_NATS_FAULT_INJECTION_ENABLED": "true",
    "ROUTER_NATS_FAULT_INJECTION_TOKEN": ADMIN_TOKEN,
}
RAW_SETTINGS = {
    "nats_connect_timeout_ms": 500,
    "nats_reconnect_delay_ms": 50,
    "nats_max_reconnect_delay_ms": 500,
    "nats_ping_interval_ms": 500,
    "nats_request_timeout_ms": 1000,
    "js_publish_retry_deadline_ms": 3000,
    "nats_max_pending_operations": 100_000,
}
RAW_STREAM = "CHAOS_RAW"
RAW_SUBJECT = "chaos.raw"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    out = ROOT / "build" / "chaos-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(REPORT, indent=2, sort_keys=True) + "\n")
    terminalreporter.section("chaos figures")
    for name, figures in REPORT.items():
        terminalreporter.write_line(f"{name}: {json.dumps(figures, sort_keys=True)}")
    terminalreporter.write_line(f"(written to {out})")


@pytest.fixture
async def server(nats_server: NatsServer) -> NatsServer:
    """The suite's nats-server (JetStream store on disk, killed after) with the raw stream."""
    await create_raw_stream([nats_server.url])
    return nats_server


@pytest.fixture
def report() -> dict[str, dict[str, Any]]:
    return REPORT


@pytest.fixture
def routers() -> Iterator[list[RouterProcess]]:
    """Router processes started by a test; SIGKILLed at teardown if still running."""
    started: list[RouterProcess] = []
    try:
        yield started
    finally:
        for router in started:
            router.kill()


def router_env(tmp: Path, nats_url: str, **extra: str) -> dict[str, str]:
    return {
        **ROUTER_ENV,
        "ROUTER_NATS_URL": nats_url,
        "ROUTER_NATS_PENDING_SPOOL_PATH": str(tmp / "router-spool.db"),
        **extra,
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
async def raw_links(tmp_path: Path) -> AsyncIterator[list[Link]]:
    links: list[Link] = []
    try:
        yield links
    finally:
        for link in links:
            await link.close()


async def start_raw_link(links: list[Link], tmp: Path, servers: list[str]) -> Link:
    """A link in the test process, with its own spool, for the raw publish load."""
    settings = build_settings(
        {
            **RAW_SETTINGS,
            "nats_url": ",".join(servers),
            "nats_pending_spool_path": str(tmp / "raw-spool.db"),
        }
    )
    link = Link(settings, LinkMetrics(CollectorRegistry()))
    links.append(link)
    await link.start()
    assert await link.wait_connected(10)
    return link


async def create_raw_stream(servers: list[str], replicas: int = 1) -> None:
    nc = await nats.connect(servers, connect_timeout=2)
    try:
        await nc.jetstream(timeout=10).add_stream(
            StreamConfig(
                name=RAW_STREAM,
                subjects=[RAW_SUBJECT],
                duplicate_window=3600,
                num_replicas=replicas,
            )
        )
    finally:
        await nc.close()


DECIDE_RATE = 50  # per second
RAW_RATE = 50


@dataclass
class Rig:
    router: RouterProcess
    link: Link
    decides: DecideLoad
    raw: RawLoad

    def start(self) -> None:
        self.decides.start()
        self.raw.start()

    async def stop(self) -> None:
        await asyncio.gather(self.decides.stop(), self.raw.stop())

    async def steady(self, seconds: float) -> None:
        """Let the load run, checking the Router process stays up all along."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.router.alive, "the Router process died"
            await asyncio.sleep(0.1)


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
def make_rig(
    tmp_path: Path,
    routers: list[RouterProcess],
    raw_links: list[Link],
    http: aiohttp.ClientSession,
) -> RigFactory:
    """A started Router process (its NATS URL, extra ROUTER_* settings) and a raw link, each
    with its load, stopped at teardown by the fixtures they come from."""

    async def rig_up(router_url: str, raw_servers: list[str], **env: str) -> Rig:
        router = RouterProcess(router_env(tmp_path, router_url, **env), tmp_path)
        routers.append(router)
        # Waited for without blocking the loop: the proxy of scenario 2 runs on it.
        await settle(("the Router to be ready", router.ready), timeout_s=30)
        link = await start_raw_link(raw_links, tmp_path, raw_servers)
        decides = DecideLoad(rate=DECIDE_RATE, router=router, session=http)
        raw = RawLoad(rate=RAW_RATE, link=link)
        return Rig(router, link, decides, raw)

    return rig_up
