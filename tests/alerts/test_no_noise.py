"""No noise: the shipped rules exactly as shipped (every ``for`` and window), a real
Prometheus scraping a real ``natsrouter run`` with its default reconnection settings, normal
traffic (decides over NATS and HTTP, a worker acking and answering every assignment) and one
nats-server restart, shorter than every ``for``. No alert fires, and once the window has
passed the longest ``for`` a brief outage could start (1 minute), none is even pending."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.errors import Error as NatsError

from natsrouter.embedded import NatsServer
from tests.alerts.conftest import RULES
from tests.alerts.stack import decide_body, decide_http
from tests.helpers.process import RouterProcess
from tests.helpers.prometheus import PrometheusServer
from tests.helpers.worker import FakeWorker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

OBSERVE_AFTER_RESTART_S = 70  # past the 1-minute `for` of the connection and queue alerts


async def _traffic(url: str, router: RouterProcess, stop: threading.Event) -> None:
    """A decide over each transport and the worker's answers, about 4 a second, until stop."""
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    worker = FakeWorker(nc, "caf.exec.assign.v1", "caf.exec.assign.v1.ack", "caf.exec.result.v1")
    n = 0
    try:
        while not stop.is_set():
            n += 1
            # During the restart a call fails on the client's side: that is the client's
            # outage, not the Router's, and the loop goes on.
            with contextlib.suppress(NatsError, OSError, TimeoutError):
                await nc.request("beamline.router.v1.decide", decide_body(f"nats-{n}"), 2)
                await asyncio.to_thread(decide_http, router, f"http-{n}")
                for assignment, _ in await worker.assignments(1, timeout_s=2):
                    await worker.ack(assignment)
                    await worker.result(assignment)
            await asyncio.sleep(0.25)
    finally:
        await nc.close()


def test_normal_traffic_and_one_short_restart_fire_nothing(
    tool: Callable[[str], str], nats_server: NatsServer, tmp_path: Path
) -> None:
    """With the shipped rules, traffic and one brief nats-server restart fire no alert."""
    router = RouterProcess({"ROUTER_NATS_URL": nats_server.url}, tmp_path / "router")
    (tmp_path / "prom").mkdir()
    prometheus = PrometheusServer(
        tool("prometheus"), tmp_path / "prom", [f"127.0.0.1:{router.metrics_port}"], RULES
    )
    stop = threading.Event()
    traffic = threading.Thread(target=asyncio.run, args=(_traffic(nats_server.url, router, stop),))
    seen: dict[str, set[str]] = {"pending": set(), "firing": set()}
    try:
        router.wait(router.ready, 30, what="router ready")
        prometheus.start()
        prometheus.wait(
            lambda: prometheus.query("router_nats_connection_status == 1"), 15, "scrape"
        )
        traffic.start()

        def watch_until(deadline: float) -> None:
            while time.monotonic() < deadline:
                for alert in prometheus.alerts():
                    seen[alert["state"]].add(alert["labels"]["alertname"])
                time.sleep(0.5)

        watch_until(time.monotonic() + 15)
        before = router.metric("router_results_total", status="success")
        nats_server.kill()
        router.wait(lambda: router.metric("router_nats_connection_status") < 1, what="loss")
        nats_server.start()
        router.wait(lambda: router.metric("router_nats_connection_status") == 1, 30, "back")
        assert router.metric("router_nats_reconnection_exhausted_total") == 0
        watch_until(time.monotonic() + OBSERVE_AFTER_RESTART_S)
        stop.set()
        traffic.join(30)

        assert router.metric("router_nats_connection_lost_total") == 1
        assert router.metric("router_results_total", status="success") > before + 100
        assert seen["firing"] == set()
        assert prometheus.alerts() == []
    finally:
        stop.set()
        if traffic.is_alive():
            traffic.join(30)
        prometheus.stop()
        router.kill()
