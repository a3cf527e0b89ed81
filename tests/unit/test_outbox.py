"""The outbox and its sender, with a fake transport: keep, refuse, expire, replay, retry."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from natsrouter.config import build_settings
from natsrouter.errors import (
    ConnectionClosedError,
    NoRespondersError,
    OperationTimeoutError,
    Reason,
    ServerError,
)
from natsrouter.link import Link, Outcome
from natsrouter.link.accounting import Accounting
from natsrouter.link.backoff import BackoffPolicy
from natsrouter.link.destinations import Destinations
from natsrouter.link.outbox import Outbox
from natsrouter.link.outcome import Operation, Result
from natsrouter.link.pending import Limits, MemoryPendingQueue, PendingOp
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.observability.metrics import LinkMetrics
from tests.conftest import FAST
from tests.helpers.fake_transport import FakeServer, FakeTransport
from tests.helpers.observe import metric
from tests.helpers.waiting import wait_for


class Wall:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _outbox(wall: Wall, *, fail_open: bool = False, **overrides: Any) -> Outbox:
    settings = build_settings({**FAST, **overrides})
    limits = Limits(
        settings.nats_max_pending_operations,
        settings.nats_max_pending_bytes,
        settings.nats_pending_overflow,
    )
    metrics = LinkMetrics(CollectorRegistry())
    accounting = Accounting(
        (
            metrics.operation_total[Operation.PUBLISH],
            metrics.operation_total[Operation.PUBLISH_WITH_ACK],
        )
    )
    return Outbox(
        settings,
        MemoryPendingQueue(limits),
        accounting,
        LinkTelemetry(metrics),
        wall_clock=wall,
        fail_open=lambda: fail_open,
        state_name=lambda: "reconnecting",
        destinations=Destinations(BackoffPolicy(50, 200, 0.0), random.Random(0), wall, print),
    )


def _op(n: int, subject: str = "s.x") -> PendingOp:
    return PendingOp(Operation.PUBLISH_WITH_ACK, subject, b"%d" % n, {"Nats-Msg-Id": f"m{n}"})


def test_an_operation_that_cannot_go_out_is_queued_and_counted() -> None:
    """Not connected: the operation is queued with an id, the ledger balances."""
    box = _outbox(Wall())
    result = box.not_sendable(_op(1), connected=False)
    assert (result.outcome, result.pending_id, result.reason) == (
        Outcome.QUEUED,
        1,
        Reason.NOT_CONNECTED,
    )
    assert (box.count, box.accounting.accepted) == (1, 1)
    assert box.accounting.balanced(box.count)


def test_reject_new_refuses_past_the_limit() -> None:
    """reject_new with room for 2: the third is rejected, counted, the ledger balances."""
    box = _outbox(Wall(), nats_max_pending_operations=2, nats_pending_overflow="reject_new")
    outcomes = [box.not_sendable(_op(i), connected=False).outcome for i in range(3)]
    assert outcomes == [Outcome.QUEUED, Outcome.QUEUED, Outcome.REJECTED]
    assert (box.accounting.rejected, box.count) == (1, 2)
    assert box.accounting.balanced(box.count)


def test_drop_oldest_counts_each_eviction() -> None:
    """drop_oldest with room for 2: five pushes evict the three oldest, counted dropped."""
    box = _outbox(Wall(), nats_max_pending_operations=2)
    for i in range(5):
        box.not_sendable(_op(i), connected=False)
    assert [item.op.payload for item in box.batch_after(0, 10)] == [b"3", b"4"]
    assert box.held == {"s.x": 2}
    assert box.accounting.dropped == 3
    assert box.accounting.balanced(box.count)


def test_items_older_than_the_expiry_are_dropped() -> None:
    """With a 1 s expiry, an item 1.5 s old is dropped (expired) on the next push."""
    wall = Wall()
    box = _outbox(wall, nats_pending_operation_timeout_ms=1000)
    box.not_sendable(_op(1), connected=False)
    wall.now += 1.5
    box.not_sendable(_op(2), connected=False)
    assert (box.count, box.accounting.dropped) == (1, 1)
    assert box.accounting.balanced(box.count)


def test_fail_open_keeps_nothing() -> None:
    """In fail-open mode nothing is queued: the operation ends failed_open."""
    box = _outbox(Wall(), fail_open=True)
    assert box.not_sendable(_op(1), connected=False).outcome is Outcome.FAILED_OPEN
    assert (box.count, box.accounting.failed_open) == (0, 1)


# -- the link with a fake transport ------------------------------------------------------------

LinkMaker = Callable[..., Awaitable[tuple[Link, FakeServer]]]


@pytest.fixture
async def fake_link() -> AsyncIterator[LinkMaker]:
    links: list[Link] = []

    async def make(
        start: bool = True, wall: Wall | None = None, **overrides: Any
    ) -> tuple[Link, FakeServer]:
        settings = build_settings({**FAST, "nats_url": "nats://fake:4222", **overrides})
        server = FakeServer()
        link = Link(
            settings,
            LinkMetrics(CollectorRegistry()),
            transport=FakeTransport(server),
            wall_clock=wall or time.time,
        )
        links.append(link)
        if start:
            await link.start()
            assert await link.wait_connected(2)
        return link, server

    yield make
    for link in links:
        await link.close()


async def test_publishes_accepted_before_connecting_are_replayed_in_order(
    fake_link: LinkMaker,
) -> None:
    """Queued before the first connection, sent once connected, oldest first, ids kept."""
    link, server = await fake_link(start=False)
    for i in range(5):
        result = await link.publish_with_ack("s.x", b"%d" % i, {"Nats-Msg-Id": f"m{i}"})
        assert result.outcome is Outcome.QUEUED
    await link.start()
    await wait_for(lambda: link.pending.count == 0, 2)
    assert server.payloads() == [b"0", b"1", b"2", b"3", b"4"]
    assert [s.headers["Nats-Msg-Id"] for s in server.sent if s.headers] == [
        f"m{i}" for i in range(5)
    ]
    assert link.accounting.balanced(0)


async def test_an_unsettled_publish_is_retried_with_the_same_id(fake_link: LinkMaker) -> None:
    """A timeout then a success: sent once more with the same Nats-Msg-Id, result sent."""
    link, server = await fake_link()
    server.fail["s.x"] = [OperationTimeoutError()]
    result = await link.publish_with_ack("s.x", b"a")
    assert result.outcome is Outcome.SENT
    assert len(server.sent) == 1
    assert server.sent[0].headers is not None and "Nats-Msg-Id" in server.sent[0].headers
    assert metric(link, "router_nats_publish_with_ack_retries_total") == 1
    assert link.accounting.balanced(0)


async def test_a_refusal_ends_failed_at_once(fake_link: LinkMaker) -> None:
    """A server error on a direct publish: failed with its reason, nothing queued."""
    link, server = await fake_link()
    server.refuse_subject["s.x"] = ServerError("maximum payload exceeded")
    result = await link.publish_with_ack("s.x", b"a")
    assert (result.outcome, result.reason) == (Outcome.FAILED, Reason.SERVER_ERROR)
    assert (link.pending.count, link.accounting.failed) == (0, 1)
    assert link.accounting.balanced(0)


async def test_a_slow_subject_holds_only_its_own_items(
    fake_link: LinkMaker, logs: list[dict[str, Any]]
) -> None:
    """One subject times out: the others' queued items and new publishes go out meanwhile."""
    link, server = await fake_link(start=False, nats_request_timeout_ms=300)
    server.hold["slow.x"] = asyncio.Event()  # its PubAcks never come until set
    for i in range(3):
        await link.publish_with_ack("slow.x", b"s%d" % i)
        await link.publish_with_ack("fast.x", b"f%d" % i)
    await link.start()
    await wait_for(lambda: server.payloads("fast.x") == [b"f0", b"f1", b"f2"], 2)
    assert link.pending.count == 3  # the slow ones, still queued
    fresh = await link.publish_with_ack("other.x", b"o")
    behind = await link.publish_with_ack("slow.x", b"s3")
    assert (fresh.outcome, behind.outcome) == (Outcome.SENT, Outcome.QUEUED)
    await wait_for(lambda: "slow.x" in link.status()["pending"]["blocked"], 2)
    assert metric(link, "router_nats_blocked_destinations") == 1
    server.hold["slow.x"].set()
    await wait_for(lambda: link.pending.count == 0, 5)
    assert server.payloads("slow.x") == [b"s0", b"s1", b"s2", b"s3"]
    assert metric(link, "router_nats_blocked_destinations") == 0
    assert link.accounting.balanced(0)

    def passes(code: str) -> int:
        return [e.get("error_code") for e in logs].count(code)

    # Each replay pass that tried something is logged as a pair (probes included).
    await wait_for(lambda: passes("NATS_RETRY_PENDING") == passes("NATS_RETRY_COMPLETE"), 2)
    assert passes("NATS_RETRY_PENDING") >= 2


