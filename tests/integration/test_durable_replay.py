"""Nothing lost, nothing doubled: the spool across restarts, stable message ids, unsettled sends.

Real nats-server, real SQLite, a real TCP proxy that loses the server's answers, and a real
process killed with SIGKILL while its spool holds work.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import nats
import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import Reason
from natsrouter.link import Link, Outcome
from natsrouter.link.link import MSG_ID
from tests.conftest import LinkFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import codes, metric
from tests.helpers.proxy import TcpProxy
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


def ledger(link: Link) -> dict[str, float]:
    """The exported no-silent-loss ledger of ``link``."""
    out = {
        "accepted": metric(link, "router_nats_publishes_accepted_total"),
        "pending": metric(link, "router_nats_pending_operations_count"),
    }
    for outcome in ("sent", "dropped", "rejected", "failed_open", "failed"):
        out[outcome] = metric(link, "router_nats_publishes_outcome_total", outcome=outcome)
    return out


def balanced(row: dict[str, float]) -> bool:
    settled = sum(v for k, v in row.items() if k not in ("accepted", "pending"))
    return row["accepted"] == settled + row["pending"]


async def test_every_jetstream_publish_carries_a_stable_message_id(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """The link adds Nats-Msg-Id when the caller gave none and keeps the caller's own."""
    await create_stream(nats_server.url, "IDS", ["ids.>"])
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    first = await link.publish_with_ack("ids.a", b"1")
    second = await link.publish_with_ack("ids.a", b"2", {"trace_id": "t-1"})
    own = await link.publish_with_ack("ids.a", b"3", {MSG_ID: "mine-1"})
    again = await link.publish_with_ack("ids.a", b"3 again", {MSG_ID: "mine-1"})
    assert [r.outcome for r in (first, second, own, again)] == [Outcome.SENT] * 4
    assert again.pub_ack is not None and again.pub_ack.duplicate
    stored = await stored_messages(nats_server.url, "IDS")
    assert [m.data for m in stored] == [b"1", b"2", b"3"]
    generated = [stored[0].headers[MSG_ID], stored[1].headers[MSG_ID]]
    prefix = generated[0].rsplit("-", 1)[0]
    assert generated == [f"{prefix}-1", f"{prefix}-2"]
    assert stored[1].headers["trace_id"] == "t-1"
    assert stored[2].headers[MSG_ID] == "mine-1"


async def test_an_unsettled_publish_is_retried_with_its_id_and_stored_once(
    nats_server: NatsServer, proxy: TcpProxy, make_link: LinkFactory
) -> None:
    """The server stores it but the PubAck is lost: retried with the same id until the answer
    comes back (duplicate), within the deadline; the stream holds it once."""
    await create_stream(nats_server.url, "UNSETTLED", ["unsettled.>"])
    link = await make_link(
        [proxy.url],
        nats_request_timeout_ms=300,
        nats_ping_interval_ms=10_000,  # the watchdog stays out of it
        js_publish_retry_deadline_ms=5000,
    )
    assert await link.wait_connected(5)
    proxy.blackhole_replies()
    publishing = asyncio.create_task(link.publish_with_ack("unsettled.a", b"once"))
    await wait_for(lambda: metric(link, "router_nats_publish_with_ack_retries_total") >= 2, 5)
    assert not publishing.done()
    proxy.resume()
    result = await asyncio.wait_for(publishing, 5)
    assert result.outcome is Outcome.SENT
    assert result.pub_ack is not None
    assert (result.pub_ack.stream, result.pub_ack.seq, result.pub_ack.duplicate) == (
        "UNSETTLED",
        1,
        True,
    )
    assert [m.data for m in await stored_messages(nats_server.url, "UNSETTLED")] == [b"once"]
    failures = metric(link, "router_nats_publish_with_ack_failures_total", reason="timeout")
    assert failures == metric(link, "router_nats_publish_with_ack_retries_total") >= 2
    assert balanced(ledger(link)) and ledger(link)["sent"] == 1


async def test_past_the_deadline_it_is_queued_and_the_replay_is_deduplicated(
    nats_server: NatsServer, proxy: TcpProxy, make_link: LinkFactory, logs: list
) -> None:
    """Answers lost longer than the deadline: queued (reason timeout); after a reconnect the
    replay sends it with its id, the server answers duplicate, the stream holds it once."""
    await create_stream(nats_server.url, "LATE", ["late.>"])
    link = await make_link(
        [proxy.url],
        nats_request_timeout_ms=200,
        nats_ping_interval_ms=10_000,
        js_publish_retry_deadline_ms=600,
    )
    assert await link.wait_connected(5)
    proxy.blackhole_replies()
    result = await link.publish_with_ack("late.a", b"once")
    assert (result.outcome, result.reason) == (Outcome.QUEUED, Reason.TIMEOUT)
    proxy.resume()
    await proxy.cut()  # the connection dies; the link reconnects and replays
    await wait_for(lambda: link.pending.count == 0, 10)
    assert [m.data for m in await stored_messages(nats_server.url, "LATE")] == [b"once"]
    assert metric(link, "router_nats_pending_operations_retry_success_total") == 1
    assert "NATS_PUBLISH_WITH_ACK_QUEUED" in codes(logs)
    row = ledger(link)
    assert balanced(row) and (row["accepted"], row["sent"]) == (1, 1)


