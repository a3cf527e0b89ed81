"""Idempotent decide and tenant-scoped keys, against a real nats-server (streams read back)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.link.outcome import Outcome, Result
from tests.conftest import TWO_PROVIDERS, RouterFactory, write_policy
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import rmetric
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker
from tests.integration.test_router_decide import decide_request, http_decide, nats_decide

pytestmark = pytest.mark.integration


def push(**overrides: object) -> bytes:
    return json.dumps(decide_request(push_assignment=True, **overrides)).encode()


async def test_a_repeated_decide_gets_the_same_answer_and_one_stored_assignment(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Three sends (NATS, HTTP, NATS) of one request: one decision, one assignment stored."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    first = await nats_decide(nats_server.url, push())
    status, second = await http_decide(router.http.port, push(trace_id="retry-trace"))
    third = await nats_decide(nats_server.url, push())
    assert status == 200
    assert first["decision"] == second["decision"] == third["decision"]
    assert second["context"] == {"request_id": "req-1", "trace_id": "retry-trace"}
    stored = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [first["decision"]["assignment_id"]]
    assert rmetric(router, "router_assignments_total", outcome="sent") == 1
    assert rmetric(router, "router_decide_replayed_total") == 2
    assert rmetric(router, "router_decide_total", outcome="ok") == 3


async def test_concurrent_copies_of_one_decide_push_one_assignment(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Ten copies in flight at once: the first decides, the others wait and get its answer."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    answers = await asyncio.gather(*(nats_decide(nats_server.url, push()) for _ in range(10)))
    assert len({a["decision"]["assignment_id"] for a in answers}) == 1
    assert len(await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")) == 1


async def test_a_copy_cancelled_while_its_push_waits_leaves_its_assignment_id_to_reuse(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Cancelled after the assignment reached the stream: the retry reuses its id, one stored."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    link = router.link
    real = link.publish_with_ack
    published = asyncio.Event()

    async def stuck(*args: object, **kwargs: object) -> object:
        link.publish_with_ack = real  # type: ignore[method-assign]
        await real(*args, **kwargs)  # type: ignore[arg-type]
        published.set()
        await asyncio.Event().wait()  # the PubAck never reaches this copy
        raise AssertionError("unreachable")

    link.publish_with_ack = stuck  # type: ignore[method-assign]
    first = asyncio.get_running_loop().create_task(router.decide.answer(push(), None, "http"))
    await asyncio.wait_for(published.wait(), 10)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    retry = await router.decide.answer(push(), None, "http")
    stored = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert retry.status == 200
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [retry.body["decision"]["assignment_id"]]


async def test_a_repeat_after_its_queued_push_left_the_queue_unsent_pushes_it_again(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """First push queued, that item then gone (expired, evicted, poison): the repeat sends it."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    link = router.link
    real = link.publish_with_ack

    async def queued(*_: object, **__: object) -> Result:
        link.publish_with_ack = real  # type: ignore[method-assign]
        return Result(Outcome.QUEUED, pending_id=10**9)  # an item no longer in the queue

    link.publish_with_ack = queued  # type: ignore[method-assign]
    first = await router.decide.answer(push(), None, "http")
    assert first.body["assignment"]["outcome"] == "queued"
    retry = await router.decide.answer(push(), None, "http")
    stored = await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")
    assert retry.body["assignment"]["outcome"] == "sent"
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [first.body["decision"]["assignment_id"]]