async def test_a_reply_that_cannot_go_out_now_is_dropped_never_queued(
    fake_link: LinkMaker, logs: list[dict[str, Any]]
) -> None:
    """Not connected: three replies end dropped (reply_dropped), counted, logged once."""
    link, _ = await fake_link(start=False)
    results = [await link.reply("_INBOX.a", b"r%d" % i) for i in range(3)]
    assert {(r.outcome, r.reason) for r in results} == {(Outcome.DROPPED, Reason.REPLY_DROPPED)}
    assert link.pending.count == 0
    assert metric(link, "router_nats_replies_dropped_total", reason="not_connected") == 3
    assert [e["error_code"] for e in logs if "error_code" in e].count("NATS_REPLY_DROPPED") == 1
    assert (link.accounting.dropped, link.accounting.balanced(0)) == (3, True)


async def test_a_reply_goes_out_at_once_while_a_replay_runs(fake_link: LinkMaker) -> None:
    """Connected with the queue still replaying: the reply is sent now, not behind it."""
    link, server = await fake_link(start=False, nats_request_timeout_ms=2000)
    server.hold["_INBOX.a"] = asyncio.Event()  # a queued item to the same subject hangs
    await link.publish_with_ack("_INBOX.a", b"queued")
    await link.start()
    assert await link.wait_connected(2)
    result = await link.reply("_INBOX.a", b"answer")
    assert result.outcome is Outcome.SENT
    assert server.payloads("_INBOX.a") == [b"answer"]
    server.hold["_INBOX.a"].set()


