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
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import wait_for
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
    tmp_path: Path, proxy: TcpProxy
) -> None:
    """A push waiting on a black-holed PubAck holds the one slot: the next decide is 503."""
    router = RouterProcess(
        {
            "ROUTER_NATS_URL": proxy.url,
            "ROUTER_DECIDE_MAX_IN_FLIGHT": "1",
            "ROUTER_NATS_REQUEST_TIMEOUT_MS": "1000",
            "ROUTER_JS_PUBLISH_RETRY_DEADLINE_MS": "0",
        },
        tmp_path,
    )
    try:
        # Polled from the event loop, which also runs the proxy.
        await wait_for(router.ready, 15, "readiness")
        proxy.blackhole()
        held = asyncio.create_task(post(router.decide_url, request("held", push_assignment=True)))
        statuses: list[int] = []
        while len(statuses) < 200 and 503 not in statuses:
            status, answer = await post(router.decide_url, request(f"n-{len(statuses)}"))
            statuses.append(status)
        assert (statuses[-1], answer["error"]["code"]) == (503, "overloaded")
        assert answer["error"]["details"] == {"limit": 1, "retry_after_s": 1}
        assert not held.done()
        proxy.resume()
        status, answer = await held
        assert status == 200  # answered once the PubAck (or the queue) settled it
        status, _ = await post(router.decide_url, request("after"))
        assert status == 200
        assert router.metric("router_decide_total", outcome="overloaded") == 1
        assert "ROUTER_DECIDE_OVERLOADED" in router.codes()
    finally:
        router.kill()
