"""9. Three Routers sharing state on an R3 cluster: one Router, then one node, SIGKILLed.

Three `natsrouter run` processes (``shared_state_enabled``, R3 streams and buckets) answer a
steady decide load spread over them, as a load balancer would. The first Router's pushes are
slowed (an injected 2 s delay) and it is SIGKILLed with decides in flight: their clients get
no answer and send the same request to the next Router, which must give the same assignment
(shared idempotency) and store it once. Then one node of the cluster is SIGKILLed. The
assignments stream is read back and the books settled by assignment id: every accepted
assignment stored once, nothing stored that nobody accepted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.chaos.conftest import router_env
from tests.chaos.harness import Record, _Paced, decide_keys, read_stream, reconcile, settle
from tests.helpers.cluster import NatsCluster, running_cluster
from tests.helpers.process import RouterProcess

POLICY = {
    "providers": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}],
    "sticky": {"enabled": True},
}
RATE = 30  # decides per second, over the three Routers


@dataclass
class SpreadDecideLoad(_Paced):
    """Decide n goes to Router n % 3; with no answer, the same request to the next one."""

    routers: list[RouterProcess] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    #: Decides answered by another Router after theirs gave no answer.
    retried_elsewhere: int = 0

    async def fire(self, n: int) -> Record | None:
        assert self.session is not None
        body = {
            "version": "1",
            "request_id": f"many-{n}",
            "tenant_id": "acme",
            "task": {"type": "text", "payload": {"n": n}},
            "metadata": {"session_id": f"session-{n % 20}"},
            "push_assignment": True,
        }
        started = time.monotonic()
        unanswered = False
        for attempt in range(2 * len(self.routers)):
            router = self.routers[(n + attempt) % len(self.routers)]
            if not router.alive:
                continue
            try:
                async with self.session.post(router.decide_url, json=body) as resp:
                    answer = await resp.json()
            except (aiohttp.ClientError, TimeoutError):
                unanswered = True  # the Router died under the request: try the next
                continue
            if resp.status != 200:
                raise AssertionError(f"decide answered {resp.status}: {answer}")
            self.retried_elsewhere += unanswered
            assignment = answer["assignment"]
            return Record(
                assignment["assignment_id"], assignment["outcome"], started, time.monotonic()
            )
        raise AssertionError(f"no Router answered decide {n}")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with running_cluster(tmp_path / "cluster", name="many") as nodes:
        yield nodes


@pytest.fixture
async def three(cluster: NatsCluster, tmp_path: Path) -> AsyncIterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    try:
        for i in range(3):
            home = tmp_path / f"router{i}"
            policy = home / "policies" / "acme" / "default.json"
            policy.parent.mkdir(parents=True)
            policy.write_text(json.dumps(POLICY))
            urls = cluster.urls[i:] + cluster.urls[:i]  # each first tries another node
            env = router_env(
                home,
                ",".join(urls),
                ROUTER_JETSTREAM_STREAM_REPLICAS="3",
                ROUTER_SHARED_STATE_ENABLED="true",
                # Two shared cores: an R3 write can take longer than the 1 s default.
                ROUTER_SHARED_STATE_TIMEOUT_MS="3000",
            )
            started.append(RouterProcess(env, home))
        for router in started:
            await settle(("a Router to be ready", router.ready), timeout_s=60)
        yield started
    finally:
        for router in started:
            router.kill()


async def steady(routers: list[RouterProcess], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert any(r.alive for r in routers), "every Router died"
        await asyncio.sleep(0.1)


async def test_one_router_then_one_node_sigkilled_under_load(
    cluster: NatsCluster, three: list[RouterProcess], report: dict[str, Any]
) -> None:
    """Every accepted assignment stored once, a retried decide included; none phantom."""
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        load = SpreadDecideLoad(rate=RATE, routers=three, session=session)
        load.start()
        await steady(three, 3)
        # Router 0's pushes now wait 2 s: its decides are in flight (claimed in the bucket,
        # the assignment maybe not stored) when it dies, and their clients try elsewhere.
        code, body = three[0].post(
            "/admin/faults",
            {"target": "publish_with_ack", "fault": {"kind": "delay", "delay_ms": 2000}},
        )
        assert code == 200, body
        await steady(three, 1)
        three[0].kill()
        await steady(three, 3)
        connected = three[1].status()["server"]
        victim = cluster.node_for(connected)
        victim.kill()
        killed_at = time.monotonic()
        await steady(three, 8)
        await load.stop()
    survivors = [r for r in three if r.alive]
    await settle(
        *(
            (f"Router {r.pid}'s queue to drain", lambda r=r: r.status()["pending"]["count"] == 0)
            for r in survivors
        ),
        timeout_s=60,
    )
    servers = [n.url for n in cluster.nodes if n.running]
    book = reconcile(load.records, decide_keys(await read_stream(servers, "ROUTER_ASSIGNMENTS")))
    assert load.errors == []
    assert (book.lost, book.duplicated, book.phantom, book.refused) == (0, 0, 0, {}), book
    assert book.accepted == len(load.records) > 300
    assert load.retried_elsewhere >= 5  # 10 a second were held on Router 0 when it died
    unavailable = sum(
        r.metric("router_shared_state_unavailable_total", operation=op)
        for r in survivors
        for op in ("decision_claim", "sticky_read", "sticky_claim")
    )
    report["9 three Routers: one SIGKILLed, then a node"] = {
        "accepted": book.accepted,
        "accepted_during_outage": book.during_outage,
        "delivered_after": book.delivered_after,
        "lost": book.lost,
        "duplicated": book.duplicated,
        "retried_on_another_router": load.retried_elsewhere,
        "decided_without_shared_state": unavailable,
        "first_sent_after_node_loss_s": load.first_sent_after(killed_at),
    }
