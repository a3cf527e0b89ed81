"""Key-value buckets through the link, against a real nats-server."""

from __future__ import annotations

import asyncio

import pytest

from natsrouter.embedded import NatsServer
from natsrouter.errors import NotConnectedError
from natsrouter.link.transport import BucketSpec
from tests.conftest import LinkFactory
from tests.helpers.jetstream import BucketFacts, bucket_facts
from tests.helpers.observe import metric

pytestmark = pytest.mark.integration


async def test_a_declared_bucket_is_created_with_its_ttl_and_replicas(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """declare_bucket creates KV_<name> with the TTL, one replica and a history of one."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    await link.declare_bucket(BucketSpec("shared_test", ttl_s=30.0, replicas=1))
    assert await bucket_facts(nats_server.url, "shared_test") == BucketFacts(30.0, 1, 1)


async def test_a_bucket_declared_before_connecting_is_created_on_connect(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """A bucket declared while not connected exists once the link says it is connected."""
    link = await make_link([nats_server.url], start=False)
    await link.declare_bucket(BucketSpec("early", ttl_s=5.0))
    await link.start()
    assert await link.wait_connected(5)
    assert await bucket_facts(nats_server.url, "early") == BucketFacts(5.0, 1, 1)


async def test_create_is_won_once_and_get_reads_the_winner(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """Two links racing kv_create on one key: one revision, one None; both read the winner."""
    first = await make_link([nats_server.url])
    second = await make_link([nats_server.url])
    assert await first.wait_connected(5) and await second.wait_connected(5)
    await first.declare_bucket(BucketSpec("race"))
    await second.declare_bucket(BucketSpec("race"))
    revisions = await asyncio.gather(
        first.kv_create("race", "k", b"one"), second.kv_create("race", "k", b"two")
    )
    assert sorted(r is None for r in revisions) == [False, True]
    winner = b"one" if revisions[0] is not None else b"two"
    entry = await second.kv_get("race", "k")
    assert entry is not None and entry.value == winner
    assert metric(first, "router_nats_kv_create_total") == 1
    assert metric(first, "router_nats_kv_create_failures_total", reason="server_error") == 0


async def test_put_overwrites_and_get_of_a_missing_key_is_none(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """kv_put replaces a value (revision grows); a key never written reads as None."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    await link.declare_bucket(BucketSpec("puts"))
    one = await link.kv_put("puts", "k", b"1")
    two = await link.kv_put("puts", "k", b"2")
    entry = await link.kv_get("puts", "k")
    assert two > one and entry is not None and (entry.value, entry.revision) == (b"2", two)
    assert await link.kv_get("puts", "absent") is None
    assert metric(link, "router_nats_kv_get_total") == 2


async def test_a_kv_operation_while_not_connected_raises_not_connected_and_is_counted(
    make_link: LinkFactory,
) -> None:
    """No connection: NotConnectedError at once, counted as a kv_get failure."""
    link = await make_link(["nats://127.0.0.1:1"], start=False)
    with pytest.raises(NotConnectedError):
        await link.kv_get("any", "k")
    assert metric(link, "router_nats_kv_get_failures_total", reason="not_connected") == 1


async def test_update_is_stored_only_at_the_revision_it_names(
    nats_server: NatsServer, make_link: LinkFactory
) -> None:
    """kv_update at the current revision stores; at an older one it is None, value kept."""
    link = await make_link([nats_server.url])
    assert await link.wait_connected(5)
    await link.declare_bucket(BucketSpec("updates"))
    first = await link.kv_create("updates", "k", b"1")
    assert first is not None
    second = await link.kv_update("updates", "k", b"2", first)
    assert second is not None and second > first
    assert await link.kv_update("updates", "k", b"stale", first) is None
    entry = await link.kv_get("updates", "k")
    assert entry is not None and entry.value == b"2"
    assert metric(link, "router_nats_kv_update_total") == 2
