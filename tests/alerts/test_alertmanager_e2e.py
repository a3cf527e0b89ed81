"""A real Alertmanager runs the shipped example configuration, its receivers' URLs pointed
at a local webhook sink and its timers cut to 1/30: a real Prometheus (the shipped rules,
``for`` and windows cut to 1/30, which keeps their order) scrapes two real Routers on one
nats-server, X (reconnection exhausted after 3 attempts) and Y (never exhausted). Killing
the server pages for X, tells chat about Y, and X's overlapping warnings stay silent."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from natsrouter.embedded import NatsServer
from tests.alerts.routing import chat_subjects, example_config, pager_events
from tests.alerts.stack import fast_rules, start_router
from tests.helpers.alertmanager import AlertmanagerServer, WebhookSink
from tests.helpers.process import RouterProcess
from tests.helpers.prometheus import PrometheusServer

pytestmark = pytest.mark.integration

DIVISOR = 30


class Stack:
    def __init__(self, tool: Callable[[str], str], tmp: Path, nats_url: str) -> None:
        self.sink = WebhookSink()
        self.x = start_router(tmp / "x", nats_url)
        self.y = start_router(tmp / "y", nats_url, ROUTER_NATS_RECONNECT_ATTEMPTS="0")
        (tmp / "am").mkdir()
        self.alertmanager = AlertmanagerServer(
            tool("prometheus-alertmanager"), tmp / "am", example_config(self.sink, DIVISOR)
        )
        (tmp / "prom").mkdir()
        self.prometheus = PrometheusServer(
            tool("prometheus"),
            tmp / "prom",
            [self.instance(self.x), self.instance(self.y)],
            fast_rules(tmp / "prom", for_divisor=DIVISOR, window_divisor=DIVISOR),
            alertmanager=self.alertmanager.address,
        )

    @staticmethod
    def instance(router: RouterProcess) -> str:
        return f"127.0.0.1:{router.metrics_port}"

    def start(self) -> None:
        self.sink.start()
        self.alertmanager.start()
        self.prometheus.start()

    def stop(self) -> None:
        self.prometheus.stop()
        self.alertmanager.stop()
        self.sink.stop()
        self.x.kill()
        self.y.kill()

    def held(self, name: str, router: RouterProcess) -> list[dict[str, Any]]:
        """What Alertmanager holds of alert ``name`` for ``router``."""
        return [
            a
            for a in self.alertmanager.alerts()
            if a["labels"]["alertname"] == name and a["labels"]["instance"] == self.instance(router)
        ]


@pytest.fixture
def stack(tool: Callable[[str], str], nats_server: NatsServer, tmp_path: Path) -> Iterator[Stack]:
    built = Stack(tool, tmp_path, nats_server.url)
    try:
        built.start()
        yield built
    finally:
        built.stop()


def wait(condition: Callable[[], object], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


INHIBITED = ("RouterNatsNotConnected", "RouterNatsReconnectFailureRatioHigh")


def test_critical_pages_warning_chats_and_connection_down_inhibits_its_warnings(
    nats_server: NatsServer, stack: Stack
) -> None:
    """Pager gets X's ConnectionDown, chat Y's NotConnected, and X's warnings are suppressed."""
    x, y = stack.instance(stack.x), stack.instance(stack.y)
    prometheus = stack.prometheus
    wait(lambda: len(prometheus.query("router_nats_connection_status == 1")) == 2, "scrapes")

    nats_server.kill()
    down = f"RouterNatsConnectionDown {x}"
    wait(lambda: any(down in s for a, s in pager_events(stack.sink) if a == "trigger"), "a page")
    wait(lambda: any(f"RouterNatsNotConnected {y}" in s for s in chat_subjects(stack.sink)), "chat")
    for name in INHIBITED:
        wait(lambda n=name: stack.held(n, stack.x), f"{name} of X in Alertmanager")
        (held,) = stack.held(name, stack.x)
        assert held["status"]["state"] == "suppressed", name
        assert held["status"]["inhibitedBy"] != [], name
    (paged,) = stack.held("RouterNatsConnectionDown", stack.x)
    assert paged["status"]["state"] == "active"
    assert paged["receivers"] == [{"name": "pager"}]
    assert stack.held("RouterNatsConnectionDown", stack.y) == []  # Y keeps trying: no page
    (chatted,) = stack.held("RouterNatsNotConnected", stack.y)
    assert (chatted["status"]["state"], chatted["receivers"]) == ("active", [{"name": "chat"}])
    # Y's ratio alert fires with X's; once it is in chat, X's would have been too.
    ratio_y = f"RouterNatsReconnectFailureRatioHigh {y}"
    wait(lambda: any(ratio_y in s for s in chat_subjects(stack.sink)), "Y's ratio in chat")
    leaked = [s for s in chat_subjects(stack.sink) for n in INHIBITED if f"{n} {x}" in s]
    assert leaked == []

    nats_server.start()
    wait(lambda: any(down in s for a, s in pager_events(stack.sink) if a == "resolve"), "resolve")
    assert all("RouterNatsConnectionDown" not in s for s in chat_subjects(stack.sink))
    assert [s for _, s in pager_events(stack.sink) if f" {y}" in s] == []  # Y never paged
