"""Decide over NATS and HTTP against a real nats-server: answers, codes, assignments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest

from natsrouter.embedded import NatsServer
from tests.conftest import RouterFactory, write_policy
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import codes, rmetric
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker

pytestmark = pytest.mark.integration


def decide_request(**overrides: Any) -> dict[str, Any]:
    return {
        "version": "1",
        "request_id": "req-1",
        "tenant_id": "acme",
        "trace_id": "trace-1",
        "task": {"type": "text", "payload": {"prompt": "hi"}},
        **overrides,
    }


async def nats_decide(url: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    nc = await nats.connect(url)
    try:
        reply = await nc.request("beamline.router.v1.decide", body, timeout=5, headers=headers)
    finally:
        await nc.close()
    return json.loads(reply.data)


async def http_decide(port: int, body: bytes) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/v1/decide", data=body) as resp,
    ):
        return resp.status, json.loads(await resp.read())


async def test_decide_over_nats_answers_with_a_decision(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """A request on the decide subject gets a DecideResponse for the acme policy."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    answer = await nats_decide(nats_server.url, json.dumps(decide_request()).encode())
    assert answer["ok"] is True
    assert answer["decision"]["provider_id"] in {"a", "b"}
    assert answer["decision"]["reason"] == "weighted"
    assert answer["decision"]["policy_id"] == "default"
    assert answer["context"] == {"request_id": "req-1", "trace_id": "trace-1"}
    assert rmetric(router, "router_decide_total", outcome="ok") == 1
    assert rmetric(router, "router_decide_duration_seconds_count", transport="nats") == 1


async def test_headers_win_over_payload_fields(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """trace_id and tenant_id headers replace the payload's values."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    body = json.dumps(decide_request(tenant_id="someone-else")).encode()
    answer = await nats_decide(nats_server.url, body, {"tenant_id": "acme", "trace_id": "t-h"})
    assert answer["ok"] is True
    assert answer["context"]["trace_id"] == "t-h"


async def test_request_without_reply_inbox_is_answered_on_the_reply_subject(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """A plain publish to the decide subject is answered on <subject>.reply."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    nc = await nats.connect(nats_server.url)
    try:
        sub = await nc.subscribe("beamline.router.v1.decide.reply")
        await nc.publish("beamline.router.v1.decide", json.dumps(decide_request()).encode())
        msg = await sub.next_msg(timeout=5)
    finally:
        await nc.close()
    assert json.loads(msg.data)["context"]["request_id"] == "req-1"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        (json.dumps(decide_request(version="2")).encode(), 400, "invalid_request"),
        (json.dumps(decide_request(task={"type": "text"})).encode(), 400, "invalid_request"),
        (json.dumps(decide_request(tenant_id="nobody")).encode(), 404, "policy_not_found"),
        (json.dumps(decide_request(policy_id="premium")).encode(), 404, "policy_not_found"),
    ],
)
async def test_http_errors_carry_the_contract_code_and_status(
    nats_server: NatsServer, make_router: RouterFactory, body: bytes, status: int, code: str
) -> None:
    """Bad input over HTTP: the ErrorResponse code, its HTTP status, a counter."""
    router = await make_router([nats_server.url])
    got_status, answer = await http_decide(router.http.port, body)
    assert (got_status, answer["ok"], answer["error"]["code"]) == (status, False, code)
    assert rmetric(router, "router_decide_total", outcome=code) == 1


