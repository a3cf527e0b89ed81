"""`natsrouter run` keeps its pending queue in a spool unless memory is chosen explicitly."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from natsrouter.embedded import NatsServer, free_port
from tests.helpers.process import RouterProcess
from tests.helpers.worker import FakeWorker

pytestmark = pytest.mark.integration
FAST_ENV = {
    "ROUTER_NATS_RECONNECT_DELAY_MS": "50",
    "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "100",
    "ROUTER_NATS_CONNECT_TIMEOUT_MS": "500",
    "ROUTER_NATS_PING_INTERVAL_MS": "200",
    "ROUTER_NATS_REQUEST_TIMEOUT_MS": "1000",
}


@pytest.fixture
def routers() -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        yield started
    finally:
        for router in started:
            router.kill()


def decide(router: RouterProcess, request_id: str) -> dict[str, Any]:
    body = json.dumps(
        {
            "version": "1",
            "request_id": request_id,
            "tenant_id": "acme",
            "policy_id": "default",
            "task": {"type": "t", "payload": {}},
            "push_assignment": True,
        }
    ).encode()
    request = urllib.request.Request(router.decide_url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def test_assignments_queued_in_an_outage_survive_a_sigkill_by_default(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """No store configured: assignments queued while NATS is down are in data/spool.db; the
    Router is SIGKILLed, restarted in the same directory, and each is delivered once."""
    server = NatsServer(store_dir=tmp_path / "js")
    server.start()
    try:
        router = RouterProcess({"ROUTER_NATS_URL": server.url, **FAST_ENV}, tmp_path)
        routers.append(router)
        router.wait(router.ready, what="ready")
        assert router.status()["pending"]["spool"] == "data/spool.db"
        server.kill()
        router.wait(lambda: not router.ready(), what="the outage seen")
        answers = [decide(router, f"r{n}") for n in range(5)]
        assert [a["assignment"]["outcome"] for a in answers] == ["queued"] * 5
        router.kill()
        assert (tmp_path / "data" / "spool.db").is_file()

        server.start()
        router.start()
        router.wait(router.ready, what="ready again")
        router.wait(lambda: router.status()["pending"]["count"] == 0, what="the replay")
        assert router.status()["pending"]["recovered"] == 5
        assigned = asyncio.run(_read_assignments(server.url, 5))
        assert sorted(assigned) == sorted(a["assignment"]["assignment_id"] for a in answers)
        assert router.stop() == 0
    finally:
        server.kill()


async def _read_assignments(url: str, count: int) -> list[str]:
    worker = await FakeWorker.connect(url)
    try:
        documents = await worker.assignments(count)
        extra = await worker.js.stream_info("ROUTER_ASSIGNMENTS")
    finally:
        await worker.close()
    assert extra.state.messages == count  # nothing stored twice
    return [doc["assignment_id"] for doc, _ in documents]


def test_the_embedded_server_run_spools_under_its_data_directory(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """Embedded nats-server, nothing configured: data/nats and data/spool.db side by side."""
    router = RouterProcess({**FAST_ENV, "ROUTER_EMBEDDED_NATS_PORT": str(free_port())}, tmp_path)
    routers.append(router)
    router.wait(router.ready, what="ready")
    assert router.status()["pending"]["spool"] == "data/spool.db"
    assert (tmp_path / "data" / "spool.db").is_file()
    assert (tmp_path / "data" / "nats" / "jetstream").is_dir()
    assert router.stop() == 0


def test_memory_chosen_explicitly_keeps_no_spool(
    tmp_path: Path, routers: list[RouterProcess]
) -> None:
    """nats_pending_store=memory: no spool file, /status says memory (null)."""
    router = RouterProcess(
        {
            **FAST_ENV,
            "ROUTER_EMBEDDED_NATS_PORT": str(free_port()),
            "ROUTER_NATS_PENDING_STORE": "memory",
        },
        tmp_path,
    )
    routers.append(router)
    router.wait(router.ready, what="ready")
    assert router.status()["pending"]["spool"] is None
    assert not (tmp_path / "data" / "spool.db").exists()
    assert router.stop() == 0
