"""Every shipped alert fires from a real fault and resolves once the fault is gone.

One real Prometheus (the shipped rules, every ``for`` and range window cut to 1/30, which
keeps their order) scrapes eight real ``natsrouter run`` processes, seven of them on five real
nats-servers and one with its embedded server, and sends to a real Alertmanager running the
shipped example (receivers on a webhook sink, timers cut to 1/30); six scenarios run at once:

- outage (Routers A, B, E on server 1): three server restarts, then a kill long enough for
  reconnection to be exhausted, with a pending queue of 5 under drop_oldest (A), of 2 under
  reject_new (B), and fail-open mode (E); every stream's duplicate window is 1 s, so the
  replay after the restart is past it.
- publish faults (Router C on server 2): /admin/faults makes half the core publishes and
  every JetStream publish fail; a result whose usage event cannot be stored reaches
  js_max_deliver; then eleven malformed results are dead-lettered.
- connect faults (Router D on server 3): an invalid policy file is written, then every
  connection attempt fails while the connection is dropped.
- stream faults (Router F on server 4) and embedded (Router G): tests/alerts/stream_faults.py.
- store faults (Router H, shared state, on server 5): tests/alerts/store_faults.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from natsrouter.embedded import NatsServer
from tests.alerts.report import write_report
from tests.alerts.routing import example_config, reached
from tests.alerts.rules import alerts
from tests.alerts.stack import (
    FAULTS_ENV,
    admin_faults,
    decide_body,
    decide_http,
    fast_rules,
    start_router,
)
from tests.alerts.store_faults import store_faults
from tests.alerts.stream_faults import embedded_crash, stream_faults
from tests.alerts.watch import Watch
from tests.helpers.alertmanager import AlertmanagerServer, WebhookSink
from tests.helpers.process import RouterProcess
from tests.helpers.prometheus import PrometheusServer
from tests.helpers.worker import result_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # about 65 s alone

DIVISOR = 30  # `for`, range windows and Alertmanager timers: 1/30 of the shipped ones
SHORT_DEDUP = {"ROUTER_IDEMPOTENCY_TTL_SECONDS": "1"}  # the streams' duplicate window


class World:
    def __init__(self, tmp: Path, tool: Callable[[str], str]) -> None:
        self.tmp = tmp
        self.servers = [
            NatsServer(store_dir=tmp / f"js{n}", log_file=tmp / f"nats{n}.log")
            for n in (1, 2, 3, 4, 5)
        ]
        self.routers: dict[str, RouterProcess] = {}
        self.prometheus: PrometheusServer | None = None
        self.binary = tool("prometheus")
        self.sink = WebhookSink()
        (tmp / "am").mkdir()
        self.alertmanager = AlertmanagerServer(
            tool("prometheus-alertmanager"), tmp / "am", example_config(self.sink, DIVISOR)
        )

    def start(self) -> None:
        for server in self.servers:
            server.start()
        s1, s2, s3, s4, s5 = (server.url for server in self.servers)
        specs: dict[str, tuple[str | None, dict[str, str]]] = {
            "A": (s1, {"ROUTER_NATS_MAX_PENDING_OPERATIONS": "5", **SHORT_DEDUP}),
            "B": (
                s1,
                {
                    "ROUTER_NATS_MAX_PENDING_OPERATIONS": "2",
                    "ROUTER_NATS_PENDING_OVERFLOW": "reject_new",
                    **SHORT_DEDUP,
                },
            ),
            "E": (s1, {"ROUTER_NATS_FAIL_OPEN_MODE": "true", **SHORT_DEDUP}),
            "C": (s2, {"ROUTER_JS_MAX_DELIVER": "2", "ROUTER_JS_NAK_DELAY_MS": "0", **FAULTS_ENV}),
            "D": (s3, dict(FAULTS_ENV)),
            "F": (
                s4,
                {
                    "ROUTER_DECIDE_MAX_IN_FLIGHT": "1",
                    "ROUTER_JS_PUBLISH_RETRY_DEADLINE_MS": "0",
                    **FAULTS_ENV,
                },
            ),
            "G": (None, {}),  # its embedded nats-server
            "H": (s5, {"ROUTER_SHARED_STATE_ENABLED": "true"}),
        }
        for name, (url, env) in specs.items():
            self.routers[name] = start_router(self.tmp / f"router{name}", url, **env)
        self.sink.start()
        self.alertmanager.start()
        home = self.tmp / "prometheus"
        home.mkdir()
        targets = [f"127.0.0.1:{r.metrics_port}" for r in self.routers.values()]
        rules = fast_rules(home, for_divisor=DIVISOR, window_divisor=DIVISOR)
        self.prometheus = PrometheusServer(
            self.binary, home, targets, rules, alertmanager=self.alertmanager.address
        )
        self.prometheus.start()

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
        self.alertmanager.stop()
        self.sink.stop()
        for router in self.routers.values():
            router.kill()
        for server in self.servers:
            server.kill()

    def instance(self, name: str) -> str:
        return f"127.0.0.1:{self.routers[name].metrics_port}"


@pytest.fixture
def world(tool: Callable[[str], str], tmp_path: Path) -> Iterator[World]:
    built = World(tmp_path, tool)
    try:
        built.start()
        yield built
    finally:
        built.stop()


def outage(world: World, watch: Watch) -> None:
    server = world.servers[0]
    a, b, e = (world.routers[n] for n in "ABE")

    def all_status(value: float) -> Callable[[], bool]:
        return lambda: all(r.metric("router_nats_connection_status") == value for r in (a, b, e))

    def proved() -> bool:
        return all(r.status()["reconnect_attempts"] == 0 for r in (a, b, e))

    watch.fault(["RouterNatsConnectionFlapping"], world.instance("A"), "3 nats-server restarts")
    for _ in range(3):
        server.kill()
        a.wait(lambda: all(r.metric("router_nats_connection_status") < 1 for r in (a, b, e)))
        server.start()
        a.wait(all_status(1), what="reconnected after a restart")
        # Each restart is a separate outage: the next kill waits until the link has proved
        # healthy (its attempts start from zero again, connection.HEALTHY_AFTER_S).
        a.wait(proved, timeout_s=15, what="connection proved healthy")

    down = [
        "RouterNatsConnectionDown",
        "RouterNatsReconnectionExhausted",
        "RouterNatsNotConnected",
        "RouterNatsReconnectFailureRatioHigh",
    ]
    full = ["RouterNatsPendingQueueNearFull"]
    watch.fault(down, world.instance("A"), "nats-server killed")
    server.kill()
    a.wait(all_status(0), what="reconnection exhausted")
    watch.fault(
        [*full, "RouterNatsPendingOperationsDropped"], world.instance("A"), "7 queued, bound 5"
    )
    assert [decide_http(a, f"a{n}")["assignment"]["outcome"] for n in range(7)] == ["queued"] * 7
    watch.fault(
        [*full, "RouterNatsPendingOperationsRejected"], world.instance("B"), "4 queued, bound 2"
    )
    assert [decide_http(b, f"b{n}")["assignment"]["outcome"] for n in range(4)] == [
        "queued",
        "queued",
        "rejected",
        "rejected",
    ]
    watch.fault(["RouterNatsFailOpenActive"], world.instance("E"), "fail-open mode, outage")
    assert decide_http(e, "e1")["assignment"]["outcome"] == "failed_open"
    watch.fired(
        ["RouterNatsConnectionFlapping", *down, *full, "RouterNatsPendingOperationsDropped"],
        world.instance("A"),
    )
    watch.fired([*full, "RouterNatsPendingOperationsRejected"], world.instance("B"))
    watch.fired(["RouterNatsFailOpenActive"], world.instance("E"))
    watch.inhibited(list(INHIBITED_BY_CONNECTION_DOWN), world.instance("A"))

    watch.fault(["RouterNatsReplayPastDedupWindow"], world.instance("A"), "replay after outage")
    server.start()
    gone = [
        "RouterNatsConnectionFlapping",
        *down,
        *full,
        "RouterNatsPendingOperationsDropped",
    ]
    watch.cleared(gone, world.instance("A"))
    watch.cleared([*full, "RouterNatsPendingOperationsRejected"], world.instance("B"))
    watch.cleared(["RouterNatsFailOpenActive"], world.instance("E"))
    a.wait(all_status(1), what="reconnected")
    a.wait(lambda: a.metric("router_nats_pending_operations_retry_success_total") == 5)
    watch.cleared(["RouterNatsReplayPastDedupWindow"], world.instance("A"))  # a one-off event
    watch.resolved([*gone, "RouterNatsReplayPastDedupWindow"], world.instance("A"))
    watch.resolved([*full, "RouterNatsPendingOperationsRejected"], world.instance("B"))
    watch.resolved(["RouterNatsFailOpenActive"], world.instance("E"))


async def _publish_faults_traffic(url: str, router: RouterProcess, stop: threading.Event) -> None:
    nc = await nats.connect(url)
    try:
        n = 0
        while not stop.is_set():
            n += 1
            # A timeout: the reply was one of the failed core publishes.
            with contextlib.suppress(NatsTimeoutError):
                await nc.request("beamline.router.v1.decide", decide_body(f"c{n}"), 0.3)
            await asyncio.to_thread(decide_http, router, f"ch{n}")
    finally:
        await nc.close()


async def _publish(url: str, subject: str, bodies: list[bytes]) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for body in bodies:
            await js.publish(subject, body)
    finally:
        await nc.close()


ASSIGNMENT: dict[str, Any] = {
    "assignment_id": "as-maxdeliver",
    "request_id": "rq-maxdeliver",
    "executor": {"provider_id": "p1"},
    "job": {"type": "text"},
    "correlation": {"trace_id": "0" * 32},
    "tenant_id": "acme",
}


def publish_faults(world: World, watch: Watch) -> None:
    c, url, instance = world.routers["C"], world.servers[1].url, world.instance("C")
    ratios = ["RouterNatsPublishFailureRatioHigh", "RouterNatsPublishWithAckFailureRatioHigh"]
    admin_faults(c, "POST", "publish", {"kind": "intermittent", "probability": 0.5})
    admin_faults(c, "POST", "publish_with_ack", {"kind": "error", "reason": "server_error"})
    watch.fault(ratios, instance, "/admin/faults: publish 50%, publish_with_ack 100%")
    stop = threading.Event()
    traffic = threading.Thread(target=asyncio.run, args=(_publish_faults_traffic(url, c, stop),))
    traffic.start()
    try:
        watch.fault(["RouterMaxDeliverExhausted"], instance, "usage not stored, max_deliver 2")
        result = json.dumps(result_for(ASSIGNMENT)).encode()
        asyncio.run(_publish(url, "caf.exec.result.v1", [result]))
        watch.fired([*ratios, "RouterMaxDeliverExhausted"], instance)
    finally:
        stop.set()
        traffic.join(30)
    admin_faults(c, "DELETE")
    watch.cleared([*ratios, "RouterMaxDeliverExhausted"], instance)

    watch.fault(["RouterDeadLetterRateHigh"], instance, "11 malformed results")
    asyncio.run(_publish(url, "caf.exec.result.v1", [b"not json"] * 11))
    c.wait(lambda: c.metric("router_dlq_total", consumer="results", reason="invalid") == 11)
    watch.cleared(["RouterDeadLetterRateHigh"], instance)  # a one-off burst
    watch.resolved([*ratios, "RouterMaxDeliverExhausted", "RouterDeadLetterRateHigh"], instance)


def connect_faults(world: World, watch: Watch) -> None:
    d, instance = world.routers["D"], world.instance("D")
    policy = d.tmp / "policies" / "acme" / "default.json"
    good = policy.read_text()
    watch.fault(["RouterPolicyReloadFailed"], instance, "invalid policy file")
    policy.write_text('{"providers": "not a list"}')
    d.wait(lambda: d.metric("router_policy_reload_failures_total") >= 1, what="reload refused")
    watch.cleared(["RouterPolicyReloadFailed"], instance)
    policy.write_text(good)

    alerts = ["RouterNatsNotConnected", "RouterNatsReconnectFailureRatioHigh"]
    admin_faults(d, "POST", "connect", {"kind": "error"})
    admin_faults(d, "POST", "publish_with_ack", {"kind": "close_connection"})
    watch.fault(alerts, instance, "/admin/faults: connect fails, connection dropped")
    assert decide_http(d, "d1")["assignment"]["outcome"] == "queued"
    watch.fired(alerts, instance)
    watch.inhibited(list(INHIBITED_BY_CONNECTION_DOWN), instance)
    admin_faults(d, "DELETE")
    watch.cleared(alerts, instance)
    d.wait(lambda: d.metric("router_nats_connection_status") == 1, what="reconnected")
    watch.resolved(["RouterPolicyReloadFailed", *alerts], instance)


def run_all(*scenarios: Callable[[], None]) -> None:
    """Run the scenarios at once; re-raise the first failure."""
    errors: list[BaseException] = []

    def guarded(scenario: Callable[[], None]) -> None:
        try:
            scenario()
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(s,)) for s in scenarios]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    if errors:
        raise errors[0]


RECEIVER = {"critical": "pager", "warning": "chat"}  # deploy/alertmanager/alertmanager.example.yml
INHIBITED_BY_CONNECTION_DOWN = ("RouterNatsNotConnected", "RouterNatsReconnectFailureRatioHigh")
EXTRA_LABELS = {
    "RouterNatsPendingOperationsDropped": {"reason": "queue_full"},
    "RouterNatsPendingOperationsFailed": {"reason": "server_error"},
    "RouterMaxDeliverExhausted": {"consumer": "results"},
    "RouterDeadLetterRateHigh": {"consumer": "results"},
    "RouterDeadLetterNotStored": {"consumer": "results"},
}


def test_every_alert_fires_from_its_real_fault_and_resolves(world: World) -> None:
    """Each shipped alert fires with its exact labels from a real fault and then resolves."""
    assert world.prometheus is not None
    prometheus = world.prometheus
    prometheus.wait(
        lambda: len(prometheus.query("router_nats_connection_status == 1")) == len(world.routers),
        30,
        "scrapes",
    )

    def notified(alert: str, instance: str) -> bool:
        return bool(reached(world.sink, alert, instance))

    with Watch(prometheus, world.alertmanager, reached=notified) as watch:
        run_all(
            lambda: outage(world, watch),
            lambda: publish_faults(world, watch),
            lambda: connect_faults(world, watch),
            lambda: stream_faults(
                world.routers["F"], world.servers[3].url, world.instance("F"), watch
            ),
            lambda: embedded_crash(world.routers["G"], world.instance("G"), watch),
            lambda: store_faults(
                world.routers["H"], world.servers[4].url, world.instance("H"), watch
            ),
        )
    for record in watch.records.values():
        record.receivers = reached(world.sink, record.alert, record.instance)
        record.receivers_during = reached(
            world.sink, record.alert, record.instance, record.cleared_at
        )
    write_report(watch.records.values())

    shipped = {alert.name: alert for alert in alerts()}
    assert {alert for alert, _ in watch.records} == set(shipped)
    for (name, instance), record in watch.records.items():
        assert record.labels == {
            "alertname": name,
            "severity": shipped[name].labels["severity"],
            "component": "router",
            "instance": instance,
            "job": "natsrouter",
            **EXTRA_LABELS.get(name, {}),
        }, name
        assert record.resolved_at is not None, name
        # Both Routers whose reconnection was exhausted had RouterNatsConnectionDown firing.
        # (Once it resolved, a chat flush before these resolved too may still send one:
        # docs/monitoring.md says so.)
        if name in INHIBITED_BY_CONNECTION_DOWN:
            assert (record.receivers_during, record.inhibited) == ([], True), name
        else:
            assert record.receivers == [RECEIVER[record.labels["severity"]]], name
