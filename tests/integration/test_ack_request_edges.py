"""The edges of the link's JetStream publish request (``OrderedClient.ack_request``).

Each answer is matched to its publish by a counter token on the client's one reply
subscription. Against a real nats-server: a late answer, an answer twice, an answer for a
token never issued, many publishes at once, the connection lost while a publish waits, and
every payload byte and header passed through. Where a core subscriber stands in for
JetStream, it answers with a PubAck of its own making.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

import nats
import nats.errors
import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from natsrouter.embedded import NatsServer
from natsrouter.errors import LinkError, OperationTimeoutError, ServerUnavailableError
from natsrouter.link.nats_errors import translate
from natsrouter.link.nats_transport import ConnectOptions, NatsConnection, NatsTransport
from natsrouter.link.outcome import PubAck
from tests.helpers.waiting import ordered_flush, wait_for

pytestmark = pytest.mark.integration


def _ignore_loss(*_: Any) -> None:
    return None


async def _connect(url: str) -> NatsConnection:
    return await NatsTransport(ConnectOptions(connect_timeout_s=2)).connect(url, _ignore_loss)


def _ack(seq: int) -> bytes:
    return json.dumps({"stream": "FAKE", "seq": seq}).encode()


async def _responder(url: str, subject: str, cb: Any) -> Any:
    """A core subscriber on ``subject`` calling ``cb(nc, msg)``, bound before it returns."""
    nc = await nats.connect(url)

    async def on_msg(msg: Any) -> None:
        await cb(nc, msg)

    await nc.subscribe(subject, cb=on_msg)
    # nats-py's flush PING would overtake the SUB still in its buffer.
    await ordered_flush(nc)
    return nc


async def test_a_late_answer_is_not_taken_by_the_next_publish(nats_server: NatsServer) -> None:
    """The first publish times out; its answer, sent just before the second's, is dropped and
    the second gets its own PubAck."""
    held: list[str] = []

    async def answer(nc: Any, msg: Any) -> None:
        if not held:
            held.append(msg.reply)  # no answer yet
            return
        await nc.publish(held[0], _ack(111))  # the first, late
        await nc.publish(msg.reply, _ack(2))

    responder = await _responder(nats_server.url, "fake.late", answer)
    conn = await _connect(nats_server.url)
    try:
        with pytest.raises(OperationTimeoutError):
            await conn.publish_with_ack("fake.late", b"1", None, 0.2)
        second = await conn.publish_with_ack("fake.late", b"2", None, 2)
        left = dict(conn._nc._resp_map)
    finally:
        await conn.close()
        await responder.close()
    assert (second, left) == (PubAck("FAKE", 2), {})


async def test_an_answer_sent_twice_is_taken_once(nats_server: NatsServer) -> None:
    """Each request answered twice (the second with another seq): each publish gets the first
    answer to its own request."""

    async def answer(nc: Any, msg: Any) -> None:
        seq = int(msg.data)
        await nc.publish(msg.reply, _ack(seq))
        await nc.publish(msg.reply, _ack(seq + 100))

    responder = await _responder(nats_server.url, "fake.twice", answer)
    conn = await _connect(nats_server.url)
    try:
        acks = [await conn.publish_with_ack("fake.twice", b"%d" % i, None, 2) for i in (1, 2, 3)]
        left = dict(conn._nc._resp_map)
    finally:
        await conn.close()
        await responder.close()
    assert (acks, left) == ([PubAck("FAKE", 1), PubAck("FAKE", 2), PubAck("FAKE", 3)], {})


async def test_an_answer_for_a_token_never_issued_is_ignored(nats_server: NatsServer) -> None:
    """Answers to tokens the client never issued, sent before the real one: the publish gets
    its own answer and the connection keeps reading."""

    async def answer(nc: Any, msg: Any) -> None:
        prefix = msg.reply[: msg.reply.rindex(".") + 1]
        for token in ("L999", "L", "x" * 26, "L-1"):
            await nc.publish(prefix + token, _ack(666))
        await nc.publish(msg.reply, _ack(7))

    responder = await _responder(nats_server.url, "fake.stray", answer)
    conn = await _connect(nats_server.url)
    try:
        ack = await conn.publish_with_ack("fake.stray", b"x", None, 2)
        reading = conn._nc.reading
    finally:
        await conn.close()
        await responder.close()
    assert (ack, reading) == (PubAck("FAKE", 7), True)


async def test_many_publishes_at_once_each_get_their_own_pub_ack(nats_server: NatsServer) -> None:
    """500 publishes in flight on one connection: 500 distinct sequences, 1 to 500, each
    with the Nats-Msg-Id it was sent with stored, and nothing left waiting."""
    conn = await _connect(nats_server.url)
    raw = await nats.connect(nats_server.url)
    js = raw.jetstream()
    await js.add_stream(name="MANY", subjects=["many.>"])
    try:
        acks = await asyncio.gather(
            *(
                conn.publish_with_ack("many.x", b"%d" % i, {"Nats-Msg-Id": f"m-{i}"}, 5)
                for i in range(500)
            )
        )
        stored = {}
        for ack in acks:
            msg = await js.get_msg("MANY", ack.seq)
            stored[msg.data] = msg.headers["Nats-Msg-Id"] if msg.headers else None
        left = dict(conn._nc._resp_map)
    finally:
        await raw.close()
        await conn.close()
    assert sorted(a.seq for a in acks) == list(range(1, 501))
    assert stored == {b"%d" % i: f"m-{i}" for i in range(500)}
    assert left == {}


async def test_every_payload_byte_and_header_is_stored_as_sent(nats_server: NatsServer) -> None:
    """A payload of all 256 byte values (CR LF among them) and two headers: stored as sent."""
    conn = await _connect(nats_server.url)
    raw = await nats.connect(nats_server.url)
    js = raw.jetstream()
    await js.add_stream(name="BYTES", subjects=["bytes.>"])
    payload = bytes(range(256)) * 3
    headers = {"Nats-Msg-Id": "b-1", "X-Trace": "t 1"}
    try:
        ack = await conn.publish_with_ack("bytes.x", payload, headers, 2)
        msg = await js.get_msg("BYTES", ack.seq)
    finally:
        await raw.close()
        await conn.close()
    assert (msg.data, msg.headers) == (payload, headers)


async def test_a_publish_waiting_when_the_server_goes_away_ends_in_its_timeout(
    nats_server: NatsServer,
) -> None:
    """The server stops while a publish waits for its answer: the publish ends with a link
    error within its timeout (it does not hang) and nothing is left waiting."""
    responder = await _responder(nats_server.url, "fake.gone", _never)
    conn = await _connect(nats_server.url)
    try:
        waiting = asyncio.ensure_future(conn.publish_with_ack("fake.gone", b"x", None, 1.0))
        await wait_for(lambda: len(conn._nc._resp_map) == 1, 5, "the request under way")
        await asyncio.to_thread(nats_server.stop)
        with pytest.raises(LinkError):
            await asyncio.wait_for(waiting, 5)
        left = dict(conn._nc._resp_map)
    finally:
        await conn.close()
        await responder.close()
    assert left == {}


async def _never(_nc: Any, _msg: Any) -> None:
    return None


async def test_a_timeout_that_comes_with_a_cancel_is_not_reported_as_unretrieved(
    nats_server: NatsServer,
) -> None:
    """The timeout and a cancel of the waiting publish in the same loop turn: the publish
    ends cancelled and asyncio reports no "exception was never retrieved"."""
    responder = await _responder(nats_server.url, "fake.race", _never)
    conn = await _connect(nats_server.url)
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    try:
        waiting = asyncio.ensure_future(conn.publish_with_ack("fake.race", b"x", None, 30))
        await wait_for(lambda: len(conn._nc._resp_map) == 1, 5, "the request under way")
        future = next(iter(conn._nc._resp_map.values()))
        future.set_exception(nats.errors.TimeoutError())  # what its timer does
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        del future, waiting
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
        await conn.close()
        await responder.close()
    assert reported == []


async def test_a_full_stream_is_the_error_nats_py_gives(nats_server: NatsServer) -> None:
    """A stream at its max_msgs that discards new messages: the link raises what it makes of
    nats-py's answer to the same publish (a 503 with err_code 10077, same class and text)."""
    conn = await _connect(nats_server.url)
    raw = await nats.connect(nats_server.url)
    js = raw.jetstream()
    for name in ("FULL", "RAW_FULL"):
        await js.add_stream(
            StreamConfig(
                name=name,
                subjects=[f"{name.lower()}.>"],
                max_msgs=1,
                discard=DiscardPolicy.NEW,
            )
        )
    try:
        await conn.publish_with_ack("full.x", b"1", None, 2)
        await js.publish("raw_full.x", b"1")
        with pytest.raises(LinkError) as mine:
            await conn.publish_with_ack("full.x", b"2", None, 2)
        with pytest.raises(Exception) as theirs:
            await js.publish("raw_full.x", b"2")
    finally:
        await raw.close()
        await conn.close()
    expected = translate(theirs.value)
    assert isinstance(mine.value, ServerUnavailableError)
    assert (type(mine.value), str(mine.value), mine.value.status, mine.value.err_code) == (
        type(expected),
        str(expected),
        503,
        10077,
    )
