"""The Router's flow through nats-server SIGKILLs: nothing lost, nothing duplicated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from natsrouter.embedded import NatsServer
from tests.conftest import RouterFactory
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import rmetric
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker
from tests.integration.test_router_consumers import wait_settled
from tests.integration.test_router_decide import decide_request, http_decide

pytestmark = pytest.mark.integration


async def test_server_killed_twice_mid_flow_loses_and_duplicates_nothing(
    tmp_path: Path, make_router: RouterFactory
) -> None:
    """Decides before and during an outage, results around a second kill: each stored once."""
    server = NatsServer(store_dir=tmp_path / "js")
    server.start()
    try:
        router = await make_router([server.url])
        assert await router.link.wait_connected(5)
        assignment_ids: list[str] = []

        async def decide(n: int, prefix: str) -> None:
            for i in range(n):
                body = json.dumps(decide_request(request_id=f"{prefix}{i}", push_assignment=True))
                status, answer = await http_decide(router.http.port, body.encode())
                assert status == 200
                assignment_ids.append(answer["decision"]["assignment_id"])

        await decide(10, "before-")
        server.kill()
        await wait_for(lambda: router.link.state.value != "connected", 5, "the loss")
        await decide(10, "during-")
        assert rmetric(router, "router_assignments_total", outcome="queued") == 10

        server.start()  # same port, same store
        await wait_for(lambda: router.link.pending.count == 0, 10, "the replay")
        stored = await stored_messages(server.url, "ROUTER_ASSIGNMENTS")
        assert sorted(m.headers["Nats-Msg-Id"] for m in stored) == sorted(assignment_ids)

        worker = await FakeWorker.connect(server.url)
        try:
            assignments = await worker.assignments(20)
            for assignment, _ in assignments:
                await worker.result(assignment)
        finally:
            await worker.close()
        # Kill again while the results consumer is working through them.
        await wait_for(lambda: rmetric(router, "router_usage_emitted_total") >= 3, 10, "a few")
        server.restart()
        await wait_settled(server.url, "ROUTER_RESULTS", "router-results", timeout_s=20)
        usage = await stored_messages(server.url, "ROUTER_USAGE")
        assert sorted(m.headers["Nats-Msg-Id"] for m in usage) == sorted(
            f"usage-4:acme:{a}" for a in assignment_ids
        )
        processed = rmetric(router, "router_results_total", status="success")
        duplicates = rmetric(router, "router_results_duplicate_total")
        # A result whose ack (or PubAck) died with the server comes back and is recognised.
        assert processed + duplicates >= 20
        assert processed <= 20
        assert rmetric(router, "router_nats_connection_restored_total") == 2
    finally:
        server.kill()
