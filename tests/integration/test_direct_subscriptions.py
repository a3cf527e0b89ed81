"""Direct subscriptions: messages handed from nats-py's parser to a plain-function handler.

No ``Msg``, queue, task or coroutine per message (``OrderedClient._process_msg``); these
tests pin that the handler sees what an ordinary subscription's sees, that its failures are
reported and delivery goes on, that a drain answers everything the server sent before it had
the UNSUB, and that an unsubscribed sid, an unreadable message or a reconnect leave the
connection reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.link import Outcome, Result
from natsrouter.link.faults import Fault, FaultTarget
from natsrouter.link.nats_transport import ConnectOptions, NatsConnection, NatsTransport
from natsrouter.link.state import ConnectionState
from natsrouter.link.transport import InboundMessage
from tests.conftest import LinkFactory
from tests.helpers.observe import metric
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import ordered_flush, wait_for
from tests.integration.test_unreadable_messages import hpub, send_raw

pytestmark = pytest.mark.integration


class Recorder:
    """A direct handler (a plain function) and the failures reported for it."""

    def __init__(self, raise_on: bytes | None = None) -> None:
        self.got: list[InboundMessage] = []
        self.failures: list[Exception] = []
        self._raise_on = raise_on

    def __call__(self, msg: InboundMessage) -> None:
        self.got.append(msg)
        if msg.data == self._raise_on:
            raise ValueError("handler bug")

    def failed(self, exc: Exception) -> None:
        self.failures.append(exc)


async def connect(url: str, unreadable: list[str] | None = None) -> NatsConnection:
    transport = NatsTransport(ConnectOptions(connect_timeout_s=2))
    if unreadable is not None:
        transport.on_unreadable = unreadable.append
    return await transport.connect(url, lambda _conn, _err: None)


async def publish_all(url: str, subject: str, payloads: list[bytes]) -> None:
    """Publish ``payloads`` from a client of their own; return once the server has them."""
    nc = await nats.connect(url)
    try:
        for data in payloads:
            await nc.publish(subject, data)
        await ordered_flush(nc)
    finally:
        await nc.close()


async def test_a_direct_handler_gets_what_an_ordinary_handler_gets(
    nats_server: NatsServer,
) -> None:
    """Headers and a reply, neither, and a 503 status line: the same InboundMessages as an
    ordinary subscription's handler, and not one failure."""
    conn = await connect(nats_server.url)
    direct = Recorder()
    ordinary: list[InboundMessage] = []

    async def handler(msg: InboundMessage) -> None:
        ordinary.append(msg)

    try:
        await conn.subscribe("direct.same", None, direct, direct.failed, direct=True)
        await conn.subscribe("direct.same", None, handler)
        nc = await nats.connect(nats_server.url)
        try:
            await nc.publish("direct.same", b"one", reply="answer.here", headers={"K": "v"})
            await nc.publish("direct.same", b"two")
            await ordered_flush(nc)
        finally:
            await nc.close()
        await send_raw(nats_server.port, hpub(b"direct.same", b"NATS/1.0 503\r\n\r\n"))
        await wait_for(lambda: len(direct.got) == len(ordinary) == 3, 5, "three messages each")
    finally:
        await conn.close()
    assert direct.got == ordinary
    assert direct.got == [
        InboundMessage("direct.same", b"one", {"K": "v"}, "answer.here"),
        InboundMessage("direct.same", b"two", None, None),
        InboundMessage("direct.same", b"", {"Status": "503"}, None),
    ]
    assert direct.failures == []


async def test_a_direct_handler_is_called_by_the_read_loop_itself(
    nats_server: NatsServer,
) -> None:
    """Three messages, with and without headers: each handled in the client's read loop
    task (no queue, no task of the subscription's), none waiting in nats-py's queue."""
    conn = await connect(nats_server.url)
    tasks: list[asyncio.Task[object] | None] = []
    try:
        native = await conn.subscribe(
            "direct.loop",
            None,
            lambda _msg: tasks.append(asyncio.current_task()),
            lambda _exc: None,
            direct=True,
        )
        nc = await nats.connect(nats_server.url)
        try:
            await nc.publish("direct.loop", b"a")
            await nc.publish("direct.loop", b"b", headers={"K": "v"})
            await nc.publish("direct.loop", b"c", reply="r")
            await ordered_flush(nc)
        finally:
            await nc.close()
        await wait_for(lambda: len(tasks) == 3, 5, "three messages")
        reading = conn._nc._reading_task
        queued = native._sub._received  # counted by nats-py's own _process_msg only
    finally:
        await conn.close()
    assert tasks == [reading] * 3
    assert queued == 0


