"""The link's nats-py parser drops a message nats-py cannot read and parses on after it.

A real nats-py client and parser, fed the server's bytes directly (no socket): the part under
test is what happens inside one ``parse`` call when a message in it cannot be decoded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nats.aio.subscription import Subscription

from natsrouter.link.nats_client import OrderedClient


def _client_with_subscription() -> tuple[OrderedClient, list[str], asyncio.Queue[Any]]:
    """A client whose subscription 1 queues its messages; the unreadable subjects listed."""
    unreadable: list[str] = []
    nc = OrderedClient(unreadable.append)
    sub = Subscription(nc, 1, "d.>")  # registered as subscribe would, without a server
    nc._subs[1] = sub
    return nc, unreadable, sub._pending_queue


async def test_a_message_after_an_unreadable_one_in_the_same_read_is_delivered() -> None:
    """An unreadable reply subject then a good message, read together: the first is
    reported by subject and dropped, the second delivered within the same parse call."""
    nc, unreadable, queue = _client_with_subscription()
    await nc._ps.parse(b"MSG d.bad 1 r.\xff 2\r\n{}\r\nMSG d.good 1 r.ok 2\r\n[]\r\n")
    assert unreadable == ["d.bad"]
    delivered = queue.get_nowait()
    assert (delivered.subject, delivered.reply, delivered.data) == ("d.good", "r.ok", b"[]")
    assert queue.empty()


async def test_an_unreadable_status_line_is_dropped_and_parsing_goes_on() -> None:
    """A header status line with the byte 0xff: reported, dropped, the next message read."""
    nc, unreadable, queue = _client_with_subscription()
    header = b"NATS/1.0 \xff\r\n\r\n"
    frame = b"HMSG d.st 1 %d %d\r\n%s\r\n" % (len(header), len(header), header)
    await nc._ps.parse(frame + b"MSG d.next 1 2\r\nok\r\n")
    assert unreadable == ["d.st"]
    assert queue.get_nowait().subject == "d.next"


async def test_a_decoding_error_outside_a_message_is_raised_as_before() -> None:
    """A UnicodeDecodeError that does not come from reading a message is not swallowed."""
    nc, unreadable, _ = _client_with_subscription()

    async def broken(*_: object) -> None:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")

    nc._process_pong = broken  # type: ignore[method-assign]
    with pytest.raises(UnicodeDecodeError):
        await nc._ps.parse(b"PONG\r\n")
    assert unreadable == []


async def test_unreadable_messages_among_good_ones_in_one_read_are_each_dropped_once() -> None:
    """Good, unreadable, good, unreadable, good in one read: both unreadable ones reported
    once each, the three good ones delivered in order."""
    nc, unreadable, queue = _client_with_subscription()
    await nc._ps.parse(
        b"MSG d.g1 1 1\r\na\r\nMSG d.b1 1 r.\xff 1\r\nx\r\nMSG d.g2 1 1\r\nb\r\n"
        b"MSG d.b2 1 \xfe.r 1\r\ny\r\nMSG d.g3 1 1\r\nc\r\n"
    )
    delivered = [queue.get_nowait() for _ in range(queue.qsize())]
    assert unreadable == ["d.b1", "d.b2"]
    assert [(m.subject, m.data) for m in delivered] == [
        ("d.g1", b"a"),
        ("d.g2", b"b"),
        ("d.g3", b"c"),
    ]


async def test_a_message_split_after_an_unreadable_one_is_delivered_once_whole() -> None:
    """An unreadable message then half of a good one, the rest in the next read: the good
    one is delivered once, whole."""
    nc, unreadable, queue = _client_with_subscription()
    await nc._ps.parse(b"MSG d.bad 1 r.\xff 1\r\nx\r\nMSG d.good 1 5\r\nhe")
    assert queue.empty()
    await nc._ps.parse(b"llo\r\n")
    delivered = [queue.get_nowait() for _ in range(queue.qsize())]
    assert unreadable == ["d.bad"]
    assert [(m.subject, m.data) for m in delivered] == [("d.good", b"hello")]