async def test_a_reply_whose_connection_fails_is_dropped_and_the_connection_replaced(
    fake_link: LinkMaker,
) -> None:
    """Connected, the reply's publish raises connection closed: dropped (reply_dropped, the
    cause in error), counted by its reason, never queued, and the link connects again."""
    link, server = await fake_link(start=False)
    await link.start()
    assert await link.wait_connected(2)
    server.fail["_INBOX.b"] = [ConnectionClosedError("gone")]
    result = await link.reply("_INBOX.b", b"answer")
    assert (result.outcome, result.reason) == (Outcome.DROPPED, Reason.REPLY_DROPPED)
    assert isinstance(result.error, ConnectionClosedError)
    assert link.pending.count == 0
    assert metric(link, "router_nats_replies_dropped_total", reason="connection_closed") == 1
    await wait_for(lambda: server.attempts == 2 and link.ready, 2, "connected again")


async def test_poison_items_end_failed_and_block_nothing(
    fake_link: LinkMaker, logs: list[dict[str, Any]]
) -> None:
    """Queued items the server refuses for good end failed, counted; the rest flow in order."""
    link, server = await fake_link(start=False)
    server.refuse_subject["big.x"] = ServerError("nats: maximum payload exceeded")
    for i in range(3):
        await link.publish_with_ack("big.x", b"b%d" % i)
        await link.publish_with_ack("ok.x", b"o%d" % i)
    await link.start()
    await wait_for(lambda: link.pending.count == 0, 2)
    assert server.payloads() == [b"o0", b"o1", b"o2"]
    assert link.accounting.failed == 3
    assert metric(link, "router_nats_pending_operations_failed_total", reason="server_error") == 3
    assert [e["error_code"] for e in logs if "error_code" in e].count("NATS_PENDING_FAILED") == 1
    assert metric(link, "router_nats_blocked_destinations") == 0
    assert link.accounting.balanced(0)


