"""Pending queue against a real server: order, overflow, expiry, partial replay, accounting."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import Reason
from natsrouter.link import ConnectionState, Fault, FaultTarget, InboundMessage, Link, Outcome
from tests.conftest import ADMIN_TOKEN, LinkFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import codes, metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


class Inbox:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def __call__(self, msg: InboundMessage) -> None:
        self.data.append(msg.data)


async def _listening_then_down(link: Link, server: NatsServer, subject: str) -> Inbox:
    """Subscribe to ``subject``, then kill the server: what is published next is queued."""
    inbox = Inbox()
    await link.subscribe(subject, inbox)
    await _down(link, server)
    return inbox


async def _down(link: Link, server: NatsServer) -> None:
    assert await link.wait_connected(5)
    server.kill()
    await wait_for(lambda: link.state is not ConnectionState.CONNECTED, 5)


async def test_replay_is_fifo(nats_server: NatsServer, make_link: LinkFactory, logs: list) -> None:
    """500 publishes queued during an outage arrive oldest first, each once."""
    link = await make_link([nats_server.url])
    inbox = await _listening_then_down(link, nats_server, "fifo.x")
    sent = [str(i).encode() for i in range(500)]
    results = [await link.publish("fifo.x", d) for d in sent]
    assert {r.outcome for r in results} == {Outcome.QUEUED}
    assert [r.pending_id for r in results] == sorted(r.pending_id for r in results)  # type: ignore[type-var]
    assert metric(link, "router_nats_pending_operations_count") == 500
    await nats_server.astart()
    await wait_for(lambda: len(inbox.data) == 500, 10)
    assert inbox.data == sent
    assert codes(logs).count("NATS_PUBLISH_QUEUED") == 1  # a burst is logged once
    retry = [e for e in logs if e.get("error_code") == "NATS_RETRY_PENDING"]
    done = [e for e in logs if e.get("error_code") == "NATS_RETRY_COMPLETE"]
    assert retry[0]["pending_count"] == 500
    assert (done[0]["success_count"], done[0]["failed_count"], done[0]["remaining"]) == (500, 0, 0)


async def test_publishes_during_replay_wait_their_turn(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Made while a replay runs: queued behind its subject's items, order holds; another
    subject's publish goes out at once."""
    link = await make_link(
        [nats_server.url], nats_max_pending_operations=5000, nats_fault_injection_enabled=True
    )
    inbox = await _listening_then_down(link, nats_server, "order.x")
    other = Inbox()
    await link.subscribe("other.x", other)
    for i in range(200):
        await link.publish("order.x", b"q%d" % i)
    link.inject(FaultTarget.PUBLISH, Fault.delay(5))  # a replay of 200 takes about a second
    await nats_server.astart()
    await wait_for(lambda: metric(link, "router_nats_pending_operations_retry_success_total") > 0)
    late = await link.publish("order.x", b"late")
    replaying = link.pending.count  # the replay had started and had not finished
    aside = await link.publish("other.x", b"aside")
    assert (late.outcome, aside.outcome) == (Outcome.QUEUED, Outcome.SENT)
    assert 1 < replaying < 201
    await wait_for(lambda: len(inbox.data) == 201, 10)
    assert inbox.data == [b"q%d" % i for i in range(200)] + [b"late"]
    await wait_for(lambda: other.data == [b"aside"], 5)


