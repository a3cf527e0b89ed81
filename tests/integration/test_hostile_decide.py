"""Hostile decide requests against a real Router and nats-server: refused, nothing stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from natsrouter.embedded import NatsServer
from tests.conftest import RouterFactory, write_policy
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import rmetric
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker
from tests.integration.test_router_decide import decide_request, http_decide, nats_decide

pytestmark = pytest.mark.integration

ROUTER_STREAMS = (
    "ROUTER_ASSIGNMENTS",
    "ROUTER_ACKS",
    "ROUTER_RESULTS",
    "ROUTER_USAGE",
    "ROUTER_DLQ",
)
# Subjects the Router owns (with the defaults), the JetStream API and an inbox.
RESERVED = (
    "beamline.usage.v1.metered",
    "caf.exec.assign.v1.ack",
    "caf.exec.assign.v1.ack.dlq",
    "caf.exec.result.v1",
    "caf.exec.result.v1.dlq",
    "beamline.router.v1.decide",
    "beamline.router.v1.decide.reply",
    "$JS.API.STREAM.DELETE.ROUTER_USAGE",
    "_INBOX.abc",
)


async def stream_sizes(url: str) -> dict[str, int]:
    return {name: len(await stored_messages(url, name)) for name in ROUTER_STREAMS}


def push_to(subject: str) -> bytes:
    """One request per subject (a request_id names one request)."""
    body = decide_request(request_id=subject, push_assignment=True, assignment_subject=subject)
    return json.dumps(body).encode()


async def test_reserved_assignment_subjects_are_refused_and_nothing_is_stored(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Router-owned, $ and _INBOX subjects: invalid_request naming the field, streams empty."""
    router = await make_router([nats_server.url], assignment_subjects_allowed=">")
    assert await router.link.wait_connected(5)
    answers: list[dict[str, Any]] = []
    for subject in RESERVED:
        answers.append(await nats_decide(nats_server.url, push_to(subject)))
        status, answer = await http_decide(router.http.port, push_to(subject))
        assert status == 400
        answers.append(answer)
    assert {
        (a["error"]["code"], a["error"]["details"]["field"], a["error"]["details"]["reason"])
        for a in answers
    } == {("invalid_request", "assignment_subject", "reserved")}
    assert await stream_sizes(nats_server.url) == dict.fromkeys(ROUTER_STREAMS, 0)
    refused = 2 * len(RESERVED)
    assert rmetric(router, "router_assignment_subject_refused_total", reason="reserved") == refused
    assert rmetric(router, "router_decide_total", outcome="invalid_request") == refused
    assert rmetric(router, "router_assignments_total", outcome="sent") == 0


async def test_by_default_only_the_assignment_subject_and_its_sub_subjects_are_allowed(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Default: caf.exec.assign.v1 and caf.exec.assign.v1.gpu pass, custom.assign does not."""
    await create_stream(nats_server.url, "GPU", ["caf.exec.assign.v1.gpu"])
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    answer = await nats_decide(nats_server.url, push_to("caf.exec.assign.v1.gpu"))
    assert (answer["assignment"]["outcome"], answer["assignment"]["stream"]) == ("sent", "GPU")
    answer = await nats_decide(nats_server.url, push_to("caf.exec.assign.v1"))
    assert answer["assignment"]["stream"] == "ROUTER_ASSIGNMENTS"
    status, answer = await http_decide(router.http.port, push_to("custom.assign"))
    assert (status, answer["error"]["details"]) == (
        400,
        {"field": "assignment_subject", "reason": "not_allowed"},
    )
    assert rmetric(router, "router_assignment_subject_refused_total", reason="not_allowed") == 1


async def test_operator_patterns_allow_other_subjects(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """assignment_subjects_allowed = custom.*: custom.assign is used, other.x refused."""
    await create_stream(nats_server.url, "CUSTOM", ["custom.assign"])
    router = await make_router([nats_server.url], assignment_subjects_allowed="custom.*")
    assert await router.link.wait_connected(5)
    answer = await nats_decide(nats_server.url, push_to("custom.assign"))
    assert answer["assignment"]["stream"] == "CUSTOM"
    answer = await nats_decide(nats_server.url, push_to("caf.exec.assign.v1.gpu"))
    assert answer["error"]["details"]["reason"] == "not_allowed"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'"constraints":{"max_cost":Infinity}', "constraints.max_cost"),
        (b'"constraints":{"max_latency_ms":NaN}', "constraints.max_latency_ms"),
        (b'"metadata":{"n":1' + b"0" * 5000 + b"}", "metadata.n"),
        (b'"metadata":{"x":1e400}', "metadata.x"),
        (b'"metadata":' + b"[" * 50_000 + b"]" * 50_000, None),
    ],
)
async def test_non_standard_json_is_invalid_request_on_both_transports(
    nats_server: NatsServer, make_router: RouterFactory, body: bytes, field: str | None
) -> None:
    """NaN, Infinity, huge numbers, deep nesting: 400 invalid_request naming the field."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    raw = json.dumps(decide_request()).encode()[:-1] + b"," + body + b"}"
    status, answer = await http_decide(router.http.port, raw)
    assert (status, answer["error"]["code"]) == (400, "invalid_request")
    assert answer["error"].get("details", {}).get("field") == field
    answer = await nats_decide(nats_server.url, raw)
    assert answer["error"]["code"] == "invalid_request"
    assert rmetric(router, "router_decide_total", outcome="invalid_request") == 2
    assert rmetric(router, "router_decide_total", outcome="internal") == 0