async def test_fail_open_mode_does_not_retry_an_unsettled_publish(
    nats_server: NatsServer, proxy: TcpProxy, make_link: LinkFactory
) -> None:
    """Fail-open promises publishes never block: one request timeout, then failed_open."""
    await create_stream(nats_server.url, "OPEN", ["open.>"])
    link = await make_link(
        [proxy.url],
        nats_request_timeout_ms=200,
        nats_ping_interval_ms=10_000,
        nats_fail_open_mode=True,
        js_publish_retry_deadline_ms=5000,
    )
    assert await link.wait_connected(5)
    proxy.blackhole_replies()
    result = await link.publish_with_ack("open.a", b"x")
    assert (result.outcome, result.reason) == (Outcome.FAILED_OPEN, Reason.TIMEOUT)
    # One attempt, one request timeout, no retry.
    assert metric(link, "router_nats_publish_with_ack_failures_total", reason="timeout") == 1
    assert metric(link, "router_nats_publish_with_ack_retries_total") == 0


async def test_no_responders_without_a_stream_fails_at_once(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """No stream holds the subject: settled, not retried, not queued."""
    link = await make_link([nats_server.url], js_publish_retry_deadline_ms=30_000)
    assert await link.wait_connected(5)
    result = await asyncio.wait_for(link.publish_with_ack("nostream.a", b"x"), 5)
    assert (result.outcome, result.reason) == (Outcome.FAILED, Reason.NO_RESPONDERS)
    assert metric(link, "router_nats_publish_with_ack_retries_total") == 0
    assert link.pending.count == 0


async def test_the_spool_is_replayed_by_the_next_process_in_order(
    tmp_path: Path, make_link: LinkFactory, logs: list
) -> None:
    """Queued while NATS is down, the link closes; a new link on the same spool sends every
    item once, core and JetStream, each subject in acceptance order."""
    server = NatsServer(store_dir=tmp_path / "js")
    spool = str(tmp_path / "spool.db")
    first = await make_link([server.url], nats_pending_spool_path=spool)
    outcomes = []
    for n in range(40):
        if n % 10 == 9:
            outcomes.append(await first.publish("spool.core", f"{n}".encode()))
        else:
            outcomes.append(await first.publish_with_ack("spool.js", f"{n}".encode()))
    assert {r.outcome for r in outcomes} == {Outcome.QUEUED}
    assert ledger(first) == {
        "accepted": 40,
        "pending": 40,
        "sent": 0,
        "dropped": 0,
        "rejected": 0,
        "failed_open": 0,
        "failed": 0,
    }
    await first.close()

    server.start()
    try:
        await create_stream(server.url, "SPOOL", ["spool.>"])
        second = await make_link([server.url], nats_pending_spool_path=spool)
        recovered = [e for e in logs if e.get("error_code") == "NATS_SPOOL_RECOVERED"]
        assert [(e["count"], e["path"]) for e in recovered] == [(40, spool)]
        await wait_for(lambda: second.pending.count == 0, 10)
        stored = await stored_messages(server.url, "SPOOL")
    finally:
        server.kill()
    numbers = [int(m.data) for m in stored]  # n % 10 == 9 went to spool.core
    assert [n for n in numbers if n % 10 != 9] == [n for n in range(40) if n % 10 != 9]
    assert [n for n in numbers if n % 10 == 9] == [9, 19, 29, 39]
    ids = [m.headers.get(MSG_ID) for m in stored if m.headers.get(MSG_ID)]
    assert len(ids) == len(set(ids)) == 36
    row = ledger(second)
    assert balanced(row) and (row["accepted"], row["sent"], row["pending"]) == (40, 40, 0)
    assert second.status()["pending"]["recovered"] == 40


_CRASHING_PUBLISHER = """
import asyncio, sys
from prometheus_client import CollectorRegistry
from natsrouter.config import build_settings
from natsrouter.link import Link
from natsrouter.observability.metrics import LinkMetrics

async def main(url, spool, count):
    settings = build_settings({"nats_url": url, "nats_pending_spool_path": spool,
                               "nats_reconnect_delay_ms": 50, "nats_max_reconnect_delay_ms": 200})
    link = Link(settings, LinkMetrics(CollectorRegistry()))
    await link.start()
    for n in range(count):
        result = await link.publish_with_ack("crash.js", str(n).encode())
        assert result.outcome.value == "queued", result
    print("queued", link.pending.count, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_a_process_killed_with_sigkill_loses_nothing_from_its_spool(
    tmp_path: Path, make_link: LinkFactory
) -> None:
    """A real process queues 300 publishes in its spool and dies by SIGKILL; the next one
    stores all 300, once each."""
    server = NatsServer(store_dir=tmp_path / "js")
    spool = str(tmp_path / "spool.db")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHING_PUBLISHER,
        server.url,
        spool,
        "300",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = b""
        while not line.startswith(b"queued"):  # structlog's default output shares stdout
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "the publisher exited before queueing"
        assert line.strip() == b"queued 300"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == -signal.SIGKILL

    server.start()
    try:
        await create_stream(server.url, "CRASH", ["crash.>"])
        link = await make_link([server.url], nats_pending_spool_path=spool)
        await wait_for(lambda: link.pending.count == 0, 20)
        stored = await stored_messages(server.url, "CRASH")
    finally:
        server.kill()
    assert [m.data for m in stored] == [str(n).encode() for n in range(300)]
    assert len({m.headers[MSG_ID] for m in stored}) == 300


async def test_a_replay_of_an_item_already_stored_is_dropped_by_the_server(
    tmp_path: Path, make_link: LinkFactory
) -> None:
    """The crash window: an item reached the stream but the process died before removing it
    from the spool. Its replay carries the same id and the stream keeps one copy."""
    server = NatsServer(store_dir=tmp_path / "js")
    spool = str(tmp_path / "spool.db")
    first = await make_link([server.url], nats_pending_spool_path=spool)
    await first.publish_with_ack("window.a", b"landed")
    await first.publish_with_ack("window.a", b"not yet")
    item = first.pending.oldest_after(0)
    assert item is not None and item.op.headers is not None
    await first.close()
    server.start()
    try:
        await create_stream(server.url, "WINDOW", ["window.>"])
        nc = await nats.connect(server.url)
        await nc.jetstream().publish("window.a", b"landed", headers=dict(item.op.headers))
        await nc.close()
        second = await make_link([server.url], nats_pending_spool_path=spool)
        await wait_for(lambda: second.pending.count == 0, 10)
        stored = await stored_messages(server.url, "WINDOW")
    finally:
        server.kill()
    assert [m.data for m in stored] == [b"landed", b"not yet"]
    assert metric(second, "router_nats_pending_operations_retry_success_total") == 2


async def test_an_item_older_than_the_duplicate_window_is_reported_before_it_is_sent(
    nats_server: NatsServer, make_link: LinkFactory, logs: list
) -> None:
    await create_stream(nats_server.url, "SHORT", ["short.>"], duplicate_window_s=1.0)
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    nats_server.kill()
    await wait_for(lambda: not link.ready, 5)
    result = await link.publish_with_ack("short.a", b"old")
    assert result.outcome is Outcome.QUEUED
    await asyncio.sleep(1.3)
    nats_server.start()
    await wait_for(lambda: link.pending.count == 0, 10)
    past = [e for e in logs if e.get("error_code") == "NATS_REPLAY_PAST_DEDUP_WINDOW"]
    assert len(past) == 1
    assert (past[0]["subject"], past[0]["window_ms"]) == ("short.a", 1000)
    assert past[0]["age_ms"] >= 1300
    assert metric(link, "router_nats_pending_operations_past_dedup_window_total") == 1
    assert [m.data for m in await stored_messages(nats_server.url, "SHORT")] == [b"old"]


async def test_a_spool_that_cannot_grow_drops_with_reason_spool_error(
    tmp_path: Path, make_link: LinkFactory, logs: list
) -> None:
    """Disk full (SQLite may not grow the file): the outcome says dropped, counted, logged."""
    server = NatsServer()  # never started
    link = await make_link([server.url], nats_pending_spool_path=str(tmp_path / "spool.db"))
    db = link.pending._db  # type: ignore[attr-defined]
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    result = await link.publish_with_ack("full.a", b"x" * 50_000)
    assert (result.outcome, result.reason) == (Outcome.DROPPED, Reason.SPOOL_ERROR)
    assert metric(link, "router_nats_pending_operations_dropped_total", reason="spool_error") == 1
    errors = [e for e in logs if e.get("error_code") == "NATS_SPOOL_ERROR"]
    assert [(e["action"], e["dropped"]) for e in errors] == [("push", True)]
    row = ledger(link)
    assert balanced(row) and (row["accepted"], row["dropped"]) == (1, 1)
