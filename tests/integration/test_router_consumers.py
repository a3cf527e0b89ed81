"""Acks and results through the durable consumers, against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import Reason
from natsrouter.link import Fault, FaultTarget
from natsrouter.routing.breaker import BreakerState
from natsrouter.service.router import Router
from tests.conftest import RouterFactory
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import codes, rmetric
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker, result_for
from tests.integration.test_router_decide import decide_request, nats_decide

pytestmark = pytest.mark.integration


async def assign(url: str, n: int = 1, **overrides: Any) -> list[str]:
    """Decide n requests with push_assignment; their assignment ids."""
    ids = []
    for i in range(n):
        body = decide_request(request_id=f"req-{i}", push_assignment=True, **overrides)
        answer = await nats_decide(url, json.dumps(body).encode())
        ids.append(answer["decision"]["assignment_id"])
    return ids


async def consumer_state(url: str, stream: str, durable: str) -> tuple[int, int]:
    """(num_ack_pending, num_pending) of a durable consumer."""
    nc = await nats.connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
    finally:
        await nc.close()
    return info.num_ack_pending, info.num_pending


async def wait_settled(url: str, stream: str, durable: str, timeout_s: float = 10) -> None:
    state: tuple[int, int] = (-1, -1)
    for _ in range(int(timeout_s / 0.05)):
        state = await consumer_state(url, stream, durable)
        if state == (0, 0):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{durable} not settled: (ack_pending, pending) = {state}")


async def test_ack_and_result_flow_through_to_a_usage_event(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Worker ack and result are consumed and acked; one UsageEvent with its msg id."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await assign(nats_server.url)
        [(assignment, _)] = await worker.assignments(1)
        await worker.ack(assignment)
        await worker.result(assignment)
        await wait_for(lambda: rmetric(router, "router_usage_emitted_total") == 1, 10, "usage")
        await wait_for(lambda: rmetric(router, "router_acks_total", status="accepted") == 1, 10)
    finally:
        await worker.close()
    await wait_settled(nats_server.url, "ROUTER_RESULTS", "router-results")
    await wait_settled(nats_server.url, "ROUTER_ACKS", "router-acks")
    [usage] = await stored_messages(nats_server.url, "ROUTER_USAGE")
    assert usage.headers["Nats-Msg-Id"] == f"usage-4:acme:{assignment['assignment_id']}"
    event = json.loads(usage.data)
    assert event["assignment_id"] == assignment["assignment_id"]
    assert (event["tenant_id"], event["status"], event["latency_ms"], event["cost"]) == (
        "acme",
        "success",
        120,
        0.01,
    )
    assert rmetric(router, "router_results_total", status="success") == 1


async def test_duplicate_result_is_acked_without_a_second_usage_event(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """The same result twice in the stream: processed once, the second counted duplicate."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await assign(nats_server.url)
        [(assignment, _)] = await worker.assignments(1)
        await worker.result(assignment)
        await worker.result(assignment)
        await worker.ack(assignment)
        await worker.ack(assignment)
        await wait_for(lambda: rmetric(router, "router_results_duplicate_total") == 1, 10)
        await wait_for(lambda: rmetric(router, "router_acks_duplicate_total") == 1, 10)
    finally:
        await worker.close()
    assert rmetric(router, "router_results_total", status="success") == 1
    assert rmetric(router, "router_usage_emitted_total") == 1
    assert len(await stored_messages(nats_server.url, "ROUTER_USAGE")) == 1
    await wait_settled(nats_server.url, "ROUTER_RESULTS", "router-results")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"\xff\xfe not utf-8", "(document)"),
        (b"[1, 2]", "(document)"),
        (
            json.dumps(
                {"assignment_id": "x", "status": "done", "provider_id": "a", "tenant_id": "acme"}
            ).encode(),
            "status",
        ),
        (
            json.dumps(
                {
                    "assignment_id": "x",
                    "status": "success",
                    "provider_id": "a",
                    "tenant_id": "acme",
                    "latency_ms": -1,
                }
            ).encode(),
            "latency_ms",
        ),
    ],
)
async def test_invalid_result_is_terminated_and_dead_lettered(
    nats_server: NatsServer,
    make_router: RouterFactory,
    logs: list[dict[str, Any]],
    data: bytes,
    field: str,
) -> None:
    """An invalid result goes to caf.exec.result.v1.dlq with its reason, and is terminated."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await worker.publish_raw("caf.exec.result.v1", data)
    finally:
        await worker.close()
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="results", reason="invalid") == 1, 10
    )
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert dead.data == data
    assert dead.headers["dlq_reason"] == "invalid"
    assert dead.headers["dlq_original_subject"] == "caf.exec.result.v1"
    assert dead.headers["dlq_error"].startswith(f"{field}: ")
    assert rmetric(router, "router_messages_invalid_total", consumer="results") == 1
    assert {"ROUTER_MESSAGE_INVALID", "ROUTER_DEAD_LETTERED"} <= set(codes(logs))
    await wait_settled(nats_server.url, "ROUTER_RESULTS", "router-results")


async def test_result_of_a_tenant_not_allowed_is_dead_lettered(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """allowed_tenants applies to consumed messages: reason unauthorized."""
    router = await make_router([nats_server.url], allowed_tenants="acme")
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    fake = {
        "assignment_id": "x1",
        "request_id": "r",
        "executor": {"provider_id": "a"},
        "job": {"type": "t"},
        "correlation": {"trace_id": "t"},
        "tenant_id": "acme",
    }
    try:
        await worker.publish_raw(
            "caf.exec.result.v1", json.dumps(result_for(fake, tenant_id="evil")).encode()
        )
        # The header wins over the payload: this one is refused too.
        await worker.publish_raw(
            "caf.exec.assign.v1.ack",
            json.dumps({"assignment_id": "x1", "status": "accepted", "tenant_id": "acme"}).encode(),
            {"tenant_id": "evil"},
        )
    finally:
        await worker.close()
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="results", reason="unauthorized") == 1,
        10,
    )
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="acks", reason="unauthorized") == 1,
        10,
    )
    assert rmetric(router, "router_tenant_rejected_total", consumer="results") == 1
    assert rmetric(router, "router_usage_emitted_total") == 0


async def test_result_failing_until_its_last_delivery_is_dead_lettered(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """No usage stream: nak'd, redelivered (server count), then dead-lettered at max deliver."""
    router = await make_router([nats_server.url], js_max_deliver=3)
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await worker.js.delete_stream("ROUTER_USAGE")
        await assign(nats_server.url)
        [(assignment, _)] = await worker.assignments(1)
        await worker.result(assignment)
    finally:
        await worker.close()
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="results", reason="max_deliver") == 1,
        15,
    )
    assert rmetric(router, "router_usage_emit_failures_total") == 3
    assert rmetric(router, "router_jetstream_redelivery_total", consumer="results") == 2
    assert rmetric(router, "router_jetstream_maxdeliver_exhausted_total", consumer="results") == 1
    assert rmetric(router, "router_results_total", status="success") == 0
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert (dead.headers["dlq_reason"], dead.headers["dlq_num_delivered"]) == ("max_deliver", "3")
    assert "ROUTER_MAXDELIVER_EXHAUSTED" in codes(logs)
    await wait_settled(nats_server.url, "ROUTER_RESULTS", "router-results")


