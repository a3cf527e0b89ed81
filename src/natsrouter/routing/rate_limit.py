"""Rate limits per policy: a token bucket for each (tenant, policy) with ``rate_limit`` on.

A bucket holds at most ``burst`` tokens and gains ``requests_per_second`` a second; a decide
takes one, and a decide that finds less than one is refused ``rate_limit_exceeded`` with the
seconds until a token is there (``details.retry_after_s``, HTTP ``Retry-After``).

The limit is per Router process, not shared: N Routers in the queue group let through up to
N times the rate. Sharing it would put a round trip to a shared store (JetStream KV) on every
decide, the path that must stay at milliseconds, and a store outage would then either stop
all decides or lift the limit; a local bucket costs nothing and never blocks. Operators who
run several Routers divide the rate by their number (docs/policies.md).

A refusal is counted where it is answered (``RouterEvents.decide_refused``), not here: a
decide refused a token may still be answered, when it repeats a request another Router
answered (``service.shared_decide.first_answer``), and such a repeat takes no token.

The clock is injected, so tests step time exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from natsrouter.routing.messages import ErrorCode, RequestError
from natsrouter.routing.policy import RateLimitConfig


class TokenBucket:
    def __init__(self, config: RateLimitConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._tokens = float(config.burst)
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._tokens = min(
            float(self.config.burst), self._tokens + elapsed * self.config.requests_per_second
        )

    def take(self) -> float:
        """Take a token: 0.0 when taken, else the seconds until one is there (none taken)."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.config.requests_per_second

    def give_back(self) -> None:
        """Return a token taken by a decide that turned out to be a repeat."""
        self._refill()
        self._tokens = min(float(self.config.burst), self._tokens + 1.0)

    @property
    def tokens(self) -> float:
        """Decides that may pass now (the headroom), fractions included."""
        self._refill()
        return self._tokens


class RateLimits:
    """The buckets of the policies that enable ``rate_limit``, created on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def bucket(self, tenant_id: str, policy_id: str, config: RateLimitConfig) -> TokenBucket:
        """The bucket of a policy; a changed configuration (a reload) starts a full one."""
        key = (tenant_id, policy_id)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.config != config:
            bucket = self._buckets[key] = TokenBucket(config, self._clock)
        return bucket

    def take(self, tenant_id: str, policy_id: str, config: RateLimitConfig) -> None:
        """Let one decide through, or raise ``RequestError(rate_limit_exceeded)``."""
        if not config.enabled:
            return
        wait = self.bucket(tenant_id, policy_id, config).take()
        if wait == 0.0:
            return
        raise RequestError(
            ErrorCode.RATE_LIMIT_EXCEEDED,
            f"policy {policy_id!r} of tenant {tenant_id!r} allows "
            f"{config.requests_per_second:g} decides a second (burst {config.burst}) "
            "per Router",
            {
                "tenant_id": tenant_id,
                "policy_id": policy_id,
                "requests_per_second": config.requests_per_second,
                "burst": config.burst,
                "retry_after_s": max(1, math.ceil(wait)),
            },
        )

    def give_back(self, tenant_id: str, policy_id: str, config: RateLimitConfig) -> None:
        """Return the token a decide took, when it was a repeat answered without deciding."""
        if config.enabled:
            self.bucket(tenant_id, policy_id, config).give_back()

    def headroom(self, tenant_id: str, policy_id: str, config: RateLimitConfig) -> int | None:
        """Decides that may pass now (rounded down), or None when the policy has no limit."""
        if not config.enabled:
            return None
        return math.floor(self.bucket(tenant_id, policy_id, config).tokens)
