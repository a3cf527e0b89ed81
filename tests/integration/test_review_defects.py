"""Defects found in review of the link split and the hostile-input work, each against a real
nats-server or a real ``natsrouter run``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import DiscardPolicy, StreamConfig

from natsrouter.embedded import NatsServer, free_port
from natsrouter.errors import Reason
from natsrouter.link import Fault, FaultTarget, Outcome
from tests.conftest import LinkFactory, RouterFactory
from tests.helpers.jetstream import stored_messages
from tests.helpers.observe import codes, rmetric
from tests.helpers.process import RouterProcess
from tests.helpers.waiting import wait_for
from tests.helpers.worker import FakeWorker, result_for
from tests.integration.test_embedded_server import _exists, embedded_env
from tests.integration.test_router_headers import ASSIGNMENT, RESULTS

pytestmark = pytest.mark.integration


async def _full_stream(url: str) -> None:
    """A stream of one message that refuses more (``discard: new``), holding that one."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="FULL", subjects=["full.x"], max_msgs=1, discard=DiscardPolicy.NEW)
        )
        await js.publish("full.x", b"first")
    finally:
        await nc.close()


async def _purge(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().purge_stream("FULL")
    finally:
        await nc.close()


async def test_a_queued_item_refused_by_a_full_stream_stays_queued_until_it_fits(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A queued publish refused with 503 "maximum messages exceeded" is kept, not failed:
    once the stream has room (here: purged) the replay stores it."""
    await _full_stream(nats_server.url)
    link = await make_link([nats_server.url], start=False)
    queued = await link.publish_with_ack("full.x", b"second")  # not connected yet: queued
    assert queued.outcome is Outcome.QUEUED
    await link.start()
    assert await link.wait_connected(5)
    # The replay has tried it and the stream refused it (the subject is blocked).
    await wait_for(lambda: bool(link.status()["pending"]["blocked"]), 5, "a refused replay")
    assert (link.pending.count, link.accounting.failed) == (1, 0)
    await _purge(nats_server.url)
    await wait_for(lambda: link.pending.count == 0, 5, "the replay after the purge")
    assert [m.data for m in await stored_messages(nats_server.url, "FULL")] == [b"second"]
    assert link.accounting.failed == 0


def test_sigterm_while_the_embedded_server_starts_leaves_no_server_behind(
    tmp_path: Path,
) -> None:
    """SIGTERM as soon as the embedded nats-server is spawned (before the Router runs): the
    Router exits 0 and its child is gone too, not left holding the port and the store."""
    router = RouterProcess(embedded_env(tmp_path, free_port()), tmp_path)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while not children and time.monotonic() < deadline and router.alive:
            children = router.nats_children
        assert children, "no embedded nats-server was seen starting"
        os.kill(router.pid, signal.SIGTERM)
        assert router.proc is not None
        assert router.proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(_exists(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in children if _exists(pid)] == []
    finally:
        router.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_sigkilled_router_leaves_no_embedded_server_and_starts_again(tmp_path: Path) -> None:
    """The Router is SIGKILLed (OOM killer, a forced stop): its embedded nats-server goes with
    it, so the next start on the same port and store comes up instead of exiting 4."""
    env = embedded_env(tmp_path, free_port())
    first = RouterProcess(env, tmp_path)
    children: list[int] = []
    second: RouterProcess | None = None
    try:
        deadline = time.monotonic() + 30
        while not first.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        children = first.nats_children
        assert len(children) == 1
        first.kill()
        deadline = time.monotonic() + 10
        while any(_exists(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in children if _exists(pid)] == []
        second = RouterProcess(env, tmp_path)
        deadline = time.monotonic() + 30
        while second.alive and not second.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.ready()
        assert second.stop() == 0
    finally:
        for router in (first, second):
            if router is not None:
                children += router.nats_children
                router.kill()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_a_dead_letter_that_fails_on_the_last_delivery_is_stored_once_it_can_be(
    nats_server: NatsServer, make_router: RouterFactory, logs: list[dict[str, Any]]
) -> None:
    """A result fails until its last allowed delivery, and that delivery's dead letter cannot
    be stored either: it is tried again in place (the message kept in progress) and stored
    once the DLQ takes it, not left unacknowledged forever (billed nowhere, in no DLQ)."""
    router = await make_router(
        [nats_server.url],
        nats_fault_injection_enabled=True,
        js_max_deliver=2,
        js_nak_delay_ms=100,
        js_publish_retry_deadline_ms=0,
    )
    assert await router.link.wait_connected(5)
    router.link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.error(Reason.SERVER_ERROR))
    worker = await FakeWorker.connect(nats_server.url)
    try:
        await worker.publish_raw(RESULTS, json.dumps(result_for(ASSIGNMENT)).encode())
    finally:
        await worker.close()
    await wait_for(lambda: "ROUTER_DLQ_FAILED" in codes(logs), 10, "the failed dead letter")
    router.link.clear_faults()
    await wait_for(
        lambda: rmetric(router, "router_dlq_total", consumer="results", reason="max_deliver") == 1,
        10,
        "the dead letter of the last delivery, tried again",
    )
    [dead] = await stored_messages(nats_server.url, "ROUTER_DLQ")
    assert (dead.headers["dlq_reason"], dead.headers["dlq_num_delivered"]) == ("max_deliver", "2")


def test_a_stranger_on_the_embedded_port_after_a_crash_is_never_used(tmp_path: Path) -> None:
    """The embedded server dies and another nats-server takes its port before the restart: the
    Router does not become ready on that server (its queue must not go to a foreign store)."""
    port = free_port()
    slow = {"ROUTER_NATS_RECONNECT_DELAY_MS": "1500", "ROUTER_NATS_MAX_RECONNECT_DELAY_MS": "3000"}
    router = RouterProcess(embedded_env(tmp_path, port, **slow), tmp_path)
    stranger = NatsServer(port=port, store_dir=tmp_path / "stranger")
    try:
        deadline = time.monotonic() + 30
        while not router.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        [child] = router.nats_children
        os.kill(child, signal.SIGKILL)
        stranger.start()
        deadline = time.monotonic() + 10
        ready_on_stranger = False
        while not ready_on_stranger and time.monotonic() < deadline:
            ready_on_stranger = router.ready()
            time.sleep(0.1)
        assert not ready_on_stranger
    finally:
        router.kill()
        stranger.kill()
