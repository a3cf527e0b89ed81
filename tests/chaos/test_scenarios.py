"""Five ways NATS fails under a steady load; in each, nothing accepted is lost or doubled.

A real `natsrouter run` process answers decide requests with assignments (JetStream, with
its SQLite spool) and a link in the test process publishes raw messages with PubAck, both at
a steady rate, while a scenario kills nats-server, black-holes the TCP link, loses a cluster
node, kills the Router itself, or flaps the server. Then the streams are read back and every
accepted message must be there exactly once (by assignment id, by sequence number); the
Router's counters and log codes must tell the same story.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from natsrouter.embedded import NatsServer
from tests.chaos.conftest import RAW_STREAM, Rig, RigFactory, create_raw_stream
from tests.chaos.harness import (
    Books,
    decide_keys,
    raw_keys,
    read_stream,
    reconcile,
    replay_rates,
    settle,
)
from tests.helpers.cluster import NatsCluster
from tests.helpers.process import RouterProcess
from tests.helpers.proxy import TcpProxy


async def books(rig: Rig, servers: list[str], *, outage: bool = True) -> tuple[Books, Books]:
    """Drain both queues, read both streams back, settle the books; assert no loss.

    With ``outage`` (the default) both loads must have had items queued during it."""
    await rig.stop()
    await settle(
        ("the Router's queue to drain", lambda: rig.router.status()["pending"]["count"] == 0),
        ("the raw link's queue to drain", lambda: rig.link.pending.count == 0),
    )
    assignments = reconcile(
        rig.decides.records, decide_keys(await read_stream(servers, "ROUTER_ASSIGNMENTS"))
    )
    raw = reconcile(rig.raw.records, raw_keys(await read_stream(servers, RAW_STREAM)))
    assert rig.decides.errors == []
    assert rig.raw.errors == []
    for name, book in (("assignments", assignments), ("raw", raw)):
        assert (book.lost, book.duplicated, book.phantom, book.refused) == (0, 0, 0, {}), (
            name,
            book,
        )
        assert book.during_outage > 0 or not outage, f"no {name} were accepted during the outage"
        assert book.delivered_after == book.during_outage
    return assignments, raw


def check_outages(router: RouterProcess, outages: int, assignments: Books) -> None:
    """Each outage counted once, lost and restored; every queued assignment replayed once."""
    assert router.metric("router_nats_connection_lost_total") == outages
    assert router.metric("router_nats_connection_restored_total") == outages
    replayed = router.metric("router_nats_pending_operations_retry_success_total")
    assert replayed == assignments.during_outage
    check_router_ledger(router, assignments.accepted)


def check_router_ledger(router: RouterProcess, accepted: int) -> None:
    """The Router's own ledger: every accepted publish sent, none pending, none elsewhere."""
    m = router.metrics()

    def value(name: str, **labels: str) -> float:
        return m.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("router_nats_publishes_accepted_total") == accepted
    assert value("router_nats_publishes_outcome_total", outcome="sent") == accepted
    assert value("router_nats_pending_operations_count") == 0
    for outcome in ("dropped", "rejected", "failed_open", "failed"):
        assert value("router_nats_publishes_outcome_total", outcome=outcome) == 0


def figures(
    assignments: Books, raw: Books, recovery_s: float | None, **more: Any
) -> dict[str, Any]:
    return {
        "recovery_s": recovery_s,
        "accepted": assignments.accepted + raw.accepted,
        "accepted_during_outage": assignments.during_outage + raw.during_outage,
        "delivered_after": assignments.delivered_after + raw.delivered_after,
        "lost": assignments.lost + raw.lost,
        "duplicated": assignments.duplicated + raw.duplicated,
        **more,
    }


def best_replay(router: RouterProcess) -> dict[str, float] | None:
    rates = replay_rates(router)
    return max(rates, key=lambda r: r["sent"]) if rates else None


