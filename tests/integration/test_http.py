"""The operator endpoints on a real link: /metrics, health, /status, /admin/faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from natsrouter.api.http import HttpServer, build_app
from natsrouter.embedded import NatsServer
from natsrouter.link import ConnectionState, Link
from tests.conftest import ADMIN_TOKEN, LinkFactory
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

# Every link metric of CONTRACT §3, as exposed (counters with _total).
CONTRACT_LINK_METRICS = {
    "router_nats_connection_status": "gauge",
    "router_nats_connection_established_total": "counter",
    "router_nats_connection_lost_total": "counter",
    "router_nats_connection_restored_total": "counter",
    "router_nats_connection_failures_total": "counter",
    "router_nats_reconnect_attempts_total": "counter",
    "router_nats_reconnect_failures_total": "counter",
    "router_nats_reconnection_exhausted_total": "counter",
    "router_nats_outage_duration_seconds": "histogram",
    "router_nats_publish_total": "counter",
    "router_nats_publish_failures_total": "counter",
    "router_nats_publish_with_ack_total": "counter",
    "router_nats_publish_with_ack_failures_total": "counter",
    "router_nats_ack_total": "counter",
    "router_nats_ack_failures_total": "counter",
    "router_nats_nak_total": "counter",
    "router_nats_nak_failures_total": "counter",
    "router_nats_subscribe_total": "counter",
    "router_nats_subscribe_failures_total": "counter",
    "router_nats_request_total": "counter",
    "router_nats_request_failures_total": "counter",
    "router_nats_fail_open_total": "counter",
    "router_nats_operation_duration_seconds": "histogram",
    "router_nats_pending_operations_count": "gauge",
    "router_nats_pending_operations_bytes": "gauge",
    "router_nats_pending_operations_limit": "gauge",
    "router_nats_pending_operations_bytes_limit": "gauge",
    "router_nats_pending_operations_dropped_total": "counter",
    "router_nats_pending_operations_rejected_total": "counter",
    "router_nats_pending_operations_retry_total": "counter",
    "router_nats_pending_operations_retry_success_total": "counter",
    "router_nats_pending_operations_retry_failed_total": "counter",
}


class Api:
    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path) as resp:
            body = await resp.text()
            is_json = resp.content_type == "application/json"
            return resp.status, (await resp.json()) if is_json else body

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.base + path, json=body) as resp:
            return resp.status, await resp.json()


async def _serve(link: Link, fault_admin: bool) -> AsyncIterator[Api]:
    app = build_app(link, fault_admin=fault_admin, admin_token=ADMIN_TOKEN if fault_admin else "")
    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            yield Api(session, server.port)
    finally:
        await server.stop()


@pytest.fixture
async def link(nats_server: NatsServer, make_link: LinkFactory) -> Link:
    link = await make_link(
        [nats_server.url], nats_fault_injection_enabled=True, nats_fault_injection_token=ADMIN_TOKEN
    )
    assert await link.wait_connected(5)
    return link


@pytest.fixture
async def api(link: Link) -> AsyncIterator[Api]:
    async for api in _serve(link, fault_admin=True):
        yield api


async def test_metrics_has_every_contract_link_metric_with_its_type(api: Api) -> None:
    """/metrics exposes each link metric of the contract, with the contract's type."""
    status, text = await api.get("/metrics")
    assert status == 200
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
    for name, kind in CONTRACT_LINK_METRICS.items():
        # The TYPE line names a counter with or without _total, depending on the client.
        family = name.removesuffix("_total")
        assert kind in (types.get(name), types.get(family)), name
        assert any(line.startswith(name) for line in text.splitlines()), name
    assert "router_nats_connection_status 1.0" in text
    assert "_created" not in text


async def test_health_and_status_follow_the_connection(
    api: Api, link: Link, nats_server: NatsServer
) -> None:
    """ready is 200 when connected and 503 during an outage; live stays 200; /status tells."""
    assert (await api.get("/health/ready"))[0] == 200
    status, doc = await api.get("/status")
    assert status == 200
    assert (doc["state"], doc["ready"], doc["server"]) == ("connected", True, nats_server.url)
    nats_server.kill()
    await wait_for(lambda: link.state is not ConnectionState.CONNECTED, 5)
    await link.publish("s.x", b"12345")
    code, body = await api.get("/health/ready")
    assert (code, body["ready"]) == (503, False)
    assert (await api.get("/health/live"))[0] == 200
    _, doc = await api.get("/status")
    assert doc["state"] in ("reconnecting", "disconnected")
    assert (doc["server"], doc["last_server"]) == (None, nats_server.url)
    assert doc["pending"]["count"] == 1
    assert doc["pending"]["bytes"] == len("s.x") + 5
    assert doc["last_failure_reason"] == "connection_closed"
    assert doc["last_failure_at"] is not None
    assert doc["last_connected_at"] is not None
    assert doc["accounting"]["accepted"] == 1


async def test_admin_sets_lists_and_clears_faults(api: Api, link: Link) -> None:
    """POST sets a fault, GET lists it, DELETE one target or all clears."""
    code, doc = await api.call(
        "POST", "/admin/faults", {"target": "publish", "fault": {"kind": "delay", "delay_ms": 5}}
    )
    assert code == 200
    assert doc["faults"]["publish"]["description"] == "delay(5)"
    await api.call("POST", "/admin/faults", {"target": "ack", "fault": {"kind": "timeout"}})
    assert set((await api.get("/admin/faults"))[1]["faults"]) == {"publish", "ack"}
    assert (await api.call("DELETE", "/admin/faults/ack"))[1]["faults"].keys() == {"publish"}
    assert (await api.call("DELETE", "/admin/faults"))[1] == {"faults": {}}
    assert link.faults is not None and link.faults.active() == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": "nowhere", "fault": {"kind": "timeout"}}, "target"),
        ({"target": "publish"}, "fault"),
        ({"target": "publish", "fault": {"kind": "boom"}}, "fault.kind"),
        (
            {"target": "publish", "fault": {"kind": "intermittent", "probability": 3}},
            "fault.probability",
        ),
        (["not", "an", "object"], "body"),
    ],
)
async def test_admin_rejects_bad_faults_naming_the_field(api: Api, body: Any, field: str) -> None:
    """A bad fault description is a 400 naming the field; nothing is set."""
    code, doc = await api.call("POST", "/admin/faults", body)
    assert (code, doc["error"]["field"]) == (400, field)
    assert (await api.get("/admin/faults"))[1] == {"faults": {}}


async def test_admin_is_absent_when_injection_is_disabled(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Without nats_fault_injection_enabled, /admin/faults does not exist (404)."""
    link = await make_link([nats_server.url])
    async for api in _serve(link, fault_admin=False):
        assert (await api.get("/admin/faults"))[0] == 404
        async with api.session.post(api.base + "/admin/faults", json={}) as resp:
            assert resp.status in (404, 405)
