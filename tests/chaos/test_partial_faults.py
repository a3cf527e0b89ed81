"""Partial faults: one stream down, poison items, a server that accepts and drops.

The whole-server scenarios (test_scenarios.py) prove the link survives NATS going away;
these prove a fault confined to one stream or one kind of item does not stall the rest, and
that a server accepting connections it cannot serve still reaches the exhaustion policy.
Same books: every accepted message stored exactly once, by identity.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import nats
from nats.js.api import StreamConfig

from natsrouter.embedded import NatsServer
from tests.chaos.conftest import RAW_SETTINGS, RigFactory, create_raw_stream, router_env
from tests.chaos.harness import (
    RawLoad,
    Record,
    decide_keys,
    raw_keys,
    read_stream,
    reconcile,
    settle,
)
from tests.chaos.test_scenarios import books, check_router_ledger, figures
from tests.helpers.cluster import NatsCluster
from tests.helpers.dropping_server import DroppingServer
from tests.helpers.observe import metric
from tests.helpers.process import RouterProcess

SLOW_STREAM, SLOW_SUBJECT = "CHAOS_SLOW", "chaos.slow"
POISON_STREAM, POISON_SUBJECT = "CHAOS_POISON", "chaos.poison"


async def _add_stream(urls: list[str], config: StreamConfig) -> str:
    """Create a stream; the name of the server that leads it."""
    nc = await nats.connect(urls, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=10)
        await js.add_stream(config)
        info = await js.stream_info(config.name or "")
        return info.cluster.leader if info.cluster and info.cluster.leader else ""
    finally:
        await nc.close()


async def _lead_elsewhere(urls: list[str], avoid: str, keep: str) -> None:
    """Move the leader of every stream but ``keep`` off the server named ``avoid``."""
    nc = await nats.connect(urls, connect_timeout=2)
    try:
        js = nc.jetstream(timeout=10)
        deadline = time.monotonic() + 30
        for name in [n for n in await js.streams_info() if n.config.name != keep]:
            stream = name.config.name or ""
            while (await js.stream_info(stream)).cluster.leader == avoid:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"{stream} stays led by {avoid}"
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
                await asyncio.sleep(0.5)
    finally:
        await nc.close()


def _latency(records: list[Record], after: float) -> tuple[set[str], float]:
    """Outcomes of the calls made after ``after``, and the slowest one's seconds."""
    late = [r for r in records if r.started >= after]
    return {r.outcome for r in late}, round(max((r.done - r.started for r in late), default=0), 3)


async def test_one_stream_unavailable_while_others_flow(
    tmp_path: Path, make_rig: RigFactory, report: dict[str, Any]
) -> None:
    """6. The node holding an R1 stream dies: its publishes wait, queued, in their own backoff;
    decides, assignments and the other stream's publishes stay sent with bounded latency."""
    cluster = NatsCluster(tmp_path / "cluster")
    await asyncio.to_thread(cluster.start)
    try:
        await cluster.wait_ready()
        await create_raw_stream(cluster.urls, replicas=3)
        leader = await _add_stream(
            cluster.urls,
            StreamConfig(name=SLOW_STREAM, subjects=[SLOW_SUBJECT], duplicate_window=3600),
        )
        victim = cluster.nodes[int(leader.removeprefix("n"))]
        survivors = [n.url for n in cluster.nodes if n is not victim]
        rig = await make_rig(",".join(survivors), survivors, ROUTER_JETSTREAM_STREAM_REPLICAS="3")
        await _lead_elsewhere(survivors, leader, keep=SLOW_STREAM)
        slow = RawLoad(rate=20, link=rig.link, subject=SLOW_SUBJECT)
        rig.start()
        slow.start()
        await rig.steady(3)
        victim.kill()
        killed = time.monotonic()
        await rig.steady(8)
        blocked = rig.link.status()["pending"]["blocked"]
        gauge = metric(rig.link, "router_nats_blocked_destinations")
        held = rig.link.pending.count
        await asyncio.to_thread(victim.start, 20)
        await rig.steady(4)
        await slow.stop()
        assignments, raw = await books(rig, survivors, outage=False)
        await settle(("the slow stream back", lambda: rig.link.pending.count == 0))
        slow_books = reconcile(slow.records, raw_keys(await read_stream(cluster.urls, SLOW_STREAM)))
    finally:
        cluster.kill()
    assert (list(blocked), gauge, held > 0) == ([SLOW_SUBJECT], 1.0, True)
    decide_outcomes, decide_max_s = _latency(rig.decides.records, killed)
    raw_outcomes, raw_max_s = _latency(rig.raw.records, killed)
    assert (decide_outcomes, raw_outcomes) == ({"sent"}, {"sent"})
    assert decide_max_s < 2.0 and raw_max_s < 2.0, (decide_max_s, raw_max_s)
    assert slow.errors == []
    assert (slow_books.lost, slow_books.duplicated, slow_books.refused) == (0, 0, {})
    assert slow_books.during_outage > 0
    check_router_ledger(rig.router, assignments.accepted)
    report["6 one R1 stream's node dies, others flow"] = {
        **figures(assignments, raw, None),
        "slow_stream": slow_books.as_dict(),
        "max_latency_s": {"decide": decide_max_s, "raw": raw_max_s},
    }


