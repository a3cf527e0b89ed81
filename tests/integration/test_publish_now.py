"""The link's core publish without nats-py's coroutines sends and refuses exactly as nats-py.

``OrderedClient.publish_now`` takes ``Client.publish``'s steps itself so that ``Link.publish``
and ``Link.reply`` await no coroutine of the client's. These tests hold it to nats-py 2.16's
own ``publish`` on a real nats-server: the bytes the server reads (through a recording
proxy), every exception, and the forced flush when the buffer passes its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Mapping

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from natsrouter.embedded import NatsServer
from natsrouter.link import Link, Outcome
from natsrouter.link.nats_client import OrderedClient
from natsrouter.link.nats_errors import translate
from tests.conftest import LinkFactory
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

Call = tuple[str, bytes, str, Mapping[str, str] | None]

#: Publishes with and without headers and a reply, and what nats-py writes for each.
CALLS: list[tuple[Call, bytes]] = [
    (("now.plain", b"abc", "", None), b"PUB now.plain  3\r\nabc\r\n"),
    (("now.empty", b"", "", None), b"PUB now.empty  0\r\n\r\n"),
    (("now.reply", b"ask", "_INBOX.r1", None), b"PUB now.reply _INBOX.r1 3\r\nask\r\n"),
    (
        ("now.hdr", b"hi", "", {"A": "1", " B ": " two\r\nlines ", "  ": "left out"}),
        b"HPUB now.hdr  33 35\r\nNATS/1.0\r\nA: 1\r\nB: two  lines\r\n\r\nhi\r\n",
    ),
    (
        ("now.both", b"x", "_INBOX.r2", {"Nats-Msg-Id": "id-\u00e9"}),
        b"HPUB now.both _INBOX.r2 32 33\r\nNATS/1.0\r\nNats-Msg-Id: id-\xc3\xa9\r\n\r\nx\r\n",
    ),
    (("now.nohdr", b"e", "", {}), b"HPUB now.nohdr  12 13\r\nNATS/1.0\r\n\r\ne\r\n"),
]


@pytest.fixture
async def client(proxy: TcpProxy) -> AsyncIterator[OrderedClient]:
    nc = OrderedClient()
    await nc.connect(servers=[proxy.url], allow_reconnect=False, connect_timeout=2)
    try:
        yield nc
    finally:
        await nc.close()


async def publish_now(nc: OrderedClient, call: Call) -> None:
    """``publish_now`` as the link calls it: awaited only when it returns an awaitable."""
    waiting = nc.publish_now(*call)
    if waiting is not None:
        await waiting


async def outcome(publish: Awaitable[None]) -> tuple[type[BaseException], str]:
    """The class and text of what awaiting ``publish`` raised (it must raise)."""
    try:
        await publish
    except Exception as exc:  # compared, not handled
        return type(exc), str(exc)
    raise AssertionError("no exception")


async def both_raise(nc: OrderedClient, call: Call) -> list[tuple[type[BaseException], str]]:
    """What nats-py's publish raises for ``call``, then what publish_now raises."""
    subject, payload, reply, headers = call
    as_dict = None if headers is None else dict(headers)
    return [
        await outcome(Client.publish(nc, subject, payload, reply, as_dict)),
        await outcome(publish_now(nc, call)),
    ]


async def sent_by(proxy: TcpProxy, nc: OrderedClient, send: Awaitable[None]) -> bytes:
    """The bytes the server read for what ``send`` publishes, up to the round trip after it."""
    mark = len(proxy.sent)
    await send
    await nc.flush(timeout=5)  # OrderedClient's PING goes behind the buffered commands
    return bytes(proxy.sent[mark:])


async def test_the_server_reads_the_same_bytes_as_from_nats_py(
    proxy: TcpProxy, client: OrderedClient
) -> None:
    """Each publish (payload, reply, headers, none, empty) goes on the wire as nats-py's."""

    async def with_nats_py() -> None:
        for (subject, payload, reply, headers), _ in CALLS:
            as_dict = None if headers is None else dict(headers)
            await Client.publish(client, subject, payload, reply, as_dict)

    async def with_publish_now() -> None:
        for call, _ in CALLS:
            await publish_now(client, call)

    by_nats = await sent_by(proxy, client, with_nats_py())
    by_now = await sent_by(proxy, client, with_publish_now())
    assert by_now == by_nats == b"".join(wire for _, wire in CALLS) + b"PING\r\n"


async def test_the_stats_count_like_nats_py(client: OrderedClient) -> None:
    """One message and its payload's bytes counted per publish, headers or not."""
    before = dict(client.stats)
    for call, _ in CALLS:
        await publish_now(client, call)
    assert client.stats["out_msgs"] - before["out_msgs"] == len(CALLS)
    assert client.stats["out_bytes"] - before["out_bytes"] == sum(len(c[1]) for c, _ in CALLS)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (("bad subject", b"x", "", None), nats.errors.BadSubjectError),
        (("", b"x", "", None), nats.errors.BadSubjectError),
        (("ok.subject", b"x", "bad\r\nreply", None), nats.errors.BadSubjectError),
        (("ok.subject", b"x", "", {"bad key": "v"}), nats.errors.BadHeaderError),
        (("ok.subject", b"x", "", {"A": "1", "k:": "v"}), nats.errors.BadHeaderError),
    ],
)
async def test_bad_input_raises_what_nats_py_raises(
    client: OrderedClient, call: Call, error: type[Exception]
) -> None:
    """A bad subject, reply or header key: nats-py's exception, same text, nothing buffered."""
    outcomes = await both_raise(client, call)
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] is error
    assert client.pending_data_size == 0


