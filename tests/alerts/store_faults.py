"""The scenario of tests/alerts/test_alerts_fire.py for the alerts on what the Router stores
beside its work: the shared-state buckets and the dead-letter stream.

Router H (``shared_state_enabled``, its own nats-server) decides without pause while both
faults are made on the server, as an operator's mistake would make them:

- the bucket ``ROUTER_DECIDES`` is deleted: every decide's claim fails (no stream holds the
  subject), the Router decides with its own state (RouterSharedStateDegraded); the bucket
  is created again with its configuration to remove the fault;
- the ``ROUTER_DLQ`` stream's ``max_msg_size`` is cut to 4 bytes and a malformed result
  arrives: its dead letter is refused at each delivery, then retried in place on the last
  one (RouterDeadLetterNotStored); the limit is lifted to remove the fault, and the dead
  letter is stored.
"""

from __future__ import annotations

import asyncio
import threading

import nats
from nats.js.api import StreamConfig

from tests.alerts.stack import decide_http
from tests.alerts.stream_faults import set_max_msg_size
from tests.alerts.watch import Watch
from tests.helpers.process import RouterProcess

BUCKET = "ROUTER_DECIDES"
STREAM = f"KV_{BUCKET}"
RESULT_SUBJECT = "caf.exec.result.v1"


async def _delete_bucket(url: str) -> StreamConfig:
    """Delete the bucket's stream; its configuration, to create it again."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        config = (await js.stream_info(STREAM)).config
        assert await js.delete_stream(STREAM)
    finally:
        await nc.close()
    return config


async def _restore_bucket(url: str, config: StreamConfig) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(config)
    finally:
        await nc.close()


async def _publish_malformed(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().publish(RESULT_SUBJECT, b"not json")
    finally:
        await nc.close()


def _decides(router: RouterProcess, stop: threading.Event) -> threading.Thread:
    """Decides with an assignment, about ten a second, until ``stop``: each claims its
    answer in the bucket, and the assignments keep JetStream publishes succeeding."""

    def run() -> None:
        n = 0
        while not stop.wait(0.1):
            n += 1
            decide_http(router, f"h{n}")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def store_faults(router: RouterProcess, url: str, instance: str, watch: Watch) -> None:
    h = router
    shared, dlq = "RouterSharedStateDegraded", "RouterDeadLetterNotStored"
    stop = threading.Event()
    traffic = _decides(h, stop)
    try:
        h.wait(lambda: h.status()["shared_state"]["available"] is True, what="buckets answer")
        watch.fault([shared], instance, f"bucket {BUCKET} deleted on the server, 10 decides/s")
        bucket = asyncio.run(_delete_bucket(url))
        h.wait(lambda: h.metric("router_shared_state_available") == 0, what="unavailable")

        asyncio.run(set_max_msg_size(url, "ROUTER_DLQ", 4))
        watch.fault([dlq], instance, "ROUTER_DLQ max_msg_size 4, a malformed result")
        asyncio.run(_publish_malformed(url))
        h.wait(lambda: h.metric("router_dlq_failures_total", consumer="results") >= 1)
        watch.fired([shared, dlq], instance)
        # Both resolve within seconds of their fault's removal: a notification must have
        # reached its receiver first (Alertmanager's group wait).
        watch.notified([shared, dlq], instance)

        asyncio.run(_restore_bucket(url, bucket))
        asyncio.run(set_max_msg_size(url, "ROUTER_DLQ", -1))
        watch.cleared([shared, dlq], instance)
        h.wait(lambda: h.metric("router_shared_state_available") == 1, what="buckets answer")
        h.wait(
            lambda: h.metric("router_dlq_total", consumer="results", reason="invalid") == 1,
            what="the dead letter stored",
        )
        assert h.status()["shared_state"]["last_error"] == "decision_claim: no_responders"
    finally:
        stop.set()
        traffic.join(30)
    watch.resolved([shared, dlq], instance)
