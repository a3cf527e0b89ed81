"""A per-key memory with expiry, bounded in entries and in bytes: hostile keys cannot grow it.

Every per-key cache of the Router (sticky sessions, remembered decide answers, processed
ack and result keys) takes its keys from clients or workers, who choose how many there are
and how long each is. A bound on entries alone lets a million 256-character keys cost
several times what a million short ones do, so each entry also carries an estimate of its
bytes (its strings' lengths plus ``ENTRY_OVERHEAD`` for the dict slot, tuple and floats),
and the oldest entries go first when either bound is passed. ``touch`` on ``get`` makes the
order least-recently-used instead of oldest-inserted.

A ``put`` that leaves both bounds kept and the oldest entry unexpired has nothing to trim,
and the decide path puts once per request into a memory of up to a million entries: so the
cache remembers the oldest entry's expiry (``_front_expires``) and looks at that entry again
only when the time has passed it, a bound is passed, or the oldest entry may have changed
(any removal or touch forgets it). Same evictions and expiries as walking from the front
on every put.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Bytes an entry costs beyond its strings (CPython 3.11, 64-bit: an OrderedDict node and
#: slot, a tuple of key parts, the (value, expiry, size) tuple and a float): about 320
#: measured by bench/hostile_keys.py; 400 leaves room for the heap's fragmentation, so the
#: RSS growth stays near or below the estimate (docs/performance.md).
ENTRY_OVERHEAD = 400


def text_size(*parts: str) -> int:
    """Bytes of the strings an entry holds (CPython's compact str: ~49 + 1 per ASCII char)."""
    return 49 * len(parts) + sum(map(len, parts))


class BoundedCache(Generic[K, V]):
    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        touch: bool = False,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._touch = touch
        self._entries: OrderedDict[K, tuple[V, float, int]] = OrderedDict()
        #: The entries, expired ones included (read-only to others: ``key not in held`` is
        #: a miss of ``get`` without its call, for the decide path).
        self.held: Mapping[K, tuple[V, float, int]] = self._entries
        self.bytes = 0
        #: The oldest entry's expiry while it is known to be the oldest; None: look again.
        #: A put appends, so only removing or touching an entry can change the oldest.
        self._front_expires: float | None = None
        #: Entries pushed out by a bound before they expired.
        self.evicted = 0

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires, _ = entry
        if self._clock() >= expires:
            self._remove(key)
            return None
        if self._touch:
            self._entries.move_to_end(key)
            self._front_expires = None  # the oldest may have moved to the end
        return value

    def put(self, key: K, value: V, ttl_s: float, size: int) -> None:
        """Remember ``value`` for ``ttl_s``; ``size`` is the entry's estimated bytes."""
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
            self._front_expires = None  # it may have been the oldest
        size += ENTRY_OVERHEAD
        now = self._clock()
        entries[key] = (value, now + ttl_s, size)
        self.bytes += size
        front = self._front_expires
        if (
            front is not None
            and front > now
            and len(entries) <= self.max_entries
            and self.bytes <= self.max_bytes
        ):
            return  # the oldest is unexpired and no bound is passed: _trim would stop at once
        self._trim(now)

    def _remove(self, key: K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]
            self._front_expires = None

    def _trim(self, now: float) -> None:
        """Remove the oldest entries while a bound is passed or the oldest is expired."""
        entries = self._entries
        while entries and (len(entries) > self.max_entries or self.bytes > self.max_bytes):
            _, (_, expires, size) = entries.popitem(last=False)
            self.bytes -= size
            if expires > now:
                self.evicted += 1
        # Within the bounds (removing never passes one): only expired ones go now.
        while entries:
            _, expires, size = next(iter(entries.values()))
            if expires > now:
                self._front_expires = expires
                return
            entries.popitem(last=False)
            self.bytes -= size
        self._front_expires = None

    def keys(self) -> list[K]:
        """Keys held, oldest (or least recently used) first; expired ones included."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