async def test_a_payload_over_the_server_limit_raises_max_payload(client: OrderedClient) -> None:
    """One byte over the server's max_payload: MaxPayloadError from both, nothing buffered."""
    call: Call = ("big.one", b"x" * (client.max_payload + 1), "", None)
    assert (
        await both_raise(client, call)
        == [(nats.errors.MaxPayloadError, "nats: maximum payload exceeded")] * 2
    )
    assert client.pending_data_size == 0


async def test_a_closed_client_raises_connection_closed(client: OrderedClient) -> None:
    """After close: ConnectionClosedError from both."""
    await client.close()
    assert (
        await both_raise(client, ("after.close", b"x", "", None))
        == [(nats.errors.ConnectionClosedError, "nats: connection closed")] * 2
    )


async def test_a_client_draining_publishes_raises_connection_draining(
    proxy: TcpProxy, client: OrderedClient
) -> None:
    """While a drain waits for its last round trip: ConnectionDrainingError from both."""
    proxy.hold_replies()  # the drain's PONG waits: the client stays in DRAINING_PUBS
    drain = asyncio.create_task(client.drain())
    try:
        await wait_for(lambda: client.is_draining_pubs, 5, "the drain to reach its publishes")
        outcomes = await both_raise(client, ("while.draining", b"x", "", None))
    finally:
        proxy.resume()
        await asyncio.wait_for(drain, 5)
    assert outcomes == [(nats.errors.ConnectionDrainingError, "nats: connection draining")] * 2


async def test_a_full_buffer_while_reconnecting_raises_outbound_buffer_limit(
    proxy: TcpProxy,
) -> None:
    """Reconnecting, a payload that does not fit the buffer: OutboundBufferLimitError from
    both, while one that fits is buffered by both."""
    nc = OrderedClient()
    await nc.connect(
        servers=[proxy.url], connect_timeout=2, pending_size=1024, reconnect_time_wait=0.1
    )
    try:
        proxy.blackhole()  # reconnect attempts hang: the client stays reconnecting
        await proxy.cut()
        await wait_for(lambda: nc.is_reconnecting, 5, "the client to start reconnecting")
        too_big = await both_raise(nc, ("while.down", b"x" * 1025, "", None))
        await Client.publish(nc, "while.down", b"y" * 100)
        await publish_now(nc, ("while.down", b"y" * 100, "", None))
        buffered = nc.pending_data_size
    finally:
        # Closing writes the buffered publishes to a socket already reset.
        with contextlib.suppress(ConnectionResetError):
            await nc.close()
    assert (
        too_big
        == [(nats.errors.OutboundBufferLimitError, "nats: outbound buffer limit exceeded")] * 2
    )
    assert buffered == 2 * len(b"PUB while.down  100\r\n" + b"y" * 100 + b"\r\n")


async def test_the_publish_that_passes_the_buffer_limit_returns_the_forced_flush(
    proxy: TcpProxy,
) -> None:
    """Buffered publishes return None until one takes the buffer past its limit; that one
    returns nats-py's forced flush, and once it is awaited the buffer is written."""
    nc = OrderedClient()
    await nc.connect(servers=[proxy.url], allow_reconnect=False, pending_size=1000)
    try:
        command = len(b"PUB full.buffer  200\r\n" + b"z" * 200 + b"\r\n")
        returned = [nc.publish_now("full.buffer", b"z" * 200) for _ in range(1000 // command + 1)]
        assert [r is None for r in returned] == [True] * (1000 // command) + [False]
        waiting = returned[-1]
        assert waiting is not None
        await waiting
        written = nc.pending_data_size
    finally:
        await nc.close()
    assert written == 0


async def test_link_errors_are_translated_as_before(
    make_link: LinkFactory, proxy: TcpProxy
) -> None:
    """A bad header key through Link.publish fails, and through Link.reply is dropped, with
    the error ``translate`` makes of nats-py's BadHeaderError."""
    link: Link = await make_link([proxy.url])
    assert await link.wait_connected(5)
    expected = translate(nats.errors.BadHeaderError("bad key"))
    published = await link.publish("link.bad", b"x", {"bad key": "v"})
    replied = await link.reply("link.bad", b"x", {"bad key": "v"})
    assert (published.outcome, type(published.error), str(published.error)) == (
        Outcome.FAILED,
        type(expected),
        str(expected),
    )
    assert (replied.outcome, type(replied.error), str(replied.error)) == (
        Outcome.DROPPED,
        type(expected),
        str(expected),
    )


async def test_link_publishes_past_the_buffer_limit_all_arrive(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """4 MiB of core publishes without a pause (twice nats-py's 2 MiB buffer, so forced
    flushes are awaited on the way): every one sent, every one received, in order."""
    link: Link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    nc = await nats.connect(nats_server.url)
    got: list[bytes] = []

    async def count(msg: Msg) -> None:
        got.append(msg.data)

    try:
        await nc.subscribe("link.full", cb=count)
        await nc.flush()
        payloads = [b"%06d" % i + b"p" * 1018 for i in range(4096)]
        outcomes = {(await link.publish("link.full", payload)).outcome for payload in payloads}
        await wait_for(lambda: len(got) == len(payloads), 10, "every message")
    finally:
        await nc.close()
    assert (outcomes, got == payloads) == ({Outcome.SENT}, True)
