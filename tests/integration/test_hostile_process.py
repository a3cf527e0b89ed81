"""Hostile input against a real `natsrouter run`: refused subjects store nothing; overload
is answered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from natsrouter.embedded import NatsServer
from tests.helpers.jetstream import stored_messages
from tests.helpers.process import RouterProcess
from tests.integration.test_hostile_decide import ROUTER_STREAMS
from tests.integration.test_router_decide import nats_decide

pytestmark = pytest.mark.integration


@pytest.fixture
def router(tmp_path: Path, nats_server: NatsServer) -> Iterator[RouterProcess]:
    process = RouterProcess(
        {"ROUTER_NATS_URL": nats_server.url, "ROUTER_DECIDE_MAX_IN_FLIGHT": "1"}, tmp_path
    )
    try:
        process.wait(process.ready, what="readiness")
        yield process
    finally:
        process.kill()


def request(request_id: str, **fields: Any) -> bytes:
    document = {"version": "1", "request_id": request_id, "tenant_id": "acme"}
    document["task"] = {"type": "t", "payload": {}}
    return json.dumps({**document, **fields}).encode()


async def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(url, data=body) as resp:
        return resp.status, await resp.json()


async def test_reserved_subjects_are_refused_by_a_running_router(
    router: RouterProcess, nats_server: NatsServer
) -> None:
    """Usage, ack, DLQ, $JS and _INBOX subjects over HTTP and NATS: 400, nothing stored."""
    subjects = (
        "beamline.usage.v1.metered",
        "caf.exec.assign.v1.ack",
        "caf.exec.result.v1.dlq",
        "$JS.API.STREAM.PURGE.ROUTER_USAGE",
        "_INBOX.x",
    )
    for subject in subjects:
        body = request(subject, push_assignment=True, assignment_subject=subject)
        status, answer = await post(router.decide_url, body)
        assert (status, answer["error"]["details"]) == (
            400,
            {"field": "assignment_subject", "reason": "reserved"},
        )
        answer = await nats_decide(nats_server.url, body)
        assert answer["error"]["code"] == "invalid_request"
    sizes = {name: len(await stored_messages(nats_server.url, name)) for name in ROUTER_STREAMS}
    assert sizes == dict.fromkeys(ROUTER_STREAMS, 0)
    assert router.metric("router_assignment_subject_refused_total", reason="reserved") == 10


async def test_a_running_router_answers_overloaded_beyond_decide_max_in_flight(
    router: RouterProcess, nats_server: NatsServer
) -> None:
    """A request whose body never finishes holds the one slot: the next is answered overloaded."""
    _, writer = await asyncio.open_connection("127.0.0.1", router.http_port)
    writer.write(
        b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    await writer.drain()
    answers: list[dict[str, Any]] = []

    async def overloaded() -> bool:
        answers.append(await nats_decide(nats_server.url, request(f"n-{len(answers)}")))
        return answers[-1].get("error", {}).get("code") == "overloaded"

    for _ in range(50):
        if await overloaded():
            break
    assert answers[-1]["error"]["details"] == {"limit": 1, "retry_after_s": 1}
    status, answer = await post(router.decide_url, request("h-1"))
    assert (status, answer["error"]["code"]) == (503, "overloaded")
    writer.close()
    await writer.wait_closed()
    # The slot is free again once the server has seen the connection go.
    statuses = []
    while len(statuses) < 100 and 200 not in statuses:
        statuses.append((await post(router.decide_url, request("h-2")))[0])
        await asyncio.sleep(0.02)
    assert statuses[-1] == 200
    assert router.metric("router_decide_total", outcome="overloaded") >= 2
    assert "ROUTER_DECIDE_OVERLOADED" in router.codes()
