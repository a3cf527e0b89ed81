"""Connection failure suite: a real nats-server killed, restarted, black-holed, refused.

Every scenario checks the three criteria: the process and the link's tasks stay alive; every
message is delivered, queued, or counted as dropped; the counters, log codes and the status
gauge (0 or 0.5 during, 1 after) tell what happened.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from natsrouter.config import build_settings
from natsrouter.embedded import NatsServer, free_port
from natsrouter.errors import NotConnectedError
from natsrouter.link import ConnectionState, InboundMessage, Outcome
from natsrouter.link.backoff import BackoffPolicy
from tests.conftest import LinkFactory
from tests.helpers.dropping_server import DroppingServer
from tests.helpers.observe import codes, metric
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration
S = ConnectionState


class Inbox:
    """Collects what a subscription receives."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def __call__(self, msg: InboundMessage) -> None:
        self.data.append(msg.data)


def status_gauge(link: Any) -> float:
    return metric(link, "router_nats_connection_status")


async def test_loss_keeps_process_and_tasks_alive(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """Server killed: link goes reconnecting (gauge 0.5), counts the loss, stays alive."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    assert status_gauge(link) == 1.0
    nats_server.kill()
    await wait_for(lambda: link.state is S.RECONNECTING, 5, "reconnecting")
    assert status_gauge(link) == 0.5
    assert metric(link, "router_nats_connection_lost_total") == 1
    await wait_for(lambda: metric(link, "router_nats_reconnect_attempts_total") >= 3, 5)
    assert link.alive
    assert not link.ready
    lost = [e for e in logs if e.get("error_code") == "NATS_CONNECTION_LOST"]
    assert len(lost) == 1
    assert lost[0]["log_level"] == "error"
    assert lost[0]["error_tag"] == "nats_connection_failure"
    assert lost[0]["reason"] == "connection_closed"


async def test_sigkill_and_restart_reconnects_within_one_backoff_step(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """SIGKILL + restart on the same port: the first attempt begun after the server is back
    (at most one more backoff step) connects."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    nats_server.kill()
    await wait_for(lambda: link.state is S.RECONNECTING, 5)
    await nats_server.astart()
    # Counted when an attempt begins its delay: the one in its delay now may still connect.
    begun = metric(link, "router_nats_reconnect_attempts_total")
    await wait_for(lambda: link.state is S.CONNECTED, 5, "restored")
    assert metric(link, "router_nats_reconnect_attempts_total") - begun <= 1
    assert status_gauge(link) == 1.0
    assert metric(link, "router_nats_connection_restored_total") == 1
    assert metric(link, "router_nats_connection_established_total") == 2
    assert metric(link, "router_nats_outage_duration_seconds_count") == 1
    assert codes(logs).count("NATS_CONNECTION_RESTORED") == 1
    restored = next(e for e in logs if e.get("error_code") == "NATS_CONNECTION_RESTORED")
    assert restored["error_tag"] == "nats_connection_recovered"
    assert restored["reconnect_attempts"] >= 1
    assert restored["outage_ms"] > 0


async def test_delays_grow_and_cap_within_jitter(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """Reconnect delays follow min(base*2^n, max) within the jitter bounds, one log each."""
    link = await make_link([nats_server.url], nats_reconnect_attempts=0)
    assert await link.wait_connected(5)
    nats_server.kill()
    await wait_for(lambda: metric(link, "router_nats_reconnect_attempts_total") >= 6, 10)
    attempts = [e for e in logs if e.get("error_code") == "NATS_RECONNECT_ATTEMPT"][:6]
    policy = BackoffPolicy(50, 200, 0.2)
    assert [e["attempt"] for e in attempts] == [1, 2, 3, 4, 5, 6]
    for n, event in enumerate(attempts):
        low, high = policy.bounds_ms(n)
        assert round(low) <= event["delay_ms"] <= round(high), (n, event)
        assert event["error_tag"] == "nats_reconnecting"
    # Later attempts sit at the cap.
    assert all(e["delay_ms"] >= 160 for e in attempts[2:])
    failed = [e for e in logs if e.get("error_code") == "NATS_RECONNECT_FAILED"]
    assert [e["attempt"] for e in failed[:5]] == [1, 2, 3, 4, 5]
    assert all(e["reason"] == "connection_closed" for e in failed)


async def _exhaust(nats_server: NatsServer, make_link: LinkFactory, policy: str) -> Any:
    link = await make_link(
        [nats_server.url], nats_reconnect_attempts=3, nats_on_reconnect_exhausted=policy
    )
    assert await link.wait_connected(5)
    nats_server.kill()
    await wait_for(lambda: metric(link, "router_nats_reconnection_exhausted_total") == 1, 5)
    return link


async def test_exhaustion_keep_retrying_reconnects_when_server_returns(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """keep_retrying: after N failures state is disconnected (gauge 0), then it reconnects."""
    link = await _exhaust(nats_server, make_link, "keep_retrying")
    assert link.state is S.DISCONNECTED
    assert status_gauge(link) == 0.0
    assert not link.ready
    assert metric(link, "router_nats_reconnect_failures_total", reason="connection_closed") == 3
    exhausted = [e for e in logs if e.get("error_code") == "NATS_RECONNECTION_EXHAUSTED"]
    assert exhausted[0]["max_attempts"] == 3
    assert exhausted[0]["policy"] == "keep_retrying"
    assert exhausted[0]["log_level"] == "error"
    # Still trying after exhaustion, at the capped delay.
    await wait_for(lambda: metric(link, "router_nats_reconnect_attempts_total") >= 5, 5)
    assert (await link.publish("x.y", b"kept")).outcome is Outcome.QUEUED
    await nats_server.astart()
    await wait_for(lambda: link.state is S.CONNECTED, 5)
    assert status_gauge(link) == 1.0
    await wait_for(lambda: link.pending.count == 0, 5)
    # Exhaustion and the attempt count are reset once the connection proved healthy.
    await wait_for(lambda: link.status()["exhausted"] is False, 5, "a healthy connection")
    assert link.status()["reconnect_attempts"] == 0


async def test_exhaustion_fail_open_refuses_then_recovers(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """fail_open: once exhausted, publishes are failed_open at once; queueing resumes after."""
    link = await make_link(
        [nats_server.url], nats_reconnect_attempts=3, nats_on_reconnect_exhausted="fail_open"
    )
    assert await link.wait_connected(5)
    inbox = Inbox()
    await link.subscribe("fo.x", inbox)
    nats_server.kill()
    await wait_for(lambda: link.state is S.RECONNECTING, 5)
    before = await link.publish("fo.x", b"queued-before-exhaustion")
    assert before.outcome is Outcome.QUEUED
    await wait_for(lambda: link.state is S.DISCONNECTED, 5)
    # Never blocks: one step of the coroutine finishes it, without suspending once.
    with pytest.raises(StopIteration) as stopped:
        link.publish("fo.x", b"refused").send(None)
    after = stopped.value.value
    assert (after.outcome, after.pub_ack, after.pending_id) == (Outcome.FAILED_OPEN, None, None)
    assert metric(link, "router_nats_fail_open_total", operation="publish") == 1
    assert "NATS_PUBLISH_FAIL_OPEN" in codes(logs)
    await nats_server.astart()
    await wait_for(lambda: inbox.data == [b"queued-before-exhaustion"], 5)
    assert (await link.publish("fo.x", b"after")).outcome is Outcome.SENT
    await wait_for(lambda: inbox.data[-1] == b"after", 5)
    assert link.accounting.balanced(link.pending.count)


async def test_exhaustion_exit_requests_exit_and_stops_trying(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """exit: the link asks the process to exit, stops retrying, and liveness fails."""
    link = await _exhaust(nats_server, make_link, "exit")
    await asyncio.wait_for(link.exit_requested.wait(), 2)
    # Not alive: the supervisor has returned, so no attempt can follow the three made.
    await wait_for(lambda: not link.alive, 2, "the supervisor's end")
    assert metric(link, "router_nats_reconnect_attempts_total") == 3
    assert link.state is S.DISCONNECTED


@pytest.mark.parametrize("down_s", [0.05, 2.0], ids=["short", "long"])
async def test_outage_is_measured_and_nothing_queued_is_lost(
    nats_server: NatsServer, make_link: LinkFactory, down_s: float
) -> None:
    """Short and long outages: one outage observation, every queued message delivered."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    inbox = Inbox()
    await link.subscribe("out.x", inbox)
    nats_server.kill()
    await wait_for(lambda: link.state is not S.CONNECTED, 5)
    sent = [f"m{i}".encode() for i in range(20)]
    for data in sent:
        assert (await link.publish("out.x", data)).outcome is Outcome.QUEUED
    await asyncio.sleep(down_s)
    await nats_server.astart()
    await wait_for(lambda: inbox.data == sent, 10, "all queued messages")
    assert metric(link, "router_nats_outage_duration_seconds_count") == 1
    assert metric(link, "router_nats_outage_duration_seconds_sum") >= down_s
    assert metric(link, "router_nats_pending_operations_retry_success_total") == 20
    assert metric(link, "router_nats_pending_operations_count") == 0


async def test_five_flaps_leak_no_task_or_subscription(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Five kill/restart cycles: counters add up, tasks and subscriptions do not pile up."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    inbox = Inbox()
    await link.subscribe("flap.x", inbox)
    baseline = len(asyncio.all_tasks())
    for _ in range(5):
        nats_server.kill()
        await wait_for(lambda: link.state is not S.CONNECTED, 5)
        await nats_server.astart()
        await wait_for(lambda: link.state is S.CONNECTED, 5)
    assert metric(link, "router_nats_connection_lost_total") == 5
    assert metric(link, "router_nats_connection_restored_total") == 5
    assert metric(link, "router_nats_connection_established_total") == 6
    assert metric(link, "router_nats_outage_duration_seconds_count") == 5
    await wait_for(lambda: len(asyncio.all_tasks()) <= baseline, 5, "tasks back to baseline")
    # One message, received once: exactly one live subscription on the server.
    assert (await link.publish("flap.x", b"once")).outcome is Outcome.SENT
    await wait_for(lambda: inbox.data == [b"once"], 5)
    await asyncio.sleep(0.2)
    assert inbox.data == [b"once"]
    assert link.status()["subscriptions"] == 1


async def test_starts_with_no_server_and_connects_when_one_appears(
    tmp_path: Path, make_link: LinkFactory, logs: list
) -> None:
    """No server at start: not ready, gauge 0.5, queues; connects once a server is up."""
    server = NatsServer(store_dir=tmp_path / "js")
    link = await make_link([server.url], nats_reconnect_attempts=0)
    await wait_for(
        lambda: (
            metric(link, "router_nats_connection_failures_total", reason="connection_closed") >= 2
        ),
        5,
    )
    assert link.state is S.CONNECTING
    assert status_gauge(link) == 0.5
    assert not link.ready
    inbox = Inbox()
    await link.subscribe("early.x", inbox)  # asked for while disconnected
    assert (await link.publish("early.x", b"before")).outcome is Outcome.QUEUED
    assert link.status()["pending"]["count"] == 1
    try:
        await server.astart()
        await wait_for(lambda: link.state is S.CONNECTED, 5)
        await wait_for(lambda: inbox.data == [b"before"], 5)
        assert metric(link, "router_nats_connection_established_total") == 1
        assert metric(link, "router_nats_connection_restored_total") == 0
        assert "NATS_CONNECTION_ESTABLISHED" in codes(logs)
    finally:
        server.kill()


async def test_two_server_pool_fails_over(tmp_path: Path, make_link: LinkFactory) -> None:
    """Server A dies: the link moves to B with its subscription, and keeps delivering."""
    a = NatsServer(store_dir=tmp_path / "a")
    b = NatsServer(store_dir=tmp_path / "b")
    a.start()
    b.start()
    try:
        link = await make_link([a.url, b.url])
        assert await link.wait_connected(5)
        assert link.status()["server"] == a.url
        inbox = Inbox()
        await link.subscribe("pool.x", inbox)
        a.kill()
        await wait_for(lambda: link.state is S.CONNECTED and link.status()["server"] == b.url, 5)
        assert (await link.publish("pool.x", b"on-b")).outcome is Outcome.SENT
        await wait_for(lambda: inbox.data == [b"on-b"], 5)
    finally:
        a.kill()
        b.kill()


async def test_core_subscription_delivers_again_after_reconnect(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A subscription made once receives messages published after a server restart."""
    link = await make_link([nats_server.url])
    publisher = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    inbox = Inbox()
    await link.subscribe("resub.x", inbox, queue="workers")
    await nats_server.arestart()
    await wait_for(lambda: link.state is S.CONNECTED and publisher.state is S.CONNECTED, 5)
    await wait_for(lambda: metric(link, "router_nats_subscribe_total") == 2, 5)
    assert (await publisher.publish("resub.x", b"after")).outcome is Outcome.SENT
    await wait_for(lambda: inbox.data == [b"after"], 5)


async def test_half_open_link_found_within_three_ping_intervals(
    proxy: TcpProxy, make_link: LinkFactory, logs: list
) -> None:
    """A proxy that stops forwarding without closing: lost within 3 ping intervals."""
    link = await make_link([proxy.url], nats_ping_interval_ms=300, nats_reconnect_attempts=0)
    assert await link.wait_connected(5)
    proxy.blackhole()
    took = await wait_for(lambda: link.state is not S.CONNECTED, 5, "loss detected")
    assert took <= 3 * 0.3 + 0.15
    assert metric(link, "router_nats_connection_lost_total") == 1
    # Attempts through the silent proxy time out instead of hanging.
    await wait_for(
        lambda: metric(link, "router_nats_connection_failures_total", reason="timeout") >= 1, 5
    )
    proxy.resume()
    await wait_for(lambda: link.state is S.CONNECTED, 5)
    assert metric(link, "router_nats_connection_restored_total") == 1


async def test_connection_reset_by_proxy_reconnects(
    proxy: TcpProxy, make_link: LinkFactory
) -> None:
    """Every TCP connection reset at once: the link reconnects and delivers again."""
    link = await make_link([proxy.url])
    assert await link.wait_connected(5)
    inbox = Inbox()
    await link.subscribe("cut.x", inbox)
    await proxy.cut()
    await wait_for(lambda: metric(link, "router_nats_connection_restored_total") == 1, 5)
    assert (await link.publish("cut.x", b"again")).outcome is Outcome.SENT
    await wait_for(lambda: inbox.data == [b"again"], 5)


async def test_request_while_down_fails_fast_with_typed_error(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A request while disconnected raises NotConnectedError at once and is counted."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    nats_server.kill()
    await wait_for(lambda: link.state is not S.CONNECTED, 5)
    # At once: it raises in the coroutine's first step, without suspending once.
    with pytest.raises(NotConnectedError):
        link.request("svc.x", b"?").send(None)
    assert metric(link, "router_nats_request_failures_total", reason="not_connected") == 1


@pytest.fixture
def auth_server(tmp_path: Path) -> Any:
    server = NatsServer(
        store_dir=tmp_path / "js", extra_args=["--user", "router", "--pass", "right-pw-123"]
    )
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_wrong_credentials_are_reason_auth_with_backoff(
    auth_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """A rejected password: reason=auth, clear log lines, backoff like any failure."""
    link = await make_link(
        [auth_server.url],
        nats_user="router",
        nats_password="wrong-pw-456",
        nats_reconnect_attempts=0,
    )
    await wait_for(
        lambda: metric(link, "router_nats_reconnect_failures_total", reason="auth") >= 2, 5
    )
    assert metric(link, "router_nats_connection_failures_total", reason="auth") >= 3
    assert link.state is S.CONNECTING
    failed = [e for e in logs if e.get("error_code") == "NATS_CONNECTION_FAILED"]
    assert failed[0]["reason"] == "auth"
    assert "wrong-pw-456" not in repr(logs)
    attempts = [e for e in logs if e.get("error_code") == "NATS_RECONNECT_ATTEMPT"]
    assert attempts[0]["delay_ms"] <= 60 < max(e["delay_ms"] for e in attempts) + 1


async def test_right_user_password_connects(
    auth_server: NatsServer, make_link: LinkFactory
) -> None:
    """The right credentials connect."""
    link = await make_link([auth_server.url], nats_user="router", nats_password="right-pw-123")
    assert await link.wait_connected(5)


async def test_token_auth_connects_and_wrong_token_is_auth(
    tmp_path: Path, make_link: LinkFactory
) -> None:
    """Token authentication: the right token connects, a wrong one is reason=auth."""
    server = NatsServer(store_dir=tmp_path / "js", extra_args=["--auth", "tok-abc-987"])
    server.start()
    try:
        good = await make_link([server.url], nats_token="tok-abc-987")
        assert await good.wait_connected(5)
        bad = await make_link([server.url], nats_token="tok-nope")
        await wait_for(
            lambda: metric(bad, "router_nats_connection_failures_total", reason="auth") >= 1, 5
        )
        assert not bad.ready
    finally:
        server.kill()


def test_settings_with_unreachable_port_stay_valid() -> None:
    """A server list pointing nowhere is valid configuration (start while down)."""
    settings = build_settings({"nats_url": f"nats://127.0.0.1:{free_port()}"})
    assert len(settings.nats_url) == 1


@pytest.mark.parametrize("handshake", [True, False], ids=["after-handshake", "at-once"])
async def test_a_server_that_accepts_and_drops_exhausts_the_attempts(
    make_link: LinkFactory, logs: list, handshake: bool
) -> None:
    """Accepted then dropped, each time: the backoff reaches its cap and exit is requested."""
    dropper = DroppingServer(handshake=handshake)
    await dropper.start()
    try:
        link = await make_link(
            [dropper.url], nats_reconnect_attempts=4, nats_on_reconnect_exhausted="exit"
        )
        await wait_for(link.exit_requested.is_set, 15, "the exit policy")
    finally:
        await dropper.stop()
    attempts = [e for e in logs if e.get("error_code") == "NATS_RECONNECT_ATTEMPT"]
    assert [e["attempt"] for e in attempts] == [1, 2, 3, 4]
    assert attempts[-1]["delay_ms"] >= 160  # the cap (200 ms with jitter 0.2)
    assert metric(link, "router_nats_reconnection_exhausted_total") == 1
    assert dropper.accepted == 5
