"""The link's JetStream publish reads the server's answer as nats-py's ``JetStreamContext.publish``.

The link makes the request with the client's own ``request`` and reads a plain PubAck
itself; anything else goes to nats-py's reading. Each case publishes once through the link's
connection and once through raw nats-py's ``js.publish``, and compares the PubAck, or the
error the link makes of what nats-py raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import LinkError, OperationTimeoutError
from natsrouter.link.nats_errors import translate
from natsrouter.link.nats_transport import ConnectOptions, NatsConnection, NatsTransport
from natsrouter.link.outcome import PubAck
from tests.helpers.waiting import ordered_flush, wait_for

pytestmark = pytest.mark.integration

STREAM = "ACKS"
RAW_STREAM = "RAW_ACKS"  # same shape: each sees the same sequence numbers


def _ignore_loss(*_: Any) -> None:
    return None


async def _both(url: str) -> tuple[NatsConnection, Any, Callable[[], Any]]:
    """The link's connection, and a raw nats-py JetStream context (and its close)."""
    conn = await NatsTransport(ConnectOptions(connect_timeout_s=2)).connect(url, _ignore_loss)
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["acks.>"])
    await js.add_stream(name=RAW_STREAM, subjects=["raw.>"])

    async def close() -> None:
        await nc.close()
        await conn.close()

    return conn, js, close


def _described(err: LinkError) -> tuple[type, str, Any, Any]:
    return type(err), str(err), getattr(err, "status", None), getattr(err, "err_code", None)


async def test_a_pub_ack_and_a_duplicate_read_as_nats_py_reads_them(
    nats_server: NatsServer,
) -> None:
    """A stored message and a repeat of its Nats-Msg-Id: stream, seq and duplicate equal
    nats-py's PubAck for the same publishes."""
    conn, js, close = await _both(nats_server.url)
    try:
        mine, raw = [], []
        for msg_id in ("one", "one", "two"):
            headers = {"Nats-Msg-Id": msg_id}
            mine.append(await conn.publish_with_ack("acks.x", b"x", headers, 2))
            ack = await js.publish("raw.x", b"x", headers=dict(headers))
            raw.append(PubAck(STREAM, ack.seq, bool(ack.duplicate)))  # named as the link's
    finally:
        await close()
    assert mine == raw == [PubAck(STREAM, 1, False), PubAck(STREAM, 1, True), PubAck(STREAM, 2)]


async def test_no_stream_for_the_subject_is_the_error_nats_py_gives(
    nats_server: NatsServer,
) -> None:
    """A subject no stream holds: the link raises what it makes of nats-py's
    NoStreamResponseError (same class and text)."""
    conn, js, close = await _both(nats_server.url)
    try:
        with pytest.raises(LinkError) as mine:
            await conn.publish_with_ack("nowhere.x", b"x", None, 2)
        with pytest.raises(Exception) as raw:
            await js.publish("nowhere.x", b"x")
    finally:
        await close()
    assert _described(mine.value) == _described(translate(raw.value))
    assert str(mine.value) == "nats: no response from stream"


async def test_a_refusal_is_the_error_nats_py_gives(nats_server: NatsServer) -> None:
    """A wrong expected last sequence (400, err_code 10071): the link raises what it makes of
    nats-py's APIError, with the same status, err_code and text."""
    conn, js, close = await _both(nats_server.url)
    headers = {"Nats-Expected-Last-Sequence": "99"}
    try:
        with pytest.raises(LinkError) as mine:
            await conn.publish_with_ack("acks.x", b"x", headers, 2)
        with pytest.raises(Exception) as raw:
            await js.publish("acks.x", b"x", headers=dict(headers))
    finally:
        await close()
    assert _described(mine.value) == _described(translate(raw.value))
    assert _described(mine.value)[2:] == (400, 10071)


async def _silent_subscriber(url: str, subject: str) -> Any:
    """A core subscriber on ``subject`` that never answers (so requests time out)."""
    nc = await nats.connect(url)
    await nc.subscribe(subject, cb=_never_answer)
    # nats-py's flush PING would overtake the SUB still in its buffer.
    await ordered_flush(nc)
    return nc


async def _never_answer(_: Any) -> None:
    return None


async def test_no_answer_in_time_is_the_error_nats_py_gives_and_leaves_nothing_behind(
    nats_server: NatsServer,
) -> None:
    """A subject whose only subscriber never answers: the same timeout error as nats-py's,
    and the client's response map is empty afterwards."""
    silent = await _silent_subscriber(nats_server.url, "silent.x")
    conn, js, close = await _both(nats_server.url)
    try:
        with pytest.raises(LinkError) as mine:
            await conn.publish_with_ack("silent.x", b"x", None, 0.2)
        with pytest.raises(Exception) as raw:
            await js.publish("silent.x", b"x", timeout=0.2)
        left = dict(conn._nc._resp_map)
    finally:
        await close()
        await silent.close()
    assert _described(mine.value) == _described(translate(raw.value))
    assert isinstance(mine.value, OperationTimeoutError)
    assert left == {}


async def test_a_cancelled_publish_leaves_nothing_behind(nats_server: NatsServer) -> None:
    """A publish cancelled while it waits for its PubAck: the response map is empty."""
    silent = await _silent_subscriber(nats_server.url, "silent.y")
    conn, _, close = await _both(nats_server.url)
    try:
        waiting = asyncio.ensure_future(conn.publish_with_ack("silent.y", b"x", None, 30))
        await wait_for(lambda: len(conn._nc._resp_map) == 1, 5, "the request under way")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        left = dict(conn._nc._resp_map)
    finally:
        await close()
        await silent.close()
    assert left == {}


async def test_a_bad_subject_is_the_error_nats_py_gives(nats_server: NatsServer) -> None:
    """A subject with a space: the link raises what it makes of nats-py's own refusal."""
    conn, js, close = await _both(nats_server.url)
    try:
        with pytest.raises(LinkError) as mine:
            await conn.publish_with_ack("acks. x", b"x", None, 2)
        with pytest.raises(Exception) as raw:
            await js.publish("acks. x", b"x")
    finally:
        await close()
    assert _described(mine.value) == _described(translate(raw.value))


async def test_the_link_and_nats_py_share_the_reply_subscription(nats_server: NatsServer) -> None:
    """A JetStream publish and nats-py's own request on the same client, at the same time:
    each gets its own answer."""
    conn, _, close = await _both(nats_server.url)
    echo = await nats.connect(nats_server.url)

    async def answer(msg: Any) -> None:
        await echo.publish(msg.reply, b"echo:" + msg.data)

    await echo.subscribe("echo.x", cb=answer)
    await ordered_flush(echo)
    try:
        ack, reply = await asyncio.gather(
            conn.publish_with_ack("acks.z", b"x", None, 2),
            conn._nc.request("echo.x", b"hi", timeout=2),
        )
    finally:
        await close()
        await echo.close()
    assert (ack, reply.data) == (PubAck(STREAM, 1), b"echo:hi")
