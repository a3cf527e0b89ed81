"""Per-key memories bounded in entries and bytes, with expiry: the cache and its users."""

from __future__ import annotations

import asyncio

from hypothesis import example, given, settings
from hypothesis import strategies as st

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


class WalkingCache:
    """The cache as it was: every put walks from the oldest entry (the reference)."""

    def __init__(self, max_entries: int, max_bytes: int, clock: Clock, touch: bool) -> None:
        self.max_entries, self.max_bytes, self.clock, self.touch = (
            max_entries,
            max_bytes,
            clock,
            touch,
        )
        self.entries: dict[str, tuple[int, float, int]] = {}
        self.bytes = 0
        self.evicted = 0

    def get(self, key: str) -> int | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if self.clock() >= entry[1]:
            self.bytes -= self.entries.pop(key)[2]
            return None
        if self.touch:
            self.entries[key] = self.entries.pop(key)
        return entry[0]

    def put(self, key: str, value: int, ttl_s: float, size: int) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        now = self.clock()
        self.entries[key] = (value, now + ttl_s, size + ENTRY_OVERHEAD)
        self.bytes += size + ENTRY_OVERHEAD
        while self.entries:
            first, (_, expires, size) = next(iter(self.entries.items()))
            over = len(self.entries) > self.max_entries or self.bytes > self.max_bytes
            if not over and expires > now:
                break
            del self.entries[first]
            self.bytes -= size
            if expires > now:
                self.evicted += 1


_operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "get", "wait"]),
        st.sampled_from("abcd"),
        st.integers(0, 5),  # ttl, or the time waited
        st.integers(0, 300),  # size
    ),
    max_size=60,
)


@settings(max_examples=1000, deadline=None)
# The oldest entry changed by a touch, by its expiry on a get, by a put of its key again.
@example(
    [
        ("put", "a", 5, 0),
        ("put", "b", 1, 0),
        ("get", "a", 0, 0),
        ("wait", "a", 2, 0),
        ("put", "c", 5, 0),
    ],
    5,
    1 << 20,
    True,
)
@example(
    [
        ("put", "a", 1, 0),
        ("put", "b", 5, 0),
        ("wait", "a", 1, 0),
        ("get", "a", 0, 0),
        ("put", "c", 1, 0),
        ("wait", "a", 1, 0),
        ("put", "d", 5, 0),
    ],
    5,
    1 << 20,
    False,
)
@example(
    [
        ("put", "a", 5, 0),
        ("put", "b", 1, 0),
        ("put", "a", 5, 0),
        ("wait", "a", 2, 0),
        ("put", "c", 5, 0),
    ],
    5,
    1 << 20,
    False,
)
@given(
    _operations,
    st.integers(1, 5),
    st.integers(ENTRY_OVERHEAD, 4 * ENTRY_OVERHEAD + 600),
    st.booleans(),
)
def test_puts_that_skip_the_walk_evict_and_expire_as_walking_does(
    operations: list[tuple[str, str, int, int]], max_entries: int, max_bytes: int, touch: bool
) -> None:
    """Any puts, gets (touching or not), waits and bounds: the same entries, bytes,
    evictions and answers as a cache that walks from the oldest entry on every put."""
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(max_entries, max_bytes, clock, touch=touch)
    walking = WalkingCache(max_entries, max_bytes, clock, touch)
    for step, (operation, key, number, size) in enumerate(operations):
        if operation == "put":
            cache.put(key, step, number, size)
            walking.put(key, step, number, size)
        elif operation == "get":
            assert cache.get(key) == walking.get(key)
        else:
            clock.now += number
        assert (cache.keys(), cache.bytes, cache.evicted) == (
            list(walking.entries),
            walking.bytes,
            walking.evicted,
        )


def test_a_put_within_the_bounds_does_not_look_at_the_oldest_entry_again() -> None:
    """Once the oldest entry's expiry is known, puts within the bounds before it add only."""
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(10, 1 << 20, clock)
    cache.put("first", 1, 60, 0)
    walks: list[float] = []
    trim = cache._trim

    def counted(now: float) -> None:
        walks.append(now)
        trim(now)

    cache._trim = counted  # type: ignore[method-assign]
    for i in range(5):
        clock.now = float(i)
        cache.put(f"k{i}", i, 60, 0)
    clock.now = 60.0
    cache.put("late", 9, 60, 0)
    assert (walks, cache.keys()[:2]) == ([60.0], ["k1", "k2"])
