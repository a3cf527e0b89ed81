"""Fault injection suite: each operation x fault gives its exact outcome, counter and log code."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import (
    ConnectionClosedError,
    LinkError,
    OperationTimeoutError,
    Reason,
    ServerError,
)
from natsrouter.link import (
    ConnectionState,
    ConsumerSpec,
    Fault,
    FaultTarget,
    InboundMessage,
    JsMessage,
    Link,
    Outcome,
)
from tests.conftest import ADMIN_TOKEN, LinkFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import codes, metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration
T = FaultTarget


@pytest.fixture
async def link(nats_server: NatsServer, make_link: LinkFactory) -> AsyncIterator[Link]:
    await create_stream(nats_server.url, "FAULTS", ["js.>"])
    link = await make_link(
        [nats_server.url], nats_fault_injection_enabled=True, nats_fault_injection_token=ADMIN_TOKEN
    )
    assert await link.wait_connected(5)
    yield link


class Inbox:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def __call__(self, msg: InboundMessage) -> None:
        self.data.append(msg.data)


def fault_lines(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["operation"], e["fault"]) for e in logs if e.get("error_code") == "NATS_FAULT_INJECTED"
    ]


# -- publish -------------------------------------------------------------------------------


async def test_publish_error_fails_with_the_reason(link: Link, logs: list) -> None:
    """publish x error: outcome failed, reason fault_injected, counted and logged."""
    link.inject(T.PUBLISH, Fault.error())
    result = await link.publish("core.x", b"1")
    assert (result.outcome, result.reason) == (Outcome.FAILED, Reason.FAULT_INJECTED)
    assert isinstance(result.error, LinkError)
    assert result.error.injected
    assert metric(link, "router_nats_publish_failures_total", reason="fault_injected") == 1
    assert metric(link, "router_nats_publish_total") == 0
    assert codes(logs) == ["NATS_FAULT_INJECTED", "NATS_PUBLISH_ERROR"]
    assert fault_lines(logs) == [("publish", "error(fault_injected)")]


async def test_publish_error_with_a_named_reason(link: Link) -> None:
    """error(server_error) fails with the ServerError class and that label."""
    link.inject(T.PUBLISH, Fault.error(Reason.SERVER_ERROR))
    result = await link.publish("core.x", b"1")
    assert result.outcome is Outcome.FAILED
    assert isinstance(result.error, ServerError)
    assert metric(link, "router_nats_publish_failures_total", reason="server_error") == 1


async def test_publish_timeout_is_queued_then_sent_when_cleared(link: Link, logs: list) -> None:
    """publish x timeout: retriable, so queued; after clearing, the replay sends it."""
    inbox = Inbox()
    await link.subscribe("core.t", inbox)
    link.inject(T.PUBLISH, Fault.timeout())
    result = await link.publish("core.t", b"late")
    assert (result.outcome, result.reason) == (Outcome.QUEUED, Reason.TIMEOUT)
    assert metric(link, "router_nats_publish_failures_total", reason="timeout") == 1
    assert "NATS_PUBLISH_QUEUED" in codes(logs)
    link.clear_faults()
    await wait_for(lambda: inbox.data == [b"late"], 5, "replayed after clearing")
    assert metric(link, "router_nats_pending_operations_retry_success_total") == 1


async def test_publish_close_connection_reconnects_and_delivers(link: Link, logs: list) -> None:
    """publish x close_connection: the link loses the connection, queues, reconnects, sends."""
    inbox = Inbox()
    await link.subscribe("core.c", inbox)
    link.inject(T.PUBLISH, Fault.close_connection())
    result = await link.publish("core.c", b"kept")
    assert (result.outcome, result.reason) == (Outcome.QUEUED, Reason.CONNECTION_CLOSED)
    assert metric(link, "router_nats_connection_lost_total") == 1
    link.clear_faults()
    await wait_for(lambda: inbox.data == [b"kept"], 5)
    assert metric(link, "router_nats_connection_restored_total") == 1
    assert "NATS_CONNECTION_LOST" in codes(logs)


async def test_publish_delay_waits_then_sends(link: Link) -> None:
    """publish x delay(100): sent, after at least 100 ms."""
    link.inject(T.PUBLISH, Fault.delay(100))
    started = time.monotonic()
    result = await link.publish("core.d", b"slow")
    assert time.monotonic() - started >= 0.1
    assert result.outcome is Outcome.SENT
    assert metric(link, "router_nats_publish_total") == 1


# -- publish_with_ack ----------------------------------------------------------------------


async def test_publish_with_ack_error_fails(link: Link, logs: list) -> None:
    """publish_with_ack x error: failed, counted, NATS_PUBLISH_WITH_ACK_ERROR."""
    link.inject(T.PUBLISH_WITH_ACK, Fault.error())
    result = await link.publish_with_ack("js.a", b"1")
    assert (result.outcome, result.pub_ack) == (Outcome.FAILED, None)
    assert metric(link, "router_nats_publish_with_ack_failures_total", reason="fault_injected") == 1
    assert codes(logs) == ["NATS_FAULT_INJECTED", "NATS_PUBLISH_WITH_ACK_ERROR"]


async def test_publish_with_ack_timeout_queues_and_lands_once(
    link: Link, nats_server: NatsServer, logs: list
) -> None:
    """publish_with_ack x timeout: queued; after clearing it is stored exactly once."""
    link.inject(T.PUBLISH_WITH_ACK, Fault.timeout())
    result = await link.publish_with_ack("js.t", b"t1")
    assert result.outcome is Outcome.QUEUED
    assert "NATS_PUBLISH_WITH_ACK_QUEUED" in codes(logs)
    link.clear_faults()
    await wait_for(lambda: link.pending.count == 0, 5)
    stored = await stored_messages(nats_server.url, "FAULTS")
    assert [m.data for m in stored] == [b"t1"]


async def test_publish_with_ack_close_connection_is_replayed(
    link: Link, nats_server: NatsServer
) -> None:
    """publish_with_ack x close_connection: queued, reconnect, stored."""
    link.inject(T.PUBLISH_WITH_ACK, Fault.close_connection())
    assert (await link.publish_with_ack("js.c", b"c1")).outcome is Outcome.QUEUED
    link.clear_faults()
    await wait_for(lambda: link.pending.count == 0 and link.ready, 5)
    assert [m.data for m in await stored_messages(nats_server.url, "FAULTS")] == [b"c1"]


async def test_publish_with_ack_delay_returns_the_puback(link: Link) -> None:
    """publish_with_ack x delay: sent with the server's PubAck."""
    link.inject(T.PUBLISH_WITH_ACK, Fault.delay(50))
    result = await link.publish_with_ack("js.d", b"d1")
    assert result.outcome is Outcome.SENT
    assert result.pub_ack is not None
    assert (result.pub_ack.stream, result.pub_ack.seq) == ("FAULTS", 1)


