"""Messages nats-py cannot read (bytes that are not UTF-8 where it decodes text, a header
block it cannot parse), real Router.

nats-server passes a reply subject or a header status line on as the publisher wrote it, and
nats-py 2.16 decodes those as strict UTF-8 inside its read loop: the UnicodeDecodeError ended
the loop. The connection then stayed open and unread, and pings "passed" without a round
trip, so one message from any client that may publish a decide left the Router deaf until it
was restarted. Such a message is dropped and counted, and the connection keeps reading.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from natsrouter.embedded import NatsServer
from tests.conftest import RouterFactory
from tests.helpers.observe import rmetric
from tests.helpers.waiting import wait_for
from tests.integration.test_router_decide import decide_request, nats_decide

pytestmark = pytest.mark.integration

UNREADABLE = "router_nats_unreadable_messages_total"


def hpub(subject: bytes, header: bytes) -> bytes:
    return b"HPUB %s %d %d\r\n%s\r\n" % (subject, len(header), len(header), header)


DECIDE = b"beamline.router.v1.decide"
# The parts nats-py decodes as strict UTF-8, each holding the byte 0xff.
CASES = {
    "reply_subject": b"PUB %s r.\xff 2\r\n{}\r\n" % DECIDE,
    "status_line": hpub(DECIDE, b"NATS/1.0 \xff\r\n\r\n"),
    "status_description": hpub(DECIDE, b"NATS/1.0 503 \xff\r\n\r\n"),
    # A header block of no more than its version line: nats-py's header parsing indexes
    # past its end (IndexError), which ended the read loop the same way.
    "version_line_only": hpub(DECIDE, b"NATS/1.0"),
}


async def send_raw(port: int, frame: bytes) -> None:
    """Send ``frame`` as a plain client would, and wait until the server has read it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # INFO
        connect = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\n" + frame + b"PING\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readline(), 5) == b"PONG\r\n"
    finally:
        writer.close()


@pytest.mark.parametrize("case", list(CASES))
async def test_an_unreadable_decide_is_dropped_and_the_next_decide_is_answered(
    nats_server: NatsServer, make_router: RouterFactory, case: str
) -> None:
    """A decide message with the byte 0xff where nats-py decodes text: counted once as
    unreadable, and a decide sent after it is answered ok."""
    router = await make_router([nats_server.url])
    assert await router.link.wait_connected(5)
    await send_raw(nats_server.port, CASES[case])
    answer = await nats_decide(nats_server.url, json.dumps(decide_request()).encode())
    assert answer["ok"] is True
    await wait_for(lambda: rmetric(router, UNREADABLE) == 1, 5, "the unreadable message counted")
