"""The order of protocol commands on the wire: a round trip covers what was sent before it.

nats-py 2.16 writes a flush's PING straight to the socket, ahead of commands still waiting in
its buffer (publishes, SUB, UNSUB). The PONG then proves nothing about them: a subscription
"bound" may not be on the server yet, and a drain's round trip can end before the server has
the UNSUB, so requests it delivers meanwhile are dropped unanswered. The transport keeps the
order; these tests read the bytes the server received through a recording proxy.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from natsrouter.errors import ConnectionClosedError, OperationTimeoutError
from natsrouter.link.nats_transport import ConnectOptions, NatsConnection, NatsTransport
from natsrouter.link.transport import InboundMessage
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


async def connect(proxy: TcpProxy) -> NatsConnection:
    transport = NatsTransport(ConnectOptions(connect_timeout_s=2))
    return await transport.connect(proxy.url, lambda _conn, _err: None)


def commands_after_connect(sent: bytes) -> list[str]:
    """The verbs the client sent after its CONNECT and first PING (payload lines skipped)."""
    verbs = []
    lines = bytes(sent).split(b"\r\n")
    skip = False
    for line in lines:
        if skip:
            skip = False
            continue
        verb = line.split(b" ", 1)[0].decode()
        verbs.append(verb)
        skip = verb in ("PUB", "HPUB")
    return verbs[verbs.index("CONNECT") + 2 :]


async def test_a_ping_goes_after_the_publishes_before_it(proxy: TcpProxy) -> None:
    """Three publishes, then a ping: the server reads PUB, PUB, PUB, then PING."""
    conn = await connect(proxy)
    try:
        for i in range(3):
            await conn.publish("order.test", f"m{i}".encode(), None)
        await conn.ping(2)
    finally:
        await conn.close()
    assert commands_after_connect(proxy.sent)[:4] == ["PUB", "PUB", "PUB", "PING"]


async def test_a_drain_sends_its_unsub_before_its_round_trip(proxy: TcpProxy) -> None:
    """Subscribe then drain: SUB, PING (bound), then UNSUB before the drain's PING."""
    conn = await connect(proxy)

    async def handler(_msg: InboundMessage) -> None:
        return None

    try:
        sub = await conn.subscribe("order.test", "group", handler)
        await asyncio.wait_for(sub.drain(), 2)
    finally:
        await conn.close()
    assert commands_after_connect(proxy.sent)[:4] == ["SUB", "PING", "UNSUB", "PING"]


async def test_a_pong_after_its_ping_timed_out_leaves_the_connection_reading(
    proxy: TcpProxy,
) -> None:
    """A ping times out and its PONG comes late: the next ping and a message still arrive."""
    conn = await connect(proxy)
    got: list[bytes] = []

    async def handler(msg: InboundMessage) -> None:
        got.append(msg.data)

    try:
        await conn.subscribe("late.pong", None, handler)
        proxy.hold_replies()
        with pytest.raises(OperationTimeoutError):
            await conn.ping(0.2)
        proxy.resume()
        await conn.ping(2)
        await conn.publish("late.pong", b"after", None)
        await wait_for(lambda: got == [b"after"], 5, "the message sent after the late PONG")
    finally:
        await conn.close()


async def test_a_ping_fails_as_lost_once_the_read_loop_has_ended(proxy: TcpProxy) -> None:
    """Read loop gone (any failure nats-py did not expect): the ping says lost, never passes."""
    conn = await connect(proxy)
    try:
        await conn.ping(2)
        # The one way to end it from outside: its known causes are fixed above, and an
        # unknown one must not leave a connection that pings well but reads nothing.
        reading = conn._nc._reading_task  # the failure being simulated
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        with pytest.raises(ConnectionClosedError) as raised:
            await conn.ping(2)
    finally:
        await conn.close()
    assert raised.value.connection_lost is True