async def test_tenant_outside_allowed_tenants_is_unauthorized(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """allowed_tenants refuses others with 403 unauthorized, a counter and a log line."""
    router = await make_router([nats_server.url], allowed_tenants="globex")
    status, answer = await http_decide(router.http.port, json.dumps(decide_request()).encode())
    assert (status, answer["error"]["code"]) == (403, "unauthorized")
    assert rmetric(router, "router_tenant_rejected_total", consumer="decide") == 1
    assert "ROUTER_DECIDE_REFUSED" in codes(logs)


async def test_payload_over_the_limit_is_invalid_request_on_both_transports(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """nats_max_payload_size bounds what the Router reads, over NATS and HTTP alike."""
    router = await make_router([nats_server.url], nats_max_payload_size=512)
    assert await router.link.wait_connected(5)
    big = json.dumps(decide_request(task={"type": "t", "payload": "x" * 2000})).encode()
    answer = await nats_decide(nats_server.url, big)
    assert answer["error"]["code"] == "invalid_request"
    status, answer = await http_decide(router.http.port, big)
    assert (status, answer["error"]["code"]) == (400, "invalid_request")
    assert rmetric(router, "router_decide_total", outcome="invalid_request") == 2


async def test_assignment_arrives_in_its_stream_with_the_contract_headers(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """push_assignment stores one ExecAssignment, Nats-Msg-Id = assignment_id, headers set."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    answer = await nats_decide(
        nats_server.url,
        json.dumps(decide_request(push_assignment=True, metadata={"k": "v"})).encode(),
    )
    assignment_id = answer["decision"]["assignment_id"]
    assert answer["assignment"]["outcome"] == "sent"
    assert answer["assignment"]["stream"] == "ROUTER_ASSIGNMENTS"
    stored = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert len(stored) == 1
    headers = stored[0].headers
    assert headers["Nats-Msg-Id"] == assignment_id
    assert (headers["trace_id"], headers["tenant_id"], headers["version"]) == (
        "trace-1",
        "acme",
        "1",
    )
    assert headers["traceparent"].startswith("00-") and len(headers["traceparent"]) == 55
    document = json.loads(stored[0].data)
    assert document["assignment_id"] == assignment_id
    assert document["executor"]["provider_id"] == answer["decision"]["provider_id"]
    assert document["job"] == {"type": "text", "payload": {"prompt": "hi"}}
    assert document["correlation"] == {"trace_id": "trace-1"}
    assert document["metadata"] == {"k": "v"}
    assert rmetric(router, "router_assignments_total", outcome="sent") == 1


async def test_request_may_name_its_own_assignment_subject(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """assignment_subject in the request is used; '$JS...' is refused as invalid_request."""
    router = await make_router([nats_server.url], assignment_subjects_allowed="custom.>")
    worker = await FakeWorker.connect(nats_server.url, assign_subject="caf.exec.assign.v1")
    try:
        await worker.js.add_stream(name="CUSTOM", subjects=["custom.assign"])
    finally:
        await worker.close()
    assert await router.link.wait_connected(5)
    ok = decide_request(push_assignment=True, assignment_subject="custom.assign")
    answer = await nats_decide(nats_server.url, json.dumps(ok).encode())
    assert answer["assignment"]["stream"] == "CUSTOM"
    bad = decide_request(push_assignment=True, assignment_subject="$JS.API.STREAM.DELETE.X")
    answer = await nats_decide(nats_server.url, json.dumps(bad).encode())
    assert answer["error"]["code"] == "invalid_request"
    assert answer["error"]["details"]["field"] == "assignment_subject"


async def test_http_decide_answers_while_nats_is_down_and_says_queued(
    tmp_path: Path, make_router: RouterFactory
) -> None:
    """With NATS gone, HTTP still decides; the assignment is queued, then stored once."""
    server = NatsServer(store_dir=tmp_path / "js")
    server.start()
    try:
        router = await make_router([server.url])
        assert await router.link.wait_connected(5)
    finally:
        server.kill()
    await wait_for(lambda: router.link.state.value != "connected", 5, "the loss to be seen")
    body = json.dumps(decide_request(push_assignment=True)).encode()
    status, answer = await http_decide(router.http.port, body)
    assert status == 200
    assert answer["assignment"]["outcome"] == "queued"
    server.start()  # same port, same store
    try:
        await wait_for(lambda: router.link.pending.count == 0, 10, "the replay")
        stored = await stored_messages(server.url, "ROUTER_ASSIGNMENTS")
        assert [m.headers["Nats-Msg-Id"] for m in stored] == [answer["decision"]["assignment_id"]]
        assert rmetric(router, "router_assignments_total", outcome="queued") == 1
    finally:
        server.kill()


async def test_policy_change_on_disk_is_reloaded_and_a_bad_file_is_refused(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """A new policy file takes effect; a broken one is refused and the last set stays."""
    router = await make_router([nats_server.url], policies_reload_interval_ms=100)
    write_policy(policies_dir, "acme", "premium", {"providers": [{"name": "gold", "weight": 1}]})
    await wait_for(lambda: router.policies.get("acme", "premium") is not None, 5, "the reload")
    status, answer = await http_decide(
        router.http.port, json.dumps(decide_request(policy_id="premium")).encode()
    )
    assert (status, answer["decision"]["provider_id"]) == (200, "gold")
    (policies_dir / "acme" / "broken.json").write_text('{"providers": []}')
    await wait_for(
        lambda: rmetric(router, "router_policy_reload_failures_total") == 1, 5, "the refusal"
    )
    assert router.policies.get("acme", "premium") is not None
    assert rmetric(router, "router_policies_loaded") == 2
