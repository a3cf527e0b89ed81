"""A real Prometheus scrapes a real ``natsrouter run`` every second with the shipped rules
(``for`` shortened) over a scripted window: traffic while connected, nats-server killed, three
assignments queued, nats-server restarted and the three replayed. RouterNatsConnectionDown
fires and resolves, every dashboard query returns data, and the panels show the values the
script knows."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.observability.metrics import DECIDE_OUTCOMES
from tests.alerts.dashboard import queries, query
from tests.alerts.stack import decide_body, decide_http, fast_rules, start_router
from tests.helpers.process import RouterProcess
from tests.helpers.prometheus import PrometheusServer
from tests.helpers.worker import FakeWorker

pytestmark = pytest.mark.integration

FOR = "2s"  # every `for` of the shipped rules, shortened
#: Grafana's $__rate_interval for the truth checks: longer than the whole window, so that
#: increase() at the last scrape is exactly last - first (every counter starts at 0).
WHOLE = "5m"
WHOLE_S = 300


@pytest.fixture
def router(nats_server: NatsServer, tmp_path: Path) -> Iterator[RouterProcess]:
    process = start_router(tmp_path / "router", nats_server.url)
    try:
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
        tool("prometheus"), home, [f"127.0.0.1:{router.metrics_port}"], fast_rules(home, FOR)
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def traffic(url: str, router: RouterProcess) -> None:
    """Decides over NATS and HTTP, a worker acking and answering each assignment, and one
    malformed result (dead-lettered)."""
    nc = await nats.connect(url)
    worker = FakeWorker(nc, "caf.exec.assign.v1", "caf.exec.assign.v1.ack", "caf.exec.result.v1")
    try:
        for n in range(3):
            reply = await nc.request("beamline.router.v1.decide", decide_body(f"nats-{n}"), 5)
            assert json.loads(reply.data)["ok"] is True, reply.data
        for n in range(3):
            assert (await asyncio.to_thread(decide_http, router, f"http-{n}"))["ok"] is True
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


def test_connection_down_fires_and_resolves_and_the_panels_show_the_scripted_values(
    nats_server: NatsServer, router: RouterProcess, prometheus: PrometheusServer
) -> None:
    """Over connected -> killed -> restarted, the panels return what the script did."""
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
    queued = [decide_http(router, f"q{n}")["assignment"]["outcome"] for n in range(3)]
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
    replayed_at = last_scrape(prometheus)
    # Two more scrapes after the replay: every rate() has two points past it.
    prometheus.wait(lambda: last_scrape(prometheus) >= replayed_at + 2, 15, "two more scrapes")

    end = time.time()
    empty = [
        query.name
        for query in queries()
        if not has_number(prometheus.query_range(query.expr, started, end))
    ]
    assert empty == []

    status = over_time(prometheus, "Connection status over time [A]", started, end)
    assert [v for v in collapse(status) if v != 0.5] == [1, 0, 1]  # 0.5: reconnecting
    pending = over_time(prometheus, "Pending operations [A]", started, end)
    assert (max(pending), pending[-1]) == (3, 0)

    at = last_scrape(prometheus)
    assert truth(prometheus, "Replay [A]", at, per_window=True) == {"": 3}
    assert truth(prometheus, "Replay [B]", at, per_window=True) == {"": 0}
    assert truth(prometheus, "Connection events [B]", at) == {"": 1}  # lost
    assert truth(prometheus, "Connection events [C]", at) == {"": 1}  # restored
    # Every outcome the Router exports, primed at zero; only the nine decides made count.
    assert truth(prometheus, "Decide rate by outcome [A]", at, per_window=True) == {
        **{outcome: 0 for outcome in DECIDE_OUTCOMES},
        "ok": 9,
    }
    assert truth(prometheus, "Assignments by outcome [A]", at, per_window=True) == {
        "sent": 6,
        "queued": 3,
        "dropped": 0,
        "rejected": 0,
        "failed_open": 0,
        "failed": 0,
    }
    assert truth(prometheus, "Consumer throughput [A]", at, per_window=True) == {
        "success": 6,
        "error": 0,
        "timeout": 0,
        "cancelled": 0,
    }
    assert truth(prometheus, "Redeliveries and dead letters [B]", at)["results,invalid"] == 1


def over_time(prometheus: PrometheusServer, name: str, start: float, end: float) -> list[float]:
    """The values of the panel query ``name`` (one series) every second from start to end."""
    (series,) = prometheus.query_range(panel(name), start, end)
    return [float(v) for _, v in series["values"]]


def collapse(values: list[float]) -> list[float]:
    """A series' values with consecutive repeats folded: its sequence of states."""
    out: list[float] = []
    for value in values:
        if not out or out[-1] != value:
            out.append(value)
    return out


def last_scrape(prometheus: PrometheusServer) -> float:
    (sample,) = prometheus.query("timestamp(router_nats_connection_status)")
    return float(sample["value"][1])


def panel(name: str) -> str:
    return query(name, WHOLE)


def truth(
    prometheus: PrometheusServer, name: str, at: float, per_window: bool = False
) -> dict[str, float]:
    """The panel query ``name`` at the last scrape, its rate window the whole test: by the
    values of its grouping labels (comma-joined), a rate turned into a count."""
    factor = WHOLE_S if per_window else 1
    return {
        ",".join(v for k, v in sorted(s["metric"].items()) if k != "instance"): round(
            float(s["value"][1]) * factor, 6
        )
        for s in prometheus.query(panel(name), at)
    }