async def test_no_responders_is_poison_only_without_a_stream(fake_link: LinkMaker) -> None:
    """no_responders: failed when no stream holds the subject, kept when one does."""
    link, server = await fake_link(start=False)
    server.refuse_subject["gone.x"] = NoRespondersError()
    server.refuse_subject["electing.x"] = NoRespondersError()
    server.streams["electing.x"] = "ELECTING"  # a stream between leaders
    await link.publish_with_ack("gone.x", b"g")
    await link.publish_with_ack("electing.x", b"e")
    await link.start()
    await wait_for(lambda: link.accounting.failed == 1, 2)
    await wait_for(lambda: "electing.x" in link.status()["pending"]["blocked"], 2)
    assert [i.op.subject for i in link.pending.batch_after(0, 10)] == ["electing.x"]
    del server.refuse_subject["electing.x"]
    await wait_for(lambda: link.pending.count == 0, 2)
    assert server.payloads() == [b"e"]
    assert link.accounting.balanced(0)


async def test_an_item_evicted_while_being_sent_is_counted_once(fake_link: LinkMaker) -> None:
    """drop_oldest evicts the item a replay is sending; its PubAck comes: counted sent only."""
    link, server = await fake_link(
        start=False, nats_max_pending_operations=2, nats_request_timeout_ms=5000
    )
    gate = server.hold["s.x"] = asyncio.Event()
    for name in (b"a", b"b"):
        await link.publish_with_ack("s.x", name)
    await link.start()
    await wait_for(lambda: server.waiting == 2, 2, "the replay sending a and b")
    result = await link.publish_with_ack("s.x", b"c")  # behind a and b: evicts a
    assert result.outcome is Outcome.QUEUED
    gate.set()
    await wait_for(lambda: link.pending.count == 0, 2)
    assert server.payloads() == [b"a", b"b", b"c"]
    assert (link.accounting.sent, link.accounting.dropped) == (3, 0)
    assert link.accounting.balanced(0)


async def test_a_replay_keeps_a_window_of_pubacks_in_flight(fake_link: LinkMaker) -> None:
    """nats_replay_max_in_flight = 3: three PubAcks awaited at once, never more; order kept."""
    link, server = await fake_link(
        start=False, nats_replay_max_in_flight=3, nats_request_timeout_ms=5000
    )
    gate = server.hold["s.x"] = asyncio.Event()
    for i in range(7):
        await link.publish_with_ack("s.x", b"%d" % i)
    await link.start()
    await wait_for(lambda: server.waiting == 3, 2, "a full window")
    assert link.pending.count == 7
    gate.set()
    await wait_for(lambda: link.pending.count == 0, 2)
    assert server.payloads() == [b"%d" % i for i in range(7)]
    assert server.most_waiting == 3


