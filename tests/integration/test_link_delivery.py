"""What a core subscription's handler gets, and what happens when it raises.

The connection turns each nats-py message into an ``InboundMessage`` and catches the
handler's failure in the one coroutine nats-py awaits per message; these tests pin what a
handler sees and that a failing handler is logged while delivery goes on.
"""

from __future__ import annotations

from typing import Any

import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.link.transport import InboundMessage
from tests.conftest import LinkFactory
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


async def test_a_handler_gets_subject_data_headers_and_reply(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A message with headers and a reply, then one with neither, arrive as sent."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    got: list[InboundMessage] = []

    async def handler(msg: InboundMessage) -> None:
        got.append(msg)

    await link.subscribe("deliver.as_sent", handler)
    nc = await nats.connect(nats_server.url)
    try:
        await nc.publish("deliver.as_sent", b"one", reply="answer.here", headers={"K": "v"})
        await nc.publish("deliver.as_sent", b"two")
        await wait_for(lambda: len(got) == 2, 5, "both messages")
    finally:
        await nc.close()
    assert got == [
        InboundMessage("deliver.as_sent", b"one", {"K": "v"}, "answer.here"),
        InboundMessage("deliver.as_sent", b"two", None, None),
    ]


async def test_a_handler_that_raises_is_logged_and_the_next_message_delivered(
    nats_server: NatsServer, make_link: LinkFactory, logs: list[dict[str, Any]]
) -> None:
    """The handler raises on the first message: one error line naming the subject, and the
    second message is still delivered."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    seen: list[bytes] = []

    async def handler(msg: InboundMessage) -> None:
        seen.append(msg.data)
        if msg.data == b"boom":
            raise ValueError("handler bug")

    await link.subscribe("deliver.failing", handler)
    for data in (b"boom", b"after"):
        assert (await link.publish("deliver.failing", data)).outcome.value == "sent"
    await wait_for(lambda: seen == [b"boom", b"after"], 5, "the message after the failure")
    failures = [e for e in logs if e["event"] == "message handler raised"]
    assert [(e["log_level"], e["subject"], str(e["error"])) for e in failures] == [
        ("error", "deliver.failing", "handler bug")
    ]
