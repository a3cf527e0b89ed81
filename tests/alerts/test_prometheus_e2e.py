"""A real Prometheus scrapes a real ``natsrouter run`` every second with the shipped rules
(``for`` shortened): killing nats-server fires RouterNatsConnectionDown, restarting it
resolves the alert, and every dashboard query returns data from what was scraped."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from natsrouter.embedded import NatsServer
from tests.alerts.conftest import RULES
from tests.alerts.dashboard import queries
from tests.helpers.process import RouterProcess
from tests.helpers.prometheus import PrometheusServer
from tests.helpers.worker import FakeWorker

pytestmark = pytest.mark.integration

# Exhaustion within a second of the kill (status 0), reconnection within a second of the restart.
ROUTER_ENV = {
    "ROUTER_NATS_CONNECT_TIMEOUT_MS": "500",
    "ROUTER_NATS_RECONNECT_DELAY_MS": "50",
    "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "300",
    "ROUTER_NATS_RECONNECT_ATTEMPTS": "3",
    "ROUTER_NATS_PING_INTERVAL_MS": "500",
    "ROUTER_NATS_REQUEST_TIMEOUT_MS": "1000",
}
POLICY = {
    "providers": [{"name": "p1", "weight": 60}, {"name": "p2", "weight": 40}],
    "circuit_breaker": {"enabled": True, "failure_threshold": 3},
}
FOR = "2s"  # every `for` of the shipped rules, shortened


def shortened_rules(tmp: Path) -> Path:
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def router(nats_server: NatsServer, tmp_path: Path) -> Iterator[RouterProcess]:
    policy = tmp_path / "router" / "policies" / "acme" / "default.json"
    policy.parent.mkdir(parents=True)
    policy.write_text(json.dumps(POLICY))
    process = RouterProcess({"ROUTER_NATS_URL": nats_server.url, **ROUTER_ENV}, policy.parents[2])
    try:
        process.wait(process.ready, what="router ready")
        yield process
    finally:
        process.kill()


@pytest.fixture
def prometheus(
    tool: Callable[[str], str], router: RouterProcess, tmp_path: Path
) -> Iterator[PrometheusServer]:
    home = tmp_path / "prometheus"
    home.mkdir()
    server = PrometheusServer(
        tool("prometheus"), home, [f"127.0.0.1:{router.metrics_port}"], shortened_rules(home)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def decide_request(request_id: str) -> bytes:
    body = {
        "version": "1",
        "request_id": request_id,
        "tenant_id": "acme",
        "task": {"type": "text", "payload": {}},
        "push_assignment": True,
    }
    return json.dumps(body).encode()


def decide_http(router: RouterProcess, n: int) -> dict[str, Any]:
    request = urllib.request.Request(router.decide_url, data=decide_request(f"http-{n}"))
    with urllib.request.urlopen(request, timeout=5) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


async def traffic(url: str, router: RouterProcess) -> None:
    """Decides over NATS and HTTP, a worker acking and answering each assignment, and one
    malformed result (dead-lettered)."""
    nc = await nats.connect(url)
    worker = FakeWorker(nc, "caf.exec.assign.v1", "caf.exec.assign.v1.ack", "caf.exec.result.v1")
    try:
        for n in range(3):
            reply = await nc.request("beamline.router.v1.decide", decide_request(f"nats-{n}"), 5)
            assert json.loads(reply.data)["ok"] is True, reply.data
        for n in range(3):
            assert (await asyncio.to_thread(decide_http, router, n))["ok"] is True
        for assignment, _ in await worker.assignments(6):
            await worker.ack(assignment)
            await worker.result(assignment)
        await worker.publish_raw("caf.exec.result.v1", b"not json")
    finally:
        await nc.close()


def firing(prometheus: PrometheusServer, name: str) -> list[dict[str, Any]]:
    return [
        alert
        for alert in prometheus.alerts()
        if alert["labels"]["alertname"] == name and alert["state"] == "firing"
    ]


def has_number(series: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(v)) for s in series for _, v in s["values"])


def test_connection_down_fires_and_resolves_and_every_panel_has_data(
    nats_server: NatsServer, router: RouterProcess, prometheus: PrometheusServer
) -> None:
    started = time.time()
    # A scrape before the traffic, so that rate() sees it happen.
    prometheus.wait(lambda: prometheus.query("router_nats_connection_status == 1"), 15, "a scrape")
    asyncio.run(traffic(nats_server.url, router))
    router.wait(
        lambda: router.metric("router_results_total", status="success") == 6, what="results"
    )
    router.wait(
        lambda: router.metric("router_dlq_total", consumer="results", reason="invalid") == 1
    )
    prometheus.wait(
        lambda: prometheus.query('router_results_total{status="success"} == 6'), 15, "a scrape"
    )
    assert firing(prometheus, "RouterNatsConnectionDown") == []

    nats_server.kill()
    router.wait(lambda: router.metric("router_nats_connection_status") == 0, what="exhausted")
    queued = [decide_http(router, n)["assignment"]["outcome"] for n in range(10, 13)]
    assert queued == ["queued"] * 3
    prometheus.wait(lambda: firing(prometheus, "RouterNatsConnectionDown"), 30, "the alert to fire")
    (alert,) = firing(prometheus, "RouterNatsConnectionDown")
    assert alert["labels"] == {
        "alertname": "RouterNatsConnectionDown",
        "severity": "critical",
        "component": "router",
        "instance": f"127.0.0.1:{router.metrics_port}",
        "job": "natsrouter",
    }
    assert alert["annotations"]["runbook_url"] == "docs/operations.md#routernatsconnectiondown"
    assert firing(prometheus, "RouterNatsReconnectionExhausted") != []

    nats_server.start()
    router.wait(lambda: router.metric("router_nats_connection_status") == 1, what="reconnected")
    router.wait(lambda: router.metric("router_nats_pending_operations_retry_success_total") == 3)
    prometheus.wait(
        lambda: (
            not [
                a
                for a in prometheus.alerts()
                if a["labels"]["alertname"] == "RouterNatsConnectionDown"
            ]
        ),
        30,
        "the alert to resolve",
    )
    prometheus.wait(
        lambda: prometheus.query("router_nats_pending_operations_retry_success_total == 3"),
        15,
        "the replay scraped",
    )
    time.sleep(2)  # two more scrapes after the replay: every rate() has two points past it

    end = time.time()
    empty = [
        query.name
        for query in queries()
        if not has_number(prometheus.query_range(query.expr, started, end))
    ]
    assert empty == []