async def test_a_direct_handler_that_raises_is_reported_and_the_next_message_delivered(
    nats_server: NatsServer,
) -> None:
    """The handler raises on two messages: each failure goes to on_failure, and the
    messages around them are delivered in order."""
    conn = await connect(nats_server.url)
    recorder = Recorder(raise_on=b"boom")
    sent = [b"before", b"boom", b"boom", b"after"]
    try:
        await conn.subscribe("direct.raises", None, recorder, recorder.failed, direct=True)
        await publish_all(nats_server.url, "direct.raises", sent)
        await wait_for(lambda: len(recorder.got) == 4, 5, "every message")
        await conn.ping(2)  # still reading
    finally:
        await conn.close()
    assert [m.data for m in recorder.got] == sent
    assert [str(e) for e in recorder.failures] == ["handler bug", "handler bug"]


async def test_a_drain_delivers_what_the_server_sent_before_it_had_the_unsub(
    nats_server: NatsServer, proxy: TcpProxy
) -> None:
    """Messages held on their way to the client while the drain sends its UNSUB: all
    delivered (the sid stays until the round trip behind the UNSUB), none afterwards."""
    conn = await connect(proxy.url)
    recorder = Recorder()
    sent = [f"m{i}".encode() for i in range(50)]
    try:
        sub = await conn.subscribe("direct.drain", "group", recorder, recorder.failed, direct=True)
        proxy.hold_replies()
        await publish_all(nats_server.url, "direct.drain", sent)
        draining = asyncio.create_task(sub.drain())
        await wait_for(lambda: b"UNSUB" in proxy.sent, 5, "the UNSUB sent")
        assert recorder.got == [] and not draining.done()
        proxy.resume()
        await asyncio.wait_for(draining, 5)
        assert [m.data for m in recorder.got] == sent
        await publish_all(nats_server.url, "direct.drain", [b"late"])
        await conn.ping(2)
    finally:
        await conn.close()
    assert [m.data for m in recorder.got] == sent


async def test_a_message_for_a_sid_unsubscribed_meanwhile_is_dropped_and_reading_goes_on(
    nats_server: NatsServer, proxy: TcpProxy
) -> None:
    """Messages held while the subscription is unsubscribed: none delivered; a new direct
    subscription on the same connection (a new sid) gets the next message."""
    conn = await connect(proxy.url)
    old, new = Recorder(), Recorder()
    try:
        sub = await conn.subscribe("direct.gone", None, old, old.failed, direct=True)
        proxy.hold_replies()
        await publish_all(nats_server.url, "direct.gone", [b"a", b"b", b"c"])
        await sub.unsubscribe()
        proxy.resume()
        await conn.ping(2)  # the held messages were read before this PONG
        await conn.subscribe("direct.gone", None, new, new.failed, direct=True)
        await publish_all(nats_server.url, "direct.gone", [b"next"])
        await wait_for(lambda: len(new.got) == 1, 5, "the message for the new sid")
    finally:
        await conn.close()
    assert (old.got, [m.data for m in new.got]) == ([], [b"next"])


async def test_an_unreadable_subject_is_dropped_and_the_next_message_delivered(
    nats_server: NatsServer,
) -> None:
    """A subject holding the byte 0xff on a wildcard direct subscription: reported
    unreadable, never handed to the handler, and the message after it is delivered."""
    unreadable: list[str] = []
    conn = await connect(nats_server.url, unreadable)
    recorder = Recorder()
    try:
        await conn.subscribe("direct.>", None, recorder, recorder.failed, direct=True)
        await send_raw(nats_server.port, b"PUB direct.\xff 1\r\nx\r\nPUB direct.ok 1\r\ny\r\n")
        await wait_for(lambda: len(recorder.got) == 1, 5, "the readable message")
    finally:
        await conn.close()
    assert recorder.got == [InboundMessage("direct.ok", b"y", None, None)]
    assert (unreadable, recorder.failures) == (["direct.\\xff"], [])