async def test_the_same_request_id_with_a_different_request_is_refused(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """A request_id reused for another task within the TTL: invalid_request naming it."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    await nats_decide(nats_server.url, push())
    other = push(task={"type": "image", "payload": {}})
    status, answer = await http_decide(router.http.port, other)
    assert (status, answer["error"]["details"]) == (400, {"field": "request_id"})
    assert len(await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")) == 1


async def test_a_request_id_reused_with_true_where_it_had_1_is_refused(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """{"n": true} then {"n": 1} under one request_id (equal in Python): refused, one stored."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    await nats_decide(nats_server.url, push(task={"type": "text", "payload": {"n": 1}}))
    other = push(task={"type": "text", "payload": {"n": True}})
    status, answer = await http_decide(router.http.port, other)
    assert (status, answer["error"]["details"]) == (400, {"field": "request_id"})
    assert len(await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")) == 1


async def test_two_tenants_with_the_same_request_id_are_both_decided_and_billed(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """acme and globex both send req-1: two assignments, two results, two usage events."""
    write_policy(policies_dir, "globex", "default", TWO_PROVIDERS)
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    acme = await nats_decide(nats_server.url, push())
    globex = await nats_decide(nats_server.url, push(tenant_id="globex"))
    assert acme["decision"]["assignment_id"] != globex["decision"]["assignment_id"]
    assert len(await stored_messages(nats_server.url, "ROUTER_ASSIGNMENTS")) == 2
    worker = await FakeWorker.connect(nats_server.url)
    try:
        for tenant in ("acme", "globex"):
            # Results keyed by request_id only: the ids collide across tenants.
            body = {"request_id": "req-1", "status": "success", "provider_id": "a"}
            body["tenant_id"] = tenant
            await worker.publish_raw("caf.exec.result.v1", json.dumps(body).encode())
    finally:
        await worker.close()
    await wait_for(lambda: rmetric(router, "router_results_total", status="success") == 2, 10)
    usage = await stored_messages(nats_server.url, "ROUTER_USAGE")
    assert sorted(json.loads(m.data)["tenant_id"] for m in usage) == ["acme", "globex"]
    assert sorted(m.headers["Nats-Msg-Id"] for m in usage) == [
        "usage-r-4:acme:req-1",
        "usage-r-6:globex:req-1",
    ]
    assert rmetric(router, "router_results_duplicate_total") == 0


async def test_a_result_by_request_x_and_one_by_assignment_x_are_both_billed(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Same tenant, request_id X and assignment_id X: two results processed, two usage events."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    try:
        for ids in ({"request_id": "X"}, {"assignment_id": "X"}):
            body = {**ids, "status": "success", "provider_id": "a", "tenant_id": "acme"}
            await worker.publish_raw("caf.exec.result.v1", json.dumps(body).encode())
    finally:
        await worker.close()
    await wait_for(lambda: rmetric(router, "router_results_total", status="success") == 2, 10)
    usage = await stored_messages(nats_server.url, "ROUTER_USAGE")
    assert sorted(m.headers["Nats-Msg-Id"] for m in usage) == ["usage-4:acme:X", "usage-r-4:acme:X"]
    assert rmetric(router, "router_results_duplicate_total") == 0


async def test_sticky_sessions_are_scoped_by_tenant(
    nats_server: NatsServer, make_router: RouterFactory, policies_dir: Path
) -> None:
    """The same session_id under two tenants is two sessions."""
    sticky = {**TWO_PROVIDERS, "sticky": {"enabled": True}}
    write_policy(policies_dir, "acme", "default", sticky)
    write_policy(policies_dir, "globex", "default", sticky)
    router = await make_router([nats_server.url])
    for tenant in ("acme", "globex"):
        body = decide_request(tenant_id=tenant, metadata={"session_id": "s-1"})
        status, _ = await http_decide(router.http.port, json.dumps(body).encode())
        assert status == 200
    assert sorted(router.decider.sticky.keys()) == [
        ("acme", "default", "s-1"),
        ("globex", "default", "s-1"),
    ]


async def test_a_repeat_pushes_again_an_assignment_that_was_not_stored_under_the_same_id(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """First push fails (no stream); the retry after the stream exists stores it, same id."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    body = push(assignment_subject="caf.exec.assign.v1.gpu")
    first = await nats_decide(nats_server.url, body)
    assert first["assignment"]["outcome"] == "failed"
    await create_stream(nats_server.url, "GPU", ["caf.exec.assign.v1.gpu"])
    second = await nats_decide(nats_server.url, body)
    third = await nats_decide(nats_server.url, body)
    assignment_id = first["decision"]["assignment_id"]
    assert [a["assignment"]["outcome"] for a in (second, third)] == ["sent", "sent"]
    assert {second["decision"]["assignment_id"], third["decision"]["assignment_id"]} == {
        assignment_id
    }
    stored = await stored_messages(nats_server.url, "GPU")
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [assignment_id]
