"""The scenarios of tests/alerts/test_alerts_fire.py for the alerts on one stream in trouble
while the connection is up (a blocked subject, queued publishes refused for good), on load
shedding, and on the embedded nats-server.

- stream faults (Router F, ``decide_max_in_flight`` 1, its own nats-server): /admin/faults
  makes every publish to the assignment subject time out, so three decides' assignments
  wait queued behind a blocked subject; the stream's ``max_msg_size`` is cut below the
  assignment's size and the fault removed, so the replay is refused for good (poison);
  then a publish delay holds each decide while four callers send at once (overloaded).
- embedded (Router G, no ``nats_url``): its embedded nats-server is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import urllib.error
import urllib.request

import nats

from tests.alerts.stack import admin_faults, decide_body, decide_http
from tests.alerts.watch import Watch
from tests.helpers.process import RouterProcess

ASSIGNMENT_SUBJECT = "caf.exec.assign.v1"


async def set_max_msg_size(url: str, stream: str, size: int) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config = (await js.stream_info(stream)).config
        config.max_msg_size = size
        await js.update_stream(config)
    finally:
        await nc.close()


def _decide_status(router: RouterProcess, request_id: str) -> int:
    """The HTTP status of one decide with an assignment (503: answered ``overloaded``)."""
    request = urllib.request.Request(router.decide_url, data=decide_body(request_id))
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def _callers(router: RouterProcess, stop: threading.Event, n: int) -> list[threading.Thread]:
    def caller(k: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            _decide_status(router, f"f{k}-{i}")

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(n)]
    for thread in threads:
        thread.start()
    return threads


def stream_faults(router: RouterProcess, url: str, instance: str, watch: Watch) -> None:
    f = router
    blocked, poison = "RouterNatsDestinationBlocked", "RouterNatsPendingOperationsFailed"
    timeout = {"kind": "timeout", "subject": ASSIGNMENT_SUBJECT}
    admin_faults(f, "POST", "publish_with_ack", timeout)
    watch.fault(
        [blocked], instance, f"/admin/faults: publish_with_ack timeout on {ASSIGNMENT_SUBJECT}"
    )
    for n in range(3):
        assert decide_http(f, f"fb{n}")["assignment"]["outcome"] == "queued"
    f.wait(lambda: f.metric("router_nats_blocked_destinations") == 1, what="subject blocked")
    assert list(f.status()["pending"]["blocked"]) == [ASSIGNMENT_SUBJECT]
    watch.fired([blocked], instance)
    # The block lasts exactly as long as the fault (tests/integration/test_blocked_destination.py):
    # removed at once, the alert resolves within a second or two, which on a loaded machine
    # comes before Alertmanager's group wait flushed, and it is never notified.
    watch.notified([blocked], instance)

    # The queued assignments (about 400 bytes) no longer fit their stream: on replay the
    # server refuses each for good, and the subject is no longer blocked.
    asyncio.run(set_max_msg_size(url, "ROUTER_ASSIGNMENTS", 64))
    watch.fault([poison], instance, "stream max_msg_size 64 below the 3 queued assignments")
    admin_faults(f, "DELETE")
    watch.cleared([blocked], instance)
    f.wait(
        lambda: f.metric("router_nats_pending_operations_failed_total", reason="server_error") == 3,
        what="3 queued assignments failed",
    )
    assert f.metric("router_nats_blocked_destinations") == 0
    watch.cleared([poison], instance)  # a one-off event
    asyncio.run(set_max_msg_size(url, "ROUTER_ASSIGNMENTS", -1))

    overloaded = "RouterDecideOverloaded"
    admin_faults(f, "POST", "publish_with_ack", {"kind": "delay", "delay_ms": 300})
    watch.fault([overloaded], instance, "decide_max_in_flight 1, publish delay 300 ms, 4 callers")
    stop = threading.Event()
    callers = _callers(f, stop, 4)
    try:
        watch.fired([overloaded], instance)
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)
    admin_faults(f, "DELETE")
    watch.cleared([overloaded], instance)
    watch.resolved([blocked, poison, overloaded], instance)


def embedded_crash(router: RouterProcess, instance: str, watch: Watch) -> None:
    g, alert = router, "RouterEmbeddedNatsRestarted"
    (child,) = g.nats_children
    watch.fault([alert], instance, "embedded nats-server killed (SIGKILL)")
    os.kill(child, signal.SIGKILL)
    g.wait(lambda: g.metric("router_embedded_nats_restarts_total") == 1, what="restarted")
    g.wait(lambda: g.metric("router_nats_connection_status") == 1, what="reconnected")
    assert decide_http(g, "g1")["assignment"]["outcome"] == "sent"
    assert "ROUTER_EMBEDDED_NATS_EXITED" in g.codes()
    watch.cleared([alert], instance)  # a one-off event
    watch.resolved([alert], instance)