async def test_a_worker_result_with_nan_is_dead_lettered_as_invalid(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """latency_ms NaN, cost Infinity: DLQ reason invalid, no usage event, estimates unchanged."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    raw = (
        b'{"assignment_id":"a-1","status":"success","provider_id":"a","tenant_id":"acme",'
        b'"latency_ms":NaN,"cost":Infinity}'
    )
    try:
        await worker.publish_raw("caf.exec.result.v1", raw)
    finally:
        await worker.close()
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="results", reason="invalid") == 1,
        10,
        "the dead letter",
    )
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert (dead.data, dead.headers["dlq_error"]) == (raw, "latency_ms: NaN is not a JSON number")
    assert await stored_messages(nats_server.url, "ROUTER_USAGE") == []
    assert router.health.expected("a", None) == (None, None)


async def test_constraints_no_provider_meets_are_422_and_open_breakers_503_retry_after(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """The client's problem (422 constraints_unsatisfiable) vs nobody available now (503)."""
    priced = {"providers": [{"name": "a", "weight": 1, "expected_cost": 0.5}]}
    write_policy(policies_dir, "acme", "priced", priced)
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    cheap = decide_request(request_id="cheap", policy_id="priced", constraints={"max_cost": 0.1})
    status, answer = await http_decide(router.http.port, json.dumps(cheap).encode())
    assert (status, answer["error"]["code"], answer["error"]["details"]["field"]) == (
        422,
        "constraints_unsatisfiable",
        "constraints",
    )
    worker = await FakeWorker.connect(nats_server.url)
    try:
        for n, provider in enumerate(("a", "a", "b", "b")):
            body = {"assignment_id": f"x-{n}", "status": "error", "provider_id": provider}
            body["tenant_id"] = "acme"
            await worker.publish_raw("caf.exec.result.v1", json.dumps(body).encode())
    finally:
        await worker.close()
    await wait_for(lambda: rmetric(router, "router_results_total", status="error") == 4, 10)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{router.http.port}/v1/decide", data=json.dumps(decide_request())
        ) as resp,
    ):
        answer = await resp.json()
        assert (resp.status, resp.headers["Retry-After"]) == (503, "1")
    assert answer["error"]["code"] == "decision_failed"
    assert rmetric(router, "router_decide_total", outcome="constraints_unsatisfiable") == 1
    assert rmetric(router, "router_decide_total", outcome="decision_failed") == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("trace_id", "t\x01x"),
        ("trace_id", "t" * 257),
        ("tenant_id", "acme\x7f"),
        ("tenant_id", "a" * 257),
    ],
)
async def test_header_ids_follow_the_payload_rules_and_nothing_is_stored(
    nats_server: NatsServer, make_router: RouterFactory, name: str, value: str
) -> None:
    """A trace_id or tenant_id header with a control character or over 256 characters:
    invalid_request naming the header, no assignment stored, the bad value not echoed."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    body = json.dumps(decide_request(push_assignment=True)).encode()
    answer = await nats_decide(nats_server.url, body, {name: value})
    assert (answer["error"]["code"], answer["error"]["details"]) == (
        "invalid_request",
        {"field": name},
    )
    assert answer["context"] == {"request_id": "req-1", "trace_id": "trace-1"}
    assert await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS") == []


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(decide_request(request_id="r" * 900_000)).encode(),
        json.dumps(decide_request()).encode()[:-1]
        + b',"metadata":{"'
        + b"k" * 500_000
        + b'":NaN}}',
    ],
)
async def test_a_refusal_quoting_a_huge_value_is_still_answered_over_nats(
    nats_server: NatsServer, make_router: RouterFactory, body: bytes
) -> None:
    """A 900,000-character request_id or metadata key: the refusal fits a NATS message
    (message and field cut to 512 characters, the oversized id not echoed), so it arrives."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    answer = await nats_decide(nats_server.url, body)
    assert answer["error"]["code"] == "invalid_request"
    assert len(answer["error"]["message"]) <= 512
    assert len(answer["error"]["details"]["field"]) <= 512
    assert answer["context"]["request_id"] in (None, "req-1")
    assert rmetric(router, "router_decide_total", outcome="invalid_request") == 1
