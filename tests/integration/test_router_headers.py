"""What the Router publishes carries its own headers, never a worker's JetStream directives.

The results stream here is an operator-tuned one that allows rollups and per-message TTLs, so a
worker can publish results with every directive; the usage and DLQ streams are the Router's.
"""

from __future__ import annotations

import json
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

from natsrouter.embedded import NatsServer
from natsrouter.errors import Reason
from natsrouter.link import Fault, FaultTarget
from tests.conftest import RouterFactory
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import codes, rmetric
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker, result_for

pytestmark = pytest.mark.integration
RESULTS = "caf.exec.result.v1"
ASSIGNMENT: dict[str, Any] = {
    "assignment_id": "a-1",
    "request_id": "r-1",
    "tenant_id": "acme",
    "executor": {"provider_id": "a"},
    "job": {"type": "t"},
    "correlation": {"trace_id": "0af7651916cd43dd8448eb211c80319c"},
}
TRACE = {
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tenant_id": "acme",
}


async def tuned_results_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(
                name="ROUTER_RESULTS",
                subjects=[RESULTS],
                allow_rollup_hdrs=True,
                allow_msg_ttl=True,
            )
        )
    finally:
        await nc.close()


def directives(last_seq: int, last_msg_id: str | None) -> dict[str, str]:
    """Every JetStream directive, each one satisfied for the results stream at ``last_seq``."""
    out = {
        "Nats-Expected-Stream": "ROUTER_RESULTS",
        "Nats-Expected-Last-Sequence": str(last_seq),
        "Nats-Expected-Last-Subject-Sequence": str(last_seq),
        "Nats-TTL": "1h",
        "Nats-Rollup": "sub",
        "Nats-Msg-Id": f"worker-{last_seq + 1}",
    }
    if last_msg_id is not None:
        out["Nats-Expected-Last-Msg-Id"] = last_msg_id
    return out


async def test_usage_events_and_dead_letters_carry_no_worker_directive(
    nats_server: NatsServer, make_router: RouterFactory
) -> None:
    """A valid result with every directive becomes a usage event with the Router's headers
    only; an invalid one with every directive is dead-lettered with trace and tenant only."""
    await tuned_results_stream(nats_server.url)
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    worker = await FakeWorker.connect(nats_server.url)
    try:
        body = json.dumps(result_for(ASSIGNMENT)).encode()
        await worker.publish_raw(RESULTS, body, {**TRACE, **directives(0, None)})
        await wait_for(lambda: rmetric(router, "router_usage_emitted_total") == 1, 10, "usage")
        await worker.publish_raw(RESULTS, b"not json", {**TRACE, **directives(1, "worker-1")})
        await wait_for(
            lambda: rmetric(router, "router_dlq_total", consumer="results", reason="invalid") == 1,
            10,
            "the dead letter",
        )
    finally:
        await worker.close()
    [usage] = await stored_messages(nats_server.url, "ROUTER_USAGE")
    assert set(usage.headers) == {"trace_id", "tenant_id", "version", "traceparent", "Nats-Msg-Id"}
    assert usage.headers["Nats-Msg-Id"] == "usage-4:acme:a-1"
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert dead.headers == {
        **TRACE,
        "version": "1",
        "Nats-Msg-Id": "dlq-ROUTER_RESULTS-2",
        "dlq_reason": "invalid",
        "dlq_error": dead.headers["dlq_error"],
        "dlq_original_subject": RESULTS,
        "dlq_num_delivered": "1",
    }
    assert dead.data == b"not json"


async def test_a_dead_letter_that_cannot_be_stored_naks_the_message(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """The DLQ publish fails: the message is nak'd (not terminated), and its redelivery is
    dead-lettered once the DLQ takes it."""
    router = await make_router(
        [nats_server.url], nats_fault_injection_enabled=True, js_nak_delay_ms=1000
    )
    assert await router.link.wait_connected(5)
    router.link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.error(Reason.SERVER_ERROR))
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await worker.publish_raw(RESULTS, b"not json")
    finally:
        await worker.close()
    await wait_for(lambda: "ROUTER_DLQ_FAILED" in codes(logs), 10, "the failed dead letter")
    router.link.clear_faults()
    assert rmetric(router, "router_nats_nak_total") == 1
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="results", reason="invalid") == 1,
        10,
        "the dead letter on redelivery",
    )
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert dead.headers["dlq_num_delivered"] == "2"
    assert codes(logs).count("ROUTER_DLQ_FAILED") == 1