async def test_server_sigkill_and_restart(
    server: NatsServer,
    make_rig: RigFactory,
    report: dict[str, Any],
) -> None:
    """1. nats-server is SIGKILLed under load and restarted 4 s later on its JetStream store."""
    rig = await make_rig(server.url, [server.url])
    rig.start()
    await rig.steady(3)
    server.kill()
    await rig.steady(4)
    await asyncio.to_thread(server.start)
    available = time.monotonic()
    await rig.steady(4)
    assignments, raw = await books(rig, [server.url])
    router = rig.router
    check_outages(router, 1, assignments)
    assert router.metric("router_nats_reconnect_attempts_total") >= 1
    queued = assignments.during_outage
    assert router.metric("router_assignments_total", outcome="queued") == queued
    codes = router.codes()
    for code in ("NATS_CONNECTION_LOST", "NATS_CONNECTION_RESTORED", "NATS_RETRY_COMPLETE"):
        assert code in codes
    report["1 server SIGKILL + restart"] = figures(
        assignments, raw, rig.decides.first_sent_after(available), replay=best_replay(router)
    )


async def test_blackhole_for_ten_seconds(
    server: NatsServer,
    proxy: TcpProxy,
    make_rig: RigFactory,
    report: dict[str, Any],
) -> None:
    """2. A proxy between Router and server swallows all traffic for 10 s (a half-open link)."""
    rig = await make_rig(proxy.url, [proxy.url])
    rig.start()
    await rig.steady(3)
    proxy.blackhole()
    await rig.steady(10)
    proxy.resume()
    available = time.monotonic()
    await rig.steady(4)
    assignments, raw = await books(rig, [server.url])
    router = rig.router
    check_outages(router, 1, assignments)
    # Found by the Router's own pings, not by TCP: no reset ever comes.
    assert router.metric("router_nats_reconnect_failures_total", reason="timeout") >= 1
    lost = [line for line in router.lines() if line.get("error_code") == "NATS_CONNECTION_LOST"]
    assert [line["reason"] for line in lost] == ["connection_closed"]
    assert "no answer to 2 pings" in lost[0]["error"]
    report["2 black-hole 10 s"] = figures(
        assignments, raw, rig.decides.first_sent_after(available), replay=best_replay(router)
    )


async def test_cluster_loses_the_connected_node(
    tmp_path: Path,
    make_rig: RigFactory,
    report: dict[str, Any],
) -> None:
    """3. A three-node cluster with R3 streams loses the node the Router is connected to."""
    cluster = NatsCluster(tmp_path / "cluster")
    await asyncio.to_thread(cluster.start)
    try:
        await cluster.wait_ready()
        await create_raw_stream(cluster.urls, replicas=3)
        rig = await make_rig(
            ",".join(cluster.urls),
            cluster.urls,
            ROUTER_JETSTREAM_STREAM_REPLICAS="3",
        )
        rig.start()
        await rig.steady(3)
        connected = rig.router.status()["server"]
        victim = cluster.node_for(connected)
        victim.kill()
        killed_at = time.monotonic()
        await rig.steady(8)
        survivors = [n.url for n in cluster.nodes if n.running]
        assignments, raw = await books(rig, survivors)
        router = rig.router
        assert router.metric("router_nats_connection_lost_total") == 1
        assert router.metric("router_nats_connection_restored_total") == 1
        assert router.status()["server"] in survivors
        check_router_ledger(router, assignments.accepted)
        report["3 R3 cluster loses the connected node"] = figures(
            assignments,
            raw,
            rig.decides.first_sent_after(killed_at),
            unsettled_retries=router.metric("router_nats_publish_with_ack_retries_total"),
            replay=best_replay(router),
        )
    finally:
        cluster.kill()


