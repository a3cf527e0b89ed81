"""A subject blocked by a fault limited to it, on a link to a real server: what keeps the block
and what clears it (router_nats_blocked_destinations, /status pending.blocked).

The all-alerts test drives RouterNatsDestinationBlocked with the same fault; these tests pin
the link's side of it: the block holds for as long as the fault does, through many probes,
with the connection up; it clears only once nothing of the subject is queued any more.
"""

from __future__ import annotations

from typing import Any

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import Reason
from natsrouter.link import ConnectionState, Fault, FaultTarget, Link, Outcome
from tests.conftest import LinkFactory
from tests.helpers.jetstream import create_stream, stored_messages
from tests.helpers.observe import codes, metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

SLOW = "slow.x"
# Probes to outlast: with FAST's backoff (50 ms doubling to a 200 ms cap) about 3 s of them.
PROBES = 15


def _failures(link: Link) -> int:
    entry = link.status()["pending"]["blocked"].get(SLOW)
    return 0 if entry is None else int(entry["failures"])


async def _blocked_link(nats_server: NatsServer, make_link: LinkFactory) -> Link:
    """A link whose publishes with ack to ``slow.x`` time out, with 3 of them queued."""
    await create_stream(nats_server.url, "SLOW", ["slow.>"])
    await create_stream(nats_server.url, "FAST", ["fast.>"])
    # No inline retries: the first timeout holds the publish, as on Router F of the alert test.
    link = await make_link(
        [nats_server.url], nats_fault_injection_enabled=True, js_publish_retry_deadline_ms=0
    )
    assert await link.wait_connected(5)
    link.inject(FaultTarget.PUBLISH_WITH_ACK, Fault.timeout().on_subject(SLOW))
    for i in range(3):
        result = await link.publish_with_ack(SLOW, b"%d" % i)
        assert (result.outcome, result.reason) == (Outcome.QUEUED, Reason.TIMEOUT)
    return link


async def test_a_subject_fault_keeps_the_subject_blocked_through_every_probe(
    nats_server: NatsServer, make_link: LinkFactory, logs: list[dict[str, Any]]
) -> None:
    """15 failed probes later the gauge is still 1, 3 items queued, the connection never lost."""
    link = await _blocked_link(nats_server, make_link)
    seen: set[float] = set()

    def probed() -> bool:
        seen.add(metric(link, "router_nats_blocked_destinations"))
        return _failures(link) >= PROBES

    await wait_for(probed, 15, f"{PROBES} failed probes of {SLOW}")
    stored = await link.publish_with_ack("fast.a", b"f")
    assert (
        seen,
        metric(link, "router_nats_blocked_destinations"),
        link.status()["pending"]["blocked"][SLOW]["reason"],
        link.pending.count,
        link.state,
        "NATS_CONNECTION_LOST" in codes(logs),
        stored.outcome,
    ) == ({1.0}, 1.0, "timeout", 3, ConnectionState.CONNECTED, False, Outcome.SENT)


async def test_a_blocked_subject_clears_once_the_fault_is_gone_and_its_items_stored(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Fault cleared: the next probe is stored, the 3 items follow in order, the gauge is 0."""
    link = await _blocked_link(nats_server, make_link)
    await wait_for(lambda: _failures(link) >= 2, 5, f"{SLOW} probed")
    link.clear_faults()
    await wait_for(lambda: link.pending.count == 0, 5, "the subject's items replayed")
    stored = await stored_messages(nats_server.url, "SLOW")
    assert (
        [m.data for m in stored],
        metric(link, "router_nats_blocked_destinations"),
        link.status()["pending"]["blocked"],
    ) == ([b"0", b"1", b"2"], 0.0, {})


async def test_a_blocked_subject_stays_blocked_through_a_reconnect(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Server restarted under the fault: connected again, the gauge never left 1, probes go on."""
    link = await _blocked_link(nats_server, make_link)
    await wait_for(lambda: _failures(link) >= 2, 5, f"{SLOW} probed")
    seen: set[float] = set()

    def sample(condition: bool) -> bool:
        seen.add(metric(link, "router_nats_blocked_destinations"))
        return condition

    nats_server.kill()
    await wait_for(lambda: sample(link.state is not ConnectionState.CONNECTED), 5, "lost")
    await nats_server.astart()
    await wait_for(lambda: sample(link.state is ConnectionState.CONNECTED), 10, "reconnected")
    before = _failures(link)
    await wait_for(lambda: sample(_failures(link) >= before + 3), 5, "probes after reconnecting")
    assert (seen, link.pending.count, list(link.status()["pending"]["blocked"])) == (
        {1.0},
        3,
        [SLOW],
    )
