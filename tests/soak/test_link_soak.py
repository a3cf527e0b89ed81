"""Soak: steady JetStream load through ten server crashes; nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.link import ConnectionState, Outcome
from tests.conftest import LinkFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import metric
from tests.helpers.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CRASHES = 10


@pytest.mark.timeout(300)
async def test_ten_crashes_under_load_lose_and_double_nothing(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Every accepted publish is stored exactly once (by Nats-Msg-Id) after 10 SIGKILLs."""
    await create_stream(nats_server.url, "SOAK", ["soak.>"], duplicate_window_s=600)
    link = await make_link(
        [nats_server.url], nats_max_pending_operations=100_000, nats_reconnect_attempts=0
    )
    assert await link.wait_connected(5)
    outcomes: dict[str, Outcome] = {}
    # Warm-up: the first JetStream publish starts nats-py's request-inbox task.
    warm = await link.publish_with_ack("soak.x", b"warm-up", {"Nats-Msg-Id": "warm-up"})
    outcomes["warm-up"] = warm.outcome
    baseline_tasks = len(asyncio.all_tasks())
    stop = asyncio.Event()

    async def publisher() -> None:
        i = 0
        while not stop.is_set():
            msg_id = f"m-{i}"
            result = await link.publish_with_ack("soak.x", b"%d" % i, {"Nats-Msg-Id": msg_id})
            outcomes[msg_id] = result.outcome
            i += 1
            await asyncio.sleep(0.002)

    task = asyncio.create_task(publisher())
    try:
        for _ in range(CRASHES):
            await asyncio.sleep(1.5)
            nats_server.kill()
            await asyncio.sleep(0.7)
            await nats_server.astart()
            await wait_for(lambda: link.state is ConnectionState.CONNECTED, 10)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await task
    await wait_for(lambda: link.pending.count == 0, 30, "queue drained")

    assert set(outcomes.values()) <= {Outcome.SENT, Outcome.QUEUED}
    stored = await stored_messages(nats_server.url, "SOAK")
    ids = [m.headers["Nats-Msg-Id"] for m in stored]
    assert len(ids) == len(set(ids)), "a message was stored twice"
    assert set(ids) == set(outcomes), "a message was lost"
    assert metric(link, "router_nats_connection_lost_total") == CRASHES
    assert metric(link, "router_nats_connection_restored_total") == CRASHES
    assert link.accounting.balanced(0)
    assert link.alive
    # The publisher task is done; the link's own tasks are back to one connection's worth.
    await wait_for(lambda: len(asyncio.all_tasks()) <= baseline_tasks, 5, "no task leak")