async def test_drop_oldest_at_the_limit(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """drop_oldest: the 3 oldest of 8 are dropped and counted; the newest 5 arrive."""
    link = await make_link([nats_server.url], nats_max_pending_operations=5)
    inbox = await _listening_then_down(link, nats_server, "drop.x")
    results = [await link.publish("drop.x", b"%d" % i) for i in range(8)]
    assert {r.outcome for r in results} == {Outcome.QUEUED}
    assert metric(link, "router_nats_pending_operations_dropped_total", reason="queue_full") == 3
    full = [e for e in logs if e.get("error_code") == "NATS_QUEUE_FULL"]
    assert (full[0]["queue_size"], full[0]["max_size"], full[0]["policy"]) == (5, 5, "drop_oldest")
    await nats_server.astart()
    await wait_for(lambda: len(inbox.data) == 5, 5)
    assert inbox.data == [b"3", b"4", b"5", b"6", b"7"]
    assert link.accounting.dropped == 3
    assert link.accounting.balanced(link.pending.count)


async def test_reject_new_at_the_limit(nats_server: NatsServer, make_link: LinkFactory) -> None:
    """reject_new: the 3 newest of 8 are rejected (back-pressure); the oldest 5 arrive."""
    link = await make_link(
        [nats_server.url], nats_max_pending_operations=5, nats_pending_overflow="reject_new"
    )
    inbox = await _listening_then_down(link, nats_server, "rej.x")
    results = [await link.publish("rej.x", b"%d" % i) for i in range(8)]
    assert [r.outcome for r in results] == [Outcome.QUEUED] * 5 + [Outcome.REJECTED] * 3
    assert {r.reason for r in results[5:]} == {Reason.QUEUE_FULL}
    assert metric(link, "router_nats_pending_operations_rejected_total") == 3
    await nats_server.astart()
    await wait_for(lambda: len(inbox.data) == 5, 5)
    assert inbox.data == [b"0", b"1", b"2", b"3", b"4"]


async def test_byte_bound_applies(nats_server: NatsServer, make_link: LinkFactory) -> None:
    """nats_max_pending_bytes bounds the queue; an item larger than it is dropped."""
    link = await make_link([nats_server.url], nats_max_pending_bytes=100)
    await _down(link, nats_server)
    too_big = await link.publish("b.x", b"x" * 200)
    assert (too_big.outcome, too_big.reason) == (Outcome.DROPPED, Reason.QUEUE_FULL)
    for _ in range(5):
        await link.publish("b.x", b"y" * 30)  # 33 bytes each with the subject
    assert link.pending.count == 3
    assert metric(link, "router_nats_pending_operations_bytes") == 99
    assert metric(link, "router_nats_pending_operations_bytes_limit") == 100
    assert metric(link, "router_nats_pending_operations_limit") == 1000
    assert metric(link, "router_nats_pending_operations_dropped_total", reason="queue_full") == 3


async def test_expired_items_are_dropped_and_counted(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """With an expiry, items older than it are dropped (reason expired) before replay."""
    link = await make_link([nats_server.url], nats_pending_operation_timeout_ms=1000)
    inbox = await _listening_then_down(link, nats_server, "exp.x")
    for i in range(3):
        await link.publish("exp.x", b"old%d" % i)
    # Old enough to expire; "fresh" then has a full second to be replayed (a restart and
    # at most one capped backoff take a few hundred milliseconds).
    await asyncio.sleep(1.1)
    await link.publish("exp.x", b"fresh")
    assert metric(link, "router_nats_pending_operations_dropped_total", reason="expired") == 3
    # Expiry runs on each publish and each reconnect attempt, so it may come in batches.
    expired = [e["count"] for e in logs if e.get("error_code") == "NATS_QUEUE_EXPIRED"]
    assert sum(expired) == 3
    await nats_server.astart()
    await wait_for(lambda: inbox.data == [b"fresh"], 5)


async def test_items_without_a_stream_end_failed_and_the_rest_are_sent(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """Queued items no stream captures end failed (counted, logged); the others are stored."""
    await create_stream(nats_server.url, "REPLAY", ["ok.>"])
    link = await make_link([nats_server.url], nats_max_reconnect_delay_ms=5000)
    await _down(link, nats_server)
    for i in range(6):
        subject = "ok.x" if i % 2 == 0 else "nostream.x"  # no stream captures nostream.x
        assert (await link.publish_with_ack(subject, b"%d" % i)).outcome is Outcome.QUEUED
    await nats_server.astart()
    await wait_for(lambda: link.pending.count == 0, 10)
    assert metric(link, "router_nats_pending_operations_retry_success_total") == 3
    assert metric(link, "router_nats_pending_operations_failed_total", reason="no_responders") == 3
    assert codes(logs).count("NATS_PENDING_FAILED") == 1  # a burst: logged once
    stored = await stored_messages(nats_server.url, "REPLAY")
    assert [m.data for m in stored] == [b"0", b"2", b"4"]
    assert (link.accounting.failed, link.accounting.balanced(0)) == (3, True)


async def test_items_refused_for_now_are_retried_while_connected(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Queued items whose sends time out stay queued; once the server answers, sent in order."""
    await create_stream(nats_server.url, "LATER", ["later.>"])
    link = await make_link([nats_server.url], nats_fault_injection_enabled=True)
    await _down(link, nats_server)
    for i in range(3):
        await link.publish_with_ack("later.x", b"%d" % i)
    link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.timeout())
    await nats_server.astart()
    await wait_for(lambda: metric(link, "router_nats_pending_operations_retry_failed_total") >= 2)
    assert link.pending.count == 3
    assert "later.x" in link.status()["pending"]["blocked"]
    link.clear_faults()
    await wait_for(lambda: link.pending.count == 0, 5, "the subject's backoff")
    stored = await stored_messages(nats_server.url, "LATER")
    assert [m.data for m in stored] == [b"0", b"1", b"2"]
    assert link.accounting.balanced(0)


async def test_fail_open_mode_never_queues(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    """nats_fail_open_mode: sent while connected; while down refused at once, nothing kept."""
    link = await make_link([nats_server.url], nats_fail_open_mode=True)
    assert await link.wait_connected(5)
    inbox = Inbox()
    await link.subscribe("open.x", inbox)
    assert (await link.publish("open.x", b"up")).outcome is Outcome.SENT
    await wait_for(lambda: inbox.data == [b"up"], 5)  # core NATS: delivered before the kill
    await _down(link, nats_server)
    results = [
        await link.publish("open.x", b"down"),
        await link.publish_with_ack("open.y", b"down"),
    ]
    assert [r.outcome for r in results] == [Outcome.FAILED_OPEN, Outcome.FAILED_OPEN]
    assert [(r.pub_ack, r.pending_id) for r in results] == [(None, None), (None, None)]
    assert link.pending.count == 0
    assert metric(link, "router_nats_fail_open_total", operation="publish") == 1
    assert metric(link, "router_nats_fail_open_total", operation="publish_with_ack") == 1
    assert codes(logs).count("NATS_PUBLISH_FAIL_OPEN") == 2
    assert link.accounting.failed_open == 2
    assert link.accounting.balanced(0)
    await nats_server.astart()
    await wait_for(lambda: link.ready, 5)
    assert (await link.publish("open.x", b"back")).outcome is Outcome.SENT
    await wait_for(lambda: inbox.data == [b"up", b"back"], 5)


async def test_jetstream_publishes_queued_in_an_outage_are_stored_in_order(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """publish_with_ack during an outage: stored after restart, in order, once each."""
    await create_stream(nats_server.url, "ORDERS", ["orders.>"])
    link = await make_link([nats_server.url])
    await _down(link, nats_server)
    for i in range(50):
        await link.publish_with_ack("orders.new", b"o%d" % i, {"Nats-Msg-Id": f"o-{i}"})
    await nats_server.astart()
    await wait_for(lambda: link.pending.count == 0, 10)
    stored = await stored_messages(nats_server.url, "ORDERS")
    assert [m.data for m in stored] == [b"o%d" % i for i in range(50)]
    assert [m.headers["Nats-Msg-Id"] for m in stored] == [f"o-{i}" for i in range(50)]


async def test_every_accepted_publish_is_accounted_for(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """The ledger against counts taken outside the link: the outcomes the calls returned and
    the messages a stream captured, before the outage and after the replay."""
    from natsrouter.link import Fault, FaultTarget

    await create_stream(nats_server.url, "ACC", ["acc.>"])
    link = await make_link(
        [nats_server.url],
        nats_max_pending_operations=4,
        nats_pending_overflow="reject_new",
        nats_fault_injection_enabled=True,
        nats_fault_injection_token=ADMIN_TOKEN,
    )
    assert await link.wait_connected(5)
    results = [await link.publish("acc.x", b"s%d" % i) for i in range(3)]
    link.inject(FaultTarget.PUBLISH, Fault.error())
    results.append(await link.publish("acc.x", b"fails"))
    link.clear_faults()

    async def captured() -> list[bytes]:
        return [m.data for m in await stored_messages(nats_server.url, "ACC")]

    for _ in range(200):  # core publishes: wait until the stream has the three sent ones
        if len(await captured()) == 3:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the three sent publishes never reached the stream")
    nats_server.kill()
    await wait_for(lambda: not link.ready, 5)
    results += [await link.publish("acc.x", b"q%d" % i) for i in range(6)]
    tally = Counter(r.outcome for r in results)
    assert tally == {Outcome.SENT: 3, Outcome.FAILED: 1, Outcome.QUEUED: 4, Outcome.REJECTED: 2}
    a = link.accounting
    assert (a.accepted, a.sent, a.failed, a.rejected, link.pending.count) == (
        len(results),
        tally[Outcome.SENT],
        tally[Outcome.FAILED],
        tally[Outcome.REJECTED],
        tally[Outcome.QUEUED],
    )
    await nats_server.astart()
    await wait_for(lambda: link.pending.count == 0, 5)
    stored = await captured()
    assert sorted(stored) == sorted([b"s0", b"s1", b"s2", b"q0", b"q1", b"q2", b"q3"])
    assert (a.accepted, a.sent, a.failed, a.rejected) == (len(results), len(stored), 1, 2)