async def test_a_burst_past_the_client_buffer_is_delivered_whole(
    nats_server: NatsServer, proxy: TcpProxy
) -> None:
    """3,000 messages held and released at once: all delivered in order, none dropped as a
    slow consumer (nothing is buffered per subscription)."""
    slow: list[str] = []
    transport = NatsTransport(ConnectOptions(connect_timeout_s=2))
    transport.on_slow_consumer = slow.append
    conn = await transport.connect(proxy.url, lambda _conn, _err: None)
    recorder = Recorder()
    sent = [str(i).encode() for i in range(3000)]
    try:
        await conn.subscribe("direct.burst", None, recorder, recorder.failed, direct=True)
        proxy.hold_replies()
        await publish_all(nats_server.url, "direct.burst", sent)
        proxy.resume()
        await wait_for(lambda: len(recorder.got) == 3000, 10, "every message")
    finally:
        await conn.close()
    assert [m.data for m in recorder.got] == sent
    assert slow == []


async def test_a_direct_subscription_is_bound_again_after_a_reconnect(
    proxy: TcpProxy, make_link: LinkFactory
) -> None:
    """The connection is reset: the link subscribes again on the new connection, and a
    message sent after it is delivered exactly once."""
    link = await make_link([proxy.url])
    assert await link.wait_connected(5)
    got: list[bytes] = []
    await link.subscribe_direct("direct.again", lambda msg: got.append(msg.data))
    assert (await link.publish("direct.again", b"before")).outcome is Outcome.SENT
    await wait_for(lambda: got == [b"before"], 5, "the message before the reset")
    await proxy.cut()
    await wait_for(lambda: metric(link, "router_nats_connection_restored_total") == 1, 5)
    assert (await link.publish("direct.again", b"after")).outcome is Outcome.SENT
    assert (await link.publish("direct.again", b"end")).outcome is Outcome.SENT
    await wait_for(lambda: len(got) == 3, 5, "the messages after the reset")
    assert got == [b"before", b"after", b"end"]


async def test_requests_delivered_while_later_bindings_wait_are_answered(
    proxy: TcpProxy, nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """After a reconnect the responder's subscription is bound first and another one's bind
    is held 1.5 s: requests delivered meanwhile (the link not yet connected) are answered on
    the new connection, none is left to time out."""
    link = await make_link([proxy.url], nats_fault_injection_enabled=True)
    assert await link.wait_connected(5)
    replies: list[Outcome] = []
    tasks: set[asyncio.Task[None]] = set()

    async def settle(result: Coroutine[Any, Any, Result]) -> None:
        replies.append((await result).outcome)

    def answer(msg: InboundMessage) -> None:
        assert msg.reply is not None
        result = link.reply_now(msg.reply, b"pong")
        if isinstance(result, Result):
            replies.append(result.outcome)
        else:  # the fault seam hands back an awaitable
            task = asyncio.get_running_loop().create_task(settle(result))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    await link.subscribe_direct("svc.echo", answer)
    await link.subscribe("svc.later", lambda msg: asyncio.sleep(0))
    link.inject(FaultTarget.SUBSCRIBE, Fault.delay(1500).on_subject("svc.later"))
    await proxy.cut()
    nc = await nats.connect(nats_server.url)
    answered_while_binding = timeouts = 0
    try:
        for _ in range(100):  # bounded: 100 pauses of 50 ms, about 5 s at most
            if link.state is ConnectionState.CONNECTED:
                break
            await asyncio.sleep(0.05)
            try:
                reply = await nc.request("svc.echo", b"ping", timeout=0.5)
            except nats.errors.NoRespondersError:
                continue  # not bound again yet
            except nats.errors.TimeoutError:
                timeouts += 1
                continue
            assert reply.data == b"pong"
            answered_while_binding += link.state is not ConnectionState.CONNECTED
    finally:
        await nc.close()
    assert link.state is ConnectionState.CONNECTED
    assert timeouts == 0
    assert answered_while_binding >= 3
    assert set(replies) == {Outcome.SENT}