async def test_router_sigkilled_with_a_full_spool_and_again_mid_replay(
    server: NatsServer,
    make_rig: RigFactory,
    report: dict[str, Any],
) -> None:
    """4. The Router is SIGKILLed with assignments in its spool, restarted, SIGKILLed again in
    the middle of the replay, restarted: every assignment stored once."""
    rig = await make_rig(server.url, [server.url])
    router = rig.router
    rig.start()
    await rig.steady(2)
    server.kill()
    rig.decides.rate = 200  # fill the spool
    await rig.steady(4)
    await rig.decides.stop()  # no decide in flight when the Router dies
    queued = sum(1 for r in rig.decides.records if r.outcome == "queued")
    assert router.status()["pending"]["count"] == queued > 300

    router.kill()
    # One PubAck at a time (and a delay below) so the next kill lands in the middle of it.
    router.env["ROUTER_NATS_REPLAY_MAX_IN_FLIGHT"] = "1"
    router.start()  # NATS still down: the spool is read, nothing can be sent
    await settle(("the second Router", lambda: router.get("/health/live")[0] == 200), timeout_s=30)
    assert router.status()["pending"]["recovered"] == queued
    recovered = [
        line for line in router.lines() if line.get("error_code") == "NATS_SPOOL_RECOVERED"
    ]
    assert [line["count"] for line in recovered] == [queued]
    # Slow the replay down so the next kill lands in the middle of it.
    code, body = router.post(
        "/admin/faults",
        {"target": "publish_with_ack", "fault": {"kind": "delay", "delay_ms": 10}},
    )
    assert code == 200, body
    await asyncio.to_thread(server.start)

    async def replay_half_done() -> bool:
        stored = len(await read_stream([server.url], "ROUTER_ASSIGNMENTS"))
        sent_before = sum(1 for r in rig.decides.records if r.outcome == "sent")
        return stored >= sent_before + queued // 4

    await settle(("a quarter of the replay", replay_half_done), timeout_s=30)
    router.kill()  # its spool keeps what it had not sent yet
    del router.env["ROUTER_NATS_REPLAY_MAX_IN_FLIGHT"]  # the third replays at full speed
    restarted = time.monotonic()
    router.start()
    await settle(("the third Router", router.ready), timeout_s=30)
    ready_s = round(time.monotonic() - restarted, 3)
    rig.decides.rate = 50
    third_started = time.monotonic()
    rig.decides.start()
    await rig.steady(3)
    assignments, raw = await books(rig, [server.url])
    # The third process balances its own books: recovered + new = sent.
    third = router.metrics()
    recovered_now = router.status()["pending"]["recovered"]
    assert 0 < recovered_now < queued
    new_decides = sum(1 for r in rig.decides.accepted() if r.started >= third_started)
    assert third[("router_nats_publishes_accepted_total", ())] == recovered_now + new_decides
    assert third[("router_nats_publishes_outcome_total", (("outcome", "sent"),))] == (
        recovered_now + new_decides
    )
    report["4 Router SIGKILL with spool (twice)"] = figures(
        assignments,
        raw,
        # From the third process answering: its spool is replayed first.
        rig.decides.first_sent_after(third_started),
        restart_to_ready_s=ready_s,
        spooled_at_kill=queued,
        recovered_after_second_kill=recovered_now,
        replay=best_replay(router),
    )


@pytest.mark.timeout(300)
async def test_server_flaps_five_times_in_a_minute(
    server: NatsServer,
    make_rig: RigFactory,
    report: dict[str, Any],
) -> None:
    """5. nats-server dies and comes back five times within a minute, under load."""
    rig = await make_rig(server.url, [server.url])
    rig.start()
    started = time.monotonic()
    recoveries = []
    for _ in range(5):
        await rig.steady(2)
        server.kill()
        await rig.steady(2)
        await asyncio.to_thread(server.start)
        back = time.monotonic()
        await rig.steady(3)
        recoveries.append(rig.decides.first_sent_after(back))
    assert time.monotonic() - started < 60
    await rig.steady(1)
    assignments, raw = await books(rig, [server.url])
    router = rig.router
    check_outages(router, 5, assignments)
    assert router.metric("router_nats_outage_duration_seconds_count") == 5
    assert all(r is not None for r in recoveries)
    report["5 five flaps in a minute"] = figures(
        assignments,
        raw,
        max(r for r in recoveries if r is not None),
        recoveries_s=recoveries,
        replay=best_replay(router),
    )
