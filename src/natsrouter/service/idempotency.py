"""Which acks and results this process has already processed, for ``idempotency_ttl_seconds``.

A key is recorded only after everything the message caused has succeeded, so a message that
was nak'd is really processed again. Keys are scoped by tenant (two tenants may use the same
``request_id``). Bounded in keys and in bytes (``routing.bounded``): past either bound the
oldest keys go first. Per process; across Router processes the usage stream's duplicate
window (the same TTL) makes the server drop a second UsageEvent for the same result, which
the consumer then counts as a duplicate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from natsrouter.routing.bounded import BoundedCache, text_size

MAX_KEYS = 1_000_000
MAX_BYTES = 256 * 1024 * 1024


class IdempotencyWindow:
    def __init__(
        self,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._ttl = ttl_seconds
        self._seen: BoundedCache[str, bool] = BoundedCache(max_keys, max_bytes, clock)

    def seen(self, key: str) -> bool:
        return self._seen.get(key) is not None

    def record(self, key: str) -> None:
        self._seen.put(key, True, self._ttl, text_size(key))

    def __len__(self) -> int:
        return len(self._seen)
