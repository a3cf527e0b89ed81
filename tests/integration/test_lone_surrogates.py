"""Lone surrogates (``"\\ud800"``: valid JSON syntax, not Unicode text) against a real Router.

Such a string cannot be encoded as UTF-8: in a header, a subject, a message id or a bucket
key it once made a decide answer 500 and a worker message fail until its last delivery. A
decide refuses it where it would become one of those; a worker message, anywhere.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from natsrouter.embedded import NatsServer
from tests.conftest import TWO_PROVIDERS, RouterFactory, write_policy
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import rmetric
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker
from tests.integration.test_router_decide import decide_request, http_decide, nats_decide

pytestmark = pytest.mark.integration

LONE = "\ud800"
# (field named in the answer, the request's fields with a lone surrogate there): the fields
# that become headers, message ids, bucket keys or a subject.
DECIDE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("request_id", {"request_id": "r" + LONE}),
    ("tenant_id", {"tenant_id": "acme" + LONE}),
    ("trace_id", {"trace_id": "t" + LONE}),
    ("assignment_subject", {"assignment_subject": "caf.exec.assign.v1.x" + LONE}),
]


@pytest.mark.parametrize(("field", "fields"), DECIDE_CASES, ids=[c[0] for c in DECIDE_CASES])
async def test_a_lone_surrogate_in_a_decide_is_invalid_request_naming_the_field(
    nats_server: NatsServer, make_router: RouterFactory, field: str, fields: dict[str, Any]
) -> None:
    """Over HTTP and NATS, shared state on: 400 invalid_request naming the field, nothing
    stored, no 500, shared state still available."""
    router = await make_router([nats_server.url], shared_state_enabled=True)
    assert await router.link.wait_connected(5)
    body = json.dumps(decide_request(push_assignment=True, **fields)).encode()
    status, answer = await http_decide(router.http.port, body)
    over_nats = await nats_decide(nats_server.url, body)
    for error in (answer["error"], over_nats["error"]):
        assert (error["code"], error["details"]["field"]) == ("invalid_request", field)
    assert status == 400
    assert rmetric(router, "router_decide_total", outcome="invalid_request") == 2
    assert rmetric(router, "router_decide_total", outcome="internal") == 0
    assert await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS") == []
    assert router.shared is not None and router.shared.status()["available"] is True


async def test_a_lone_surrogate_in_the_payload_or_a_session_is_passed_on_as_sent(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """In task.type, payload_ref, payload and the sticky session value (shared state on):
    200, the assignment stored with each string escaped as the client wrote it."""
    write_policy(policies_dir, "acme", "default", {**TWO_PROVIDERS, "sticky": {"enabled": True}})
    router = await make_router([nats_server.url], shared_state_enabled=True)
    assert await router.link.wait_connected(5)
    task = {"type": "t" + LONE, "payload_ref": "s3://" + LONE, "payload": {LONE: LONE}}
    body = decide_request(push_assignment=True, task=task, metadata={"session_id": LONE})
    status, answer = await http_decide(router.http.port, json.dumps(body).encode())
    assert (status, answer["assignment"]["outcome"]) == (200, "sent")
    [stored] = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert json.loads(stored.data)["job"] == {**task, "type": "t" + LONE}
    assert json.loads(stored.data)["metadata"] == {"session_id": LONE}
    assert router.shared is not None and router.shared.status()["available"] is True


@pytest.mark.parametrize("name", ["tenant_id", "trace_id"])
async def test_an_http_header_that_is_not_utf8_is_invalid_request_naming_it(
    nats_server: NatsServer, make_router: RouterFactory, name: str
) -> None:
    """A tenant_id or trace_id header with the byte 0xff (read as a lone surrogate): 400
    invalid_request naming the header, nothing stored."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    body = json.dumps(decide_request(push_assignment=True)).encode()
    head = (
        f"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", router.http.port)
    writer.write(head + name.encode() + b": t\xff\r\n\r\n" + body)
    raw = await reader.read()
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    answer = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert status_line.split()[1] == b"400"
    assert (answer["error"]["code"], answer["error"]["details"]) == (
        "invalid_request",
        {"field": name},
    )
    assert await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS") == []


RESULT = {"assignment_id": "a-1", "status": "success", "provider_id": "a", "tenant_id": "acme"}
ACK = {"assignment_id": "a-1", "status": "accepted", "tenant_id": "acme"}
WORKER_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("results", "caf.exec.result.v1", {**RESULT, "tenant_id": "acme" + LONE}, "tenant_id"),
    ("results", "caf.exec.result.v1", {**RESULT, "request_id": LONE}, "request_id"),
    ("results", "caf.exec.result.v1", {**RESULT, "trace_id": "t" + LONE}, "trace_id"),
    ("results", "caf.exec.result.v1", {**RESULT, "extra": {LONE: 1}}, "extra.\\ud800"),
    ("acks", "caf.exec.assign.v1.ack", {**ACK, "assignment_id": LONE}, "assignment_id"),
    ("acks", "caf.exec.assign.v1.ack", {**ACK, "message": "m" + LONE}, "message"),
]


@pytest.mark.parametrize(
    ("consumer", "subject", "document", "field"),
    WORKER_CASES,
    ids=[f"{c[0]}-{c[3]}" for c in WORKER_CASES],
)
async def test_a_worker_message_with_a_lone_surrogate_is_dead_lettered_as_invalid(
    nats_server: NatsServer,
    make_router: RouterFactory,
    consumer: str,
    subject: str,
    document: dict[str, Any],
    field: str,
) -> None:
    """Dead-lettered at its first delivery as invalid, naming the field, no usage event; the
    next good message is processed (the consumer is not poisoned)."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    good = {**(RESULT if consumer == "results" else ACK), "assignment_id": "a-2"}
    try:
        await worker.publish_raw(subject, json.dumps(document).encode())
        await worker.publish_raw(subject, json.dumps(good).encode())
    finally:
        await worker.close()
    processed = (
        ("router_results_total", "success")
        if consumer == "results"
        else ("router_acks_total", "accepted")
    )
    await wait_for(
        lambda: rmetric(router, processed[0], status=processed[1]) == 1, 10, "the good message"
    )
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert dead.headers["dlq_reason"] == "invalid"
    assert dead.headers["dlq_num_delivered"] == "1"
    assert dead.headers["dlq_error"].startswith(f"{field}: ")
    assert rmetric(router, "router_messages_invalid_total", consumer=consumer) == 1
    assert rmetric(router, "router_dlq_total", consumer=consumer, reason="invalid") == 1
    usage = await stored_messages(nats_server.url, "ROUTER_USAGE")
    assert len(usage) == (1 if consumer == "results" else 0)
