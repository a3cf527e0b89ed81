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
from natsrouter.link.link import Link
from natsrouter.link.transport import ConsumerSpec, InboundMessage, JsMessage
from tests.conftest import LinkFactory
from tests.helpers.jetstream import create_stream
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


def _failures(link: Link) -> dict[str, float]:
    """router_nats_handler_failures_total by subject, as a scrape would show it."""
    return {
        sample.labels["subject"]: sample.value
        for sample in link.metrics.handler_failures.collect()[0].samples
        if sample.name.endswith("_total")
    }


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
    """The handler raises on three messages: one error line naming the subject (the other two
    counted, not logged), every failure counted, and the message after them delivered."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    seen: list[bytes] = []

    async def handler(msg: InboundMessage) -> None:
        seen.append(msg.data)
        if msg.data == b"boom":
            raise ValueError("handler bug")

    await link.subscribe("deliver.failing", handler)
    # Exposed from 0 once bound: a rate over it has a series before the first failure.
    assert _failures(link) == {"deliver.failing": 0.0}
    sent = [b"boom", b"boom", b"boom", b"after"]
    for data in sent:
        assert (await link.publish("deliver.failing", data)).outcome.value == "sent"
    await wait_for(lambda: seen == sent, 5, "the message after the failures")
    failures = [e for e in logs if e["event"] == "message handler raised"]
    assert [
        (e["log_level"], e["error_code"], e["subject"], str(e["error"]), e["suppressed"])
        for e in failures
    ] == [("error", "NATS_HANDLER_FAILED", "deliver.failing", "handler bug", 0)]
    assert _failures(link) == {"deliver.failing": 3.0}


async def test_a_consumer_handler_that_raises_is_counted_by_its_filter_subject(
    nats_server: NatsServer, make_link: LinkFactory, logs: list[dict[str, Any]]
) -> None:
    """A pull consumer's handler raises on messages of two subjects under its filter: both
    failures are counted and logged under the filter subject (not the messages' own), and
    the next message is handled."""
    await create_stream(nats_server.url, "FAILS", ["fails.>"])
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    handled: list[bytes] = []

    async def handler(msg: JsMessage) -> None:
        if msg.data == b"boom":
            raise ValueError("consumer handler bug")
        handled.append(msg.data)
        await link.ack(msg)

    await link.consume(ConsumerSpec("FAILS", "f", "fails.>"), handler, fetch_timeout_s=0.2)
    for subject, data in (("fails.a", b"boom"), ("fails.b", b"boom"), ("fails.a", b"ok")):
        assert (await link.publish_with_ack(subject, data)).outcome.value == "sent"
    await wait_for(lambda: handled == [b"ok"], 5, "the message after the failures")
    assert _failures(link) == {"fails.>": 2.0}
    failures = [e for e in logs if e.get("error_code") == "NATS_HANDLER_FAILED"]
    assert [(e["subject"], str(e["error"])) for e in failures] == [
        ("fails.>", "consumer handler bug")
    ]