# -- request -------------------------------------------------------------------------------


async def _echo(link: Link) -> None:
    async def respond(msg: InboundMessage) -> None:
        assert msg.reply
        await link.publish(msg.reply, b"re:" + msg.data)

    await link.subscribe("svc.echo", respond)


async def test_request_error_raises_typed(link: Link) -> None:
    """request x error: raises the typed error, counted with its reason."""
    await _echo(link)
    link.inject(T.REQUEST, Fault.error())
    with pytest.raises(LinkError) as info:
        await link.request("svc.echo", b"q")
    assert info.value.reason is Reason.FAULT_INJECTED
    assert metric(link, "router_nats_request_failures_total", reason="fault_injected") == 1


async def test_request_timeout_raises_timeout(link: Link) -> None:
    """request x timeout: OperationTimeoutError."""
    link.inject(T.REQUEST, Fault.timeout())
    with pytest.raises(OperationTimeoutError):
        await link.request("svc.echo", b"q")
    assert metric(link, "router_nats_request_failures_total", reason="timeout") == 1


async def test_request_close_connection_raises_and_reconnects(link: Link) -> None:
    """request x close_connection: ConnectionClosedError, then the link is back."""
    await _echo(link)
    link.inject(T.REQUEST, Fault.close_connection())
    with pytest.raises(ConnectionClosedError):
        await link.request("svc.echo", b"q")
    link.clear_faults()
    await wait_for(lambda: link.ready, 5)
    reply = await link.request("svc.echo", b"q")
    assert reply.data == b"re:q"


async def test_request_delay_still_answers(link: Link) -> None:
    """request x delay: the reply arrives, counted as a success."""
    await _echo(link)
    link.inject(T.REQUEST, Fault.delay(50))
    assert (await link.request("svc.echo", b"z")).data == b"re:z"
    assert metric(link, "router_nats_request_total") == 1


# -- ack, nak, subscribe, connect ----------------------------------------------------------


async def _one_js_message(link: Link) -> JsMessage:
    got: asyncio.Queue[JsMessage] = asyncio.Queue()

    async def handler(msg: JsMessage) -> None:
        await got.put(msg)

    await link.consume(ConsumerSpec("FAULTS", "faults-c", "js.q", ack_wait_ms=30_000), handler)
    assert (await link.publish_with_ack("js.q", b"work")).outcome is Outcome.SENT
    return await asyncio.wait_for(got.get(), 5)


