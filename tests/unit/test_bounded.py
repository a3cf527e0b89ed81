"""Per-key memories bounded in entries and bytes, with expiry: the cache and its users."""

from __future__ import annotations

import asyncio

from natsrouter.routing.bounded import ENTRY_OVERHEAD, BoundedCache, text_size
from natsrouter.routing.decider import Decision, DecisionReason
from natsrouter.service.idempotency import IdempotencyWindow
from natsrouter.service.remembered import DecideMemory, Remembered


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_their_ttl() -> None:
    """A value is there until its TTL has passed, then gone."""
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(10, 10_000, clock)
    cache.put("k", 1, 5, 0)
    clock.now = 4.9
    assert cache.get("k") == 1
    clock.now = 5.0
    assert (cache.get("k"), len(cache), cache.bytes) == (None, 0, 0)


def test_the_byte_bound_evicts_the_oldest_first() -> None:
    """Long keys fill the byte bound before the entry bound: the oldest go."""
    cache: BoundedCache[str, int] = BoundedCache(1000, 3 * (ENTRY_OVERHEAD + 1049), Clock())
    for i in range(5):
        key = f"{i}" + "x" * 999
        cache.put(key, i, 60, text_size(key))
    assert [k[0] for k in list(cache.keys())] == ["2", "3", "4"]
    assert cache.bytes <= cache.max_bytes
    assert cache.evicted == 2


def test_touch_makes_the_order_least_recently_used() -> None:
    """With touch, a read keeps an entry; the untouched one is evicted."""
    cache: BoundedCache[str, int] = BoundedCache(2, 1 << 20, Clock(), touch=True)
    cache.put("a", 1, 60, 0)
    cache.put("b", 2, 60, 0)
    assert cache.get("a") == 1
    cache.put("c", 3, 60, 0)
    assert cache.keys() == ["a", "c"]


def test_idempotency_window_forgets_after_the_ttl() -> None:
    """A processed key is seen within idempotency_ttl_seconds, not after."""
    clock = Clock()
    window = IdempotencyWindow(10, clock)
    window.record("result\x1facme\x1fr-1")
    assert window.seen("result\x1facme\x1fr-1")
    clock.now = 10.0
    assert not window.seen("result\x1facme\x1fr-1")


def test_remembered_decisions_expire_with_the_ttl() -> None:
    """A decide repeated after idempotency_ttl_seconds is a new request."""
    clock = Clock()
    memory = DecideMemory(3600, clock)
    decision = Decision("a", DecisionReason.WEIGHTED, "default", 0, None, None)

    async def remember() -> None:
        memory.begin(("acme", "r"))
        memory.remember(("acme", "r"), Remembered(("default",), decision))
        memory.end(("acme", "r"))

    asyncio.run(remember())
    clock.now = 3599.0
    assert memory.get(("acme", "r")) is not None
    assert memory.get(("globex", "r")) is None
    clock.now = 3600.0
    assert memory.get(("acme", "r")) is None