async def _expire_while_in_flight(make: LinkMaker, *, answer: bool) -> tuple[Link, FakeServer]:
    """Queue a and b, let the replay put both on the wire, expire them, queue c."""
    wall = Wall()
    link, server = await make(
        start=False,
        wall=wall,
        nats_pending_operation_timeout_ms=1000,
        nats_request_timeout_ms=5000 if answer else 300,
    )
    gate = server.hold["s.x"] = asyncio.Event()
    for name in (b"a", b"b"):
        await link.publish_with_ack("s.x", name)
    await link.start()
    await wait_for(lambda: server.waiting == 2, 2, "the replay sending a and b")
    wall.now += 2  # a and b are past the expiry while their PubAcks are awaited
    result = await link.publish_with_ack("s.x", b"c")
    assert (result.outcome, link.pending.count) == (Outcome.QUEUED, 1)
    if answer:
        gate.set()
    else:
        await wait_for(lambda: server.waiting == 0, 2, "a and b to time out")
        del server.hold["s.x"]
    await wait_for(lambda: link.pending.count == 0, 5)
    return link, server


async def test_an_item_expired_while_being_sent_and_stored_is_counted_sent(
    fake_link: LinkMaker,
) -> None:
    """Expired in flight, then its PubAck comes: counted sent, never dropped."""
    link, server = await _expire_while_in_flight(fake_link, answer=True)
    assert server.payloads() == [b"a", b"b", b"c"]
    assert (link.accounting.sent, link.accounting.dropped) == (3, 0)
    assert metric(link, "router_nats_pending_operations_dropped_total", reason="expired") == 0
    assert link.accounting.balanced(0)


async def test_an_item_expired_while_being_sent_and_not_stored_is_counted_dropped(
    fake_link: LinkMaker,
) -> None:
    """Expired in flight, then its send times out: counted dropped (expired), once."""
    link, server = await _expire_while_in_flight(fake_link, answer=False)
    assert server.payloads() == [b"c"]
    assert (link.accounting.sent, link.accounting.dropped) == (1, 2)
    assert metric(link, "router_nats_pending_operations_dropped_total", reason="expired") == 2
    assert link.accounting.balanced(0)


def test_evictions_outside_a_replay_leave_nothing_behind() -> None:
    """drop_oldest through a long outage: no record of evicted ids is kept (memory bounded)."""
    box = _outbox(Wall(), nats_max_pending_operations=10)
    for i in range(1000):
        box.not_sendable(_op(i), connected=False)
    assert (box.count, box.accounting.dropped, len(box._gone)) == (10, 990, 0)


async def test_reply_now_settles_without_a_coroutine_when_nothing_must_wait(
    fake_link: LinkMaker,
) -> None:
    """reply_now: not connected, a Result dropped at once; connected, a Result sent at once,
    the payload on the wire and counted as a publish."""
    link, server = await fake_link(start=False)
    down = link.reply_now("_INBOX.c", b"early")
    assert isinstance(down, Result)
    assert (down.outcome, down.reason) == (Outcome.DROPPED, Reason.REPLY_DROPPED)
    await link.start()
    assert await link.wait_connected(2)
    sent = link.reply_now("_INBOX.c", b"answer")
    assert sent == Result(Outcome.SENT)
    assert server.payloads("_INBOX.c") == [b"answer"]
    assert metric(link, "router_nats_publish_total") == 1


async def test_reply_now_whose_publish_fails_is_dropped_like_reply(fake_link: LinkMaker) -> None:
    """Connected, the reply's publish raises connection closed: the same dropped Result as
    reply's (at once or once awaited), counted by its reason, never queued."""
    link, server = await fake_link(start=False)
    await link.start()
    assert await link.wait_connected(2)
    server.fail["_INBOX.d"] = [ConnectionClosedError("gone")]
    result = link.reply_now("_INBOX.d", b"answer")
    if not isinstance(result, Result):
        result = await result
    assert (result.outcome, result.reason) == (Outcome.DROPPED, Reason.REPLY_DROPPED)
    assert link.pending.count == 0
    assert metric(link, "router_nats_replies_dropped_total", reason="connection_closed") == 1