async def test_ack_error_fails_and_is_logged(link: Link, logs: list) -> None:
    """ack x error: failed, ack_failures counted, NATS_ACK_ERROR."""
    msg = await _one_js_message(link)
    link.inject(T.ACK, Fault.error())
    result = await link.ack(msg)
    assert (result.outcome, result.reason) == (Outcome.FAILED, Reason.FAULT_INJECTED)
    assert metric(link, "router_nats_ack_failures_total", reason="fault_injected") == 1
    assert "NATS_ACK_ERROR" in codes(logs)
    link.clear_faults()
    assert (await link.ack(msg)).outcome is Outcome.SENT
    assert metric(link, "router_nats_ack_total") == 1


async def test_nak_error_fails_and_is_logged(link: Link, logs: list) -> None:
    """nak x error: failed, nak_failures counted, NATS_NAK_ERROR."""
    msg = await _one_js_message(link)
    link.inject(T.NAK, Fault.timeout())
    result = await link.nak(msg, delay_ms=10)
    assert (result.outcome, result.reason) == (Outcome.FAILED, Reason.TIMEOUT)
    assert metric(link, "router_nats_nak_failures_total", reason="timeout") == 1
    assert "NATS_NAK_ERROR" in codes(logs)


async def test_subscribe_error_raises_and_registers_nothing(link: Link, logs: list) -> None:
    """subscribe x error: raises, counted, NATS_SUBSCRIBE_ERROR at ERROR, not registered."""
    link.inject(T.SUBSCRIBE, Fault.error())
    with pytest.raises(LinkError):
        await link.subscribe("core.s", Inbox())
    assert metric(link, "router_nats_subscribe_failures_total", reason="fault_injected") == 1
    sub_errors = [e for e in logs if e.get("error_code") == "NATS_SUBSCRIBE_ERROR"]
    assert sub_errors[0]["log_level"] == "error"
    assert sub_errors[0]["subject"] == "core.s"
    assert link.status()["subscriptions"] == 0


async def test_connect_fault_holds_reconnection_until_cleared(link: Link) -> None:
    """connect x error: reconnect attempts fail with fault_injected until cleared."""
    link.inject(T.CONNECT, Fault.error())
    link.inject(T.PUBLISH, Fault.close_connection())
    await link.publish("core.x", b"drop-conn")
    link.clear_faults(T.PUBLISH)
    await wait_for(
        lambda: metric(link, "router_nats_reconnect_failures_total", reason="fault_injected") >= 2,
        5,
    )
    assert link.state is not ConnectionState.CONNECTED
    link.clear_faults(T.CONNECT)
    await wait_for(lambda: link.ready, 5)


async def test_intermittent_fails_exactly_the_drawn_share(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """intermittent(0.3) with a seeded source fails exactly the draws below 0.3."""
    link = await make_link(
        [nats_server.url],
        nats_fault_injection_enabled=True,
        nats_fault_injection_token=ADMIN_TOKEN,
        rng=random.Random(42),
    )
    assert await link.wait_connected(5)
    link.inject(T.PUBLISH, Fault.intermittent(0.3))
    # The link used no randomness yet (no reconnect), so the same seed predicts every draw.
    draws = random.Random(42)
    expected = sum(1 for _ in range(200) if draws.random() < 0.3)
    outcomes = [(await link.publish("core.i", b"x")).outcome for _ in range(200)]
    assert outcomes.count(Outcome.FAILED) == expected
    assert outcomes.count(Outcome.SENT) == 200 - expected
    assert metric(link, "router_nats_publish_failures_total", reason="fault_injected") == expected


async def test_clearing_all_faults_returns_full_health(link: Link) -> None:
    """After faults on every target are cleared, every operation succeeds again."""
    for target in T:
        if target is not T.CONNECT:
            link.inject(target, Fault.error())
    assert (await link.publish("core.h", b"x")).outcome is Outcome.FAILED
    link.clear_faults()
    assert link.status()["faults"] == {}
    await _echo(link)
    inbox = Inbox()
    await link.subscribe("core.h", inbox)
    assert (await link.publish("core.h", b"ok")).outcome is Outcome.SENT
    assert (await link.publish_with_ack("js.h", b"ok")).outcome is Outcome.SENT
    assert (await link.request("svc.echo", b"ok")).data == b"re:ok"
    msg = await _one_js_message(link)
    assert (await link.ack(msg)).outcome is Outcome.SENT
    await wait_for(lambda: inbox.data == [b"ok"], 5)
    assert link.ready


async def test_injection_refused_when_disabled(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Without nats_fault_injection_enabled there is no seam to set."""
    link = await make_link([nats_server.url])
    assert link.faults is None
    with pytest.raises(RuntimeError, match="disabled"):
        link.inject(T.PUBLISH, Fault.error())
