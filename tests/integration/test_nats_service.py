"""The Router answers the NATS services protocol ($SRV.PING, INFO, STATS) on a real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.micro.service import ServiceInfo, ServiceStats

from natsrouter import __version__
from natsrouter.embedded import NatsServer
from natsrouter.service.router import Router
from tests.conftest import RouterFactory

pytestmark = pytest.mark.integration

DECIDE = "beamline.router.v1.decide"
GOOD = {
    "version": "1",
    "request_id": "r1",
    "tenant_id": "acme",
    "task": {"type": "text", "payload": {}},
}


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc
    finally:
        await nc.close()


async def connected(make_router: RouterFactory, server: NatsServer) -> Router:
    router = await make_router([server.url])
    assert await router.link.wait_connected(5)
    return router


async def ask(nc: Client, subject: str, body: bytes = b"") -> dict[str, Any]:
    reply = await nc.request(subject, body, timeout=2)
    document: dict[str, Any] = json.loads(reply.data)
    return document


async def test_info_names_the_decide_endpoint_and_its_queue_group(
    nats_server: NatsServer, make_router: RouterFactory, client: Client
) -> None:
    """$SRV.INFO answers name, id, version and the decide endpoint with its queue group."""
    router = await connected(make_router, nats_server)
    info = await ask(client, "$SRV.INFO")
    assert info == {
        "type": "io.nats.micro.v1.info_response",
        "name": "router",
        "id": router.nats_service.id,
        "version": __version__,
        "metadata": {},
        "description": "Routes jobs to providers: which provider should run this task",
        "endpoints": [
            {
                "name": "decide",
                "subject": DECIDE,
                "queue_group": "router-decide-group",
                "metadata": {},
            }
        ],
    }
    assert ServiceInfo.from_dict(info).endpoints[0].queue_group == "router-decide-group"


async def test_stats_count_nats_requests_and_errors(
    nats_server: NatsServer, make_router: RouterFactory, client: Client
) -> None:
    """$SRV.STATS.router counts two NATS decides, one of them refused, and no HTTP decide."""
    router = await connected(make_router, nats_server)
    assert (await ask(client, DECIDE, json.dumps(GOOD).encode()))["ok"] is True
    assert (await ask(client, DECIDE, b"{not json"))["ok"] is False
    status, _ = await router.decide.handle(json.dumps(GOOD).encode(), None, "http")
    assert status == 200
    stats = await ask(client, "$SRV.STATS.router")
    assert (stats["type"], stats["name"], stats["id"]) == (
        "io.nats.micro.v1.stats_response",
        "router",
        router.nats_service.id,
    )
    [endpoint] = stats["endpoints"]
    assert endpoint["name"] == "decide"
    assert endpoint["subject"] == DECIDE
    assert endpoint["queue_group"] == "router-decide-group"
    assert (endpoint["num_requests"], endpoint["num_errors"]) == (2, 1)
    assert endpoint["last_error"] == "invalid_request"
    assert endpoint["processing_time"] > 0
    assert endpoint["average_processing_time"] == endpoint["processing_time"] // 2
    assert ServiceStats.from_dict(stats).endpoints[0].num_requests == 2


async def test_ping_by_name_and_by_id(
    nats_server: NatsServer, make_router: RouterFactory, client: Client
) -> None:
    """$SRV.PING.router and $SRV.PING.router.<id> answer with the same identity."""
    router = await connected(make_router, nats_server)
    identity = {
        "type": "io.nats.micro.v1.ping_response",
        "name": "router",
        "id": router.nats_service.id,
        "version": __version__,
        "metadata": {},
    }
    assert await ask(client, "$SRV.PING.router") == identity
    assert await ask(client, f"$SRV.PING.router.{router.nats_service.id}") == identity


async def test_service_answers_again_after_the_server_restarts(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """The $SRV subscriptions are the link's: bound again after a reconnect."""
    router = await connected(make_router, nats_server)
    await nats_server.arestart()
    assert await router.link.wait_connected(5)
    nc = await nats.connect(nats_server.url)
    try:
        assert (await ask(nc, "$SRV.INFO.router"))["id"] == router.nats_service.id
    finally:
        await nc.close()


async def test_every_router_answers_a_ping(
    nats_server: NatsServer, make_router: RouterFactory, client: Client
) -> None:
    """Two Routers: two answers to one $SRV.PING, each with its own id."""
    routers = [await connected(make_router, nats_server) for _ in range(2)]
    inbox = client.new_inbox()
    sub = await client.subscribe(inbox)
    await client.publish("$SRV.PING", b"", reply=inbox)
    ids = {json.loads((await sub.next_msg(timeout=2)).data)["id"] for _ in routers}
    assert ids == {router.nats_service.id for router in routers}