class _PoisonLoad(RawLoad):
    """Publishes larger than the poison stream's max_msg_size (its key leads the payload)."""

    async def fire(self, n: int) -> Record | None:
        assert self.link is not None
        started = time.monotonic()
        result = await self.link.publish_with_ack(self.subject, b"%d " % n + b"x" * 200)
        return Record(str(n), result.outcome.value, started, time.monotonic())


async def test_poison_items_end_failed_and_block_nothing(
    server: NatsServer, make_rig: RigFactory, report: dict[str, Any]
) -> None:
    """7. A stream refuses items larger than its max_msg_size: queued ones end failed,
    counted, during the replay of the rest; nothing else is held or lost."""
    await _add_stream(
        [server.url],
        StreamConfig(name=POISON_STREAM, subjects=[POISON_SUBJECT], max_msg_size=64),
    )
    rig = await make_rig(server.url, [server.url])
    poison = _PoisonLoad(rate=20, link=rig.link, subject=POISON_SUBJECT)
    rig.start()
    poison.start()
    await rig.steady(2)
    server.kill()
    await rig.steady(3)
    await asyncio.to_thread(server.start)
    await rig.steady(3)
    await poison.stop()
    assignments, raw = await books(rig, [server.url])
    stored = await read_stream([server.url], POISON_STREAM)
    outcomes = [r.outcome for r in poison.records]
    queued, failed_now = outcomes.count("queued"), outcomes.count("failed")
    link = rig.link
    assert poison.errors == []
    assert set(outcomes) == {"queued", "failed"} and queued > 0 and failed_now > 0
    assert stored == []
    assert link.accounting.failed == queued + failed_now
    assert metric(link, "router_nats_pending_operations_failed_total", reason="server_error") == (
        queued
    )
    assert link.accounting.balanced(0)
    check_router_ledger(rig.router, assignments.accepted)
    report["7 poison items (over max_msg_size)"] = {
        **figures(assignments, raw, None),
        "poison": {"queued_then_failed": queued, "failed_at_once": failed_now, "stored": 0},
    }


async def test_a_server_that_accepts_and_drops_reaches_the_exit_policy(
    server: NatsServer,
    tmp_path: Path,
    routers: list[RouterProcess],
    http: aiohttp.ClientSession,
    report: dict[str, Any],
) -> None:
    """8. The Router's only server accepts TCP and drops each connection: the backoff reaches
    its cap and the exit policy applies; the decides it queued are stored by the next run."""
    dropper = DroppingServer(handshake=True)
    await dropper.start()
    env = router_env(
        tmp_path,
        dropper.url,
        ROUTER_NATS_RECONNECT_ATTEMPTS="6",
        ROUTER_NATS_ON_RECONNECT_EXHAUSTED="exit",
    )
    router = RouterProcess(env, tmp_path)
    routers.append(router)
    started = time.monotonic()
    try:
        await settle(("the Router to be live", lambda: router.get("/health/live")[0] == 200))
        records = await asyncio.gather(*(_decide(router, http, n) for n in range(20)))
        assert router.proc is not None
        code = await asyncio.to_thread(router.proc.wait, 60)
        exited_s = round(time.monotonic() - started, 3)
    finally:
        await dropper.stop()
    lines = router.lines()
    attempts = [line for line in lines if line.get("error_code") == "NATS_RECONNECT_ATTEMPT"]
    exhausted = [line for line in lines if line.get("error_code") == "NATS_RECONNECTION_EXHAUSTED"]
    cap_ms = RAW_SETTINGS["nats_max_reconnect_delay_ms"]
    assert code == 3
    assert [line["attempt"] for line in attempts] == [1, 2, 3, 4, 5, 6]
    assert attempts[-1]["delay_ms"] >= cap_ms * 0.8  # at the cap, less the jitter
    assert [line["policy"] for line in exhausted] == ["exit"]
    assert {r.outcome for r in records} == {"queued"}

    router.env["ROUTER_NATS_URL"] = server.url  # the same spool, a real server
    router.start()
    await settle(("the next run to drain", lambda: router.status()["pending"]["count"] == 0))
    book = reconcile(
        list(records), decide_keys(await read_stream([server.url], "ROUTER_ASSIGNMENTS"))
    )
    assert (book.lost, book.duplicated, book.phantom, book.delivered_after) == (0, 0, 0, 20)
    report["8 server accepts TCP and drops"] = {
        "accepted": book.accepted,
        "accepted_during_outage": book.during_outage,
        "delivered_after": book.delivered_after,
        "lost": book.lost,
        "duplicated": book.duplicated,
        "connections_accepted": dropper.accepted,
        "exit_after_s": exited_s,
        "delays_ms": [line["delay_ms"] for line in attempts],
    }


async def _decide(router: RouterProcess, http: aiohttp.ClientSession, n: int) -> Record:
    body = {
        "version": "1",
        "request_id": f"drop-{n}",
        "tenant_id": "acme",
        "task": {"type": "text", "payload": {"n": n}},
        "push_assignment": True,
    }
    started = time.monotonic()
    async with http.post(router.decide_url, json=body) as resp:
        answer = await resp.json()
    assignment = answer["assignment"]
    return Record(assignment["assignment_id"], assignment["outcome"], started, time.monotonic())
