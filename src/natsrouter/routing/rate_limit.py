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
decide refused a token (or one whose decide failed: breakers open, constraints this Router's
estimates cannot meet) may still be answered, when it repeats a request another Router
answered (``service.shared_decide.first_answer``), and such a repeat takes no token. Looking
for that answer costs a read of the shared store, so those look-ups have a bucket of their
own per policy (``may_look_up``), with the policy's rate and burst, or
``UNLIMITED_LOOK_UPS`` for a policy without a rate limit: a client far over its limit, or a
flood of decides while every breaker is open, cannot turn each failure into a store read.

The clock is injected, so tests step time exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from natsrouter.routing.messages import ErrorCode, RequestError
from natsrouter.routing.policy import RateLimitConfig

#: Stored-answer look-ups of a policy without a rate limit, per Router: a repeat is rare
#: (a client's retry after a timeout), and a read is one small key-value get, so 100 a
#: second (burst 100) answers every repeat of a few thousand decides a second with a few
#: per cent of retries, while a flood of failing decides costs the store 100 reads a second
#: per policy at most (a passing decide costs it one claim each).
UNLIMITED_LOOK_UPS = RateLimitConfig(enabled=True, requests_per_second=100.0, burst=100)


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

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        unlimited_look_ups: RateLimitConfig = UNLIMITED_LOOK_UPS,
    ) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        #: Stored-answer look-ups of refused or failed decides, per policy (``may_look_up``).
        self._look_ups: dict[tuple[str, str], TokenBucket] = {}
        #: The look-up rate of a policy without a rate limit.
        self.unlimited_look_ups = unlimited_look_ups

    def bucket(self, tenant_id: str, policy_id: str, config: RateLimitConfig) -> TokenBucket:
        """The bucket of a policy; a changed configuration (a reload) starts a full one."""
        return self._bucket_in(self._buckets, tenant_id, policy_id, config)

    def _bucket_in(
        self,
        buckets: dict[tuple[str, str], TokenBucket],
        tenant_id: str,
        policy_id: str,
        config: RateLimitConfig,
    ) -> TokenBucket:
        key = (tenant_id, policy_id)
        bucket = buckets.get(key)
        if bucket is None or bucket.config != config:
            bucket = buckets[key] = TokenBucket(config, self._clock)
        return bucket

    def may_look_up(self, tenant_id: str, policy_id: str, config: RateLimitConfig) -> bool:
        """Whether a decide refused a token, or whose decide failed, may look for a stored
        answer (a repeat) now.

        At most the policy's own rate and burst (``config``), or ``unlimited_look_ups`` when
        it has no rate limit: the reads a flood of refusals or failures causes stay within
        that, whatever the flood.
        """
        bound = config if config.enabled else self.unlimited_look_ups
        return self._bucket_in(self._look_ups, tenant_id, policy_id, bound).take() == 0.0

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