async def test_a_dead_letter_failing_on_the_last_delivery_is_retried_until_stored(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """On the last delivery the DLQ publish fails (fault on the DLQ subject only): it is
    retried, each failure counted, until the fault is gone; then stored once and settled."""
    router = await make_router(
        [nats_server.url], js_max_deliver=2, nats_fault_injection_enabled=True
    )
    assert await router.link.wait_connected(5)
    router.link.inject(
        FaultTarget.PUBLISH_WITH_ACK,
        Fault.error(Reason.SERVER_ERROR).on_subject("caf.exec.result.v1.dlq"),
    )
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await worker.js.delete_stream("ROUTER_USAGE")
        await assign(nats_server.url)
        [(assignment, _)] = await worker.assignments(1)
        await worker.result(assignment)
    finally:
        await worker.close()
    await wait_for(lambda: codes(logs).count("ROUTER_DLQ_FAILED") >= 3, 15, "DLQ retries")
    router.link.clear_faults()
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="results", reason="max_deliver") == 1,
        15,
    )
    assert rmetric(router, "router_dlq_failures_total", consumer="results") >= 3
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert (dead.headers["dlq_reason"], dead.headers["dlq_num_delivered"]) == ("max_deliver", "2")
    await wait_settled(nats_server.url, "ROUTER_RESULTS", "router-results")


async def test_a_queued_dead_letter_of_a_last_delivery_is_kept_once_then_stored_once(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """The DLQ publish of a last delivery times out and is queued: the message waits in
    progress with one copy queued (none added while it waits); replayed, it is stored once."""
    router = await make_router(
        [nats_server.url],
        js_max_deliver=1,
        js_publish_retry_deadline_ms=200,
        nats_fault_injection_enabled=True,
    )
    assert await router.link.wait_connected(5)
    router.link.inject(
        FaultTarget.PUBLISH_WITH_ACK,
        Fault.error(Reason.TIMEOUT).on_subject("caf.exec.result.v1.dlq"),
    )
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await worker.publish_raw("caf.exec.result.v1", b"not json")
    finally:
        await worker.close()
    await wait_for(lambda: "ROUTER_DLQ_FAILED" in codes(logs), 10, "the queued dead letter")
    failed_at = rmetric(router, "router_nats_pending_operations_retry_failed_total")
    await wait_for(
        lambda: (
            rmetric(router, "router_nats_pending_operations_retry_failed_total") >= failed_at + 2
        ),
        10,
        "replay probes of the queued dead letter",
    )
    assert router.link.pending.count == 1
    assert codes(logs).count("ROUTER_DLQ_FAILED") == 1
    router.link.clear_faults()
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="results", reason="invalid") == 1,
        15,
    )
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert dead.data == b"not json"
    await wait_settled(nats_server.url, "ROUTER_RESULTS", "router-results")


