"""Which acks and results this process has already processed, for ``idempotency_ttl_seconds``.

A key is recorded only after everything the message caused has succeeded, so a message that
was nak'd is really processed again. Bounded: past ``max_keys`` the oldest keys go first.
Per process; across Router processes the usage stream's duplicate window (the same TTL) makes
the server drop a second UsageEvent for the same result, which the consumer then counts as a
duplicate.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

_MAX_KEYS = 1_000_000


class IdempotencyWindow:
    def __init__(
        self,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = _MAX_KEYS,
    ) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._max = max_keys
        self._seen: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first

    def seen(self, key: str) -> bool:
        self._evict()
        return key in self._seen

    def record(self, key: str) -> None:
        self._seen[key] = self._clock() + self._ttl
        self._seen.move_to_end(key)
        self._evict()

    def _evict(self) -> None:
        now = self._clock()
        while self._seen:
            key, expiry = next(iter(self._seen.items()))
            if expiry > now and len(self._seen) <= self._max:
                break
            del self._seen[key]

    def __len__(self) -> int:
        return len(self._seen)