async def test_a_dead_letter_still_failing_at_stop_is_nakd_and_logged(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """The DLQ publish of a last delivery fails until the Router stops: the stop ends the
    retries, the message is logged as abandoned with its stream sequence, nothing stored."""
    router = await make_router(
        [nats_server.url],
        js_max_deliver=1,
        nats_fault_injection_enabled=True,
        shutdown_timeout_ms=500,
    )
    assert await router.link.wait_connected(5)
    router.link.inject(
        FaultTarget.PUBLISH_WITH_ACK,
        Fault.error(Reason.SERVER_ERROR).on_subject("caf.exec.result.v1.dlq"),
    )
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await worker.publish_raw("caf.exec.result.v1", b"not json")
    finally:
        await worker.close()
    await wait_for(lambda: codes(logs).count("ROUTER_DLQ_FAILED") >= 2, 15, "DLQ retries")
    await router.stop()
    [abandoned] = [e for e in logs if e.get("error_code") == "ROUTER_DLQ_ABANDONED"]
    assert (abandoned["consumer"], abandoned["reason"], abandoned["stream_seq"]) == (
        "results",
        "invalid",
        1,
    )
    assert rmetric(router, "router_dlq_total", consumer="results", reason="invalid") == 0
    assert await stored_messages(nats_server.url, "ROUTER_DLQ") == []


async def test_breaker_opens_on_failed_results_and_the_pick_avoids_the_provider(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Two error results from 'a' open its breaker; decisions go to 'b' until it recovers."""
    router = await make_router([nats_server.url], rng=random.Random(5))
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    fake = {
        "request_id": "r",
        "executor": {"provider_id": "a"},
        "job": {"type": "t"},
        "correlation": {"trace_id": "t"},
        "tenant_id": "acme",
    }
    try:
        for i in range(2):
            await worker.result({**fake, "assignment_id": f"fail-{i}"}, status="error")
        await wait_for(lambda: router.health.state("a") is BreakerState.OPEN, 10, "open")
        assert rmetric(router, "router_circuit_breaker_state", provider="a") == 1
        picks = []
        for i in range(20):
            answer = await nats_decide(
                nats_server.url, json.dumps(decide_request(request_id=f"q{i}")).encode()
            )
            picks.append((answer["decision"]["provider_id"], answer["decision"]["reason"]))
        assert set(picks) == {("b", "circuit_breaker_fallback")}
        # After timeout_ms (800) one trial goes to 'a'; its success closes the breaker.
        await wait_for(lambda: router.health.state("a") is BreakerState.HALF_OPEN, 5, "half")
        await worker.result({**fake, "assignment_id": "ok-1"}, status="success")
        await wait_for(lambda: router.health.state("a") is BreakerState.CLOSED, 10, "closed")
        assert rmetric(router, "router_circuit_breaker_state", provider="a") == 0
    finally:
        await worker.close()
    later = set()
    for i in range(40):
        answer = await nats_decide(
            nats_server.url, json.dumps(decide_request(request_id=f"z{i}")).encode()
        )
        later.add(answer["decision"]["provider_id"])
    assert later == {"a", "b"}


async def test_two_routers_split_decides_and_results(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """Queue group and shared durables: both Routers work, nothing is handled twice."""
    first = await make_router([nats_server.url])
    second = await make_router([nats_server.url])
    assert await first.link.wait_connected(5) and await second.link.wait_connected(5)
    n = 60
    ids = await assign(nats_server.url, n)
    worker = await FakeWorker.connect(nats_server.url)
    try:
        for assignment, _ in await worker.assignments(n):
            await worker.result(assignment)
    finally:
        await worker.close()

    def total(router: Router, name: str, **labels: str) -> float:
        return rmetric(router, name, **labels)

    await wait_for(
        lambda: (
            total(first, "router_results_total", status="success")
            + total(second, "router_results_total", status="success")
            == n
        ),
        15,
        "every result",
    )
    decides = [total(r, "router_decide_total", outcome="ok") for r in (first, second)]
    results = [total(r, "router_results_total", status="success") for r in (first, second)]
    assert sum(decides) == n and min(decides) > 0
    assert min(results) > 0
    usage = await stored_messages(nats_server.url, "ROUTER_USAGE")
    assert sorted(m.headers["Nats-Msg-Id"] for m in usage) == sorted(
        f"usage-4:acme:{i}" for i in ids
    )
