"""What the Router knows about each provider's health, learned from execution results.

One circuit breaker per provider name, shared by every policy that lists the provider (a
provider that fails, fails for every tenant), and running estimates of its latency and cost
(exponentially weighted averages of successful results, starting from the policy's static
estimates). A policy that does not enable ``circuit_breaker`` never consults the breaker.

When several policies enable a breaker for the same provider with different thresholds, the
first of them in (tenant, policy_id) order sets them; docs/policies.md says so. Each Router
process keeps its own breakers, fed by the share of results its consumer receives; with
shared state, a breaker opened here is opened in the other Routers too
(``service.shared_state``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from natsrouter.routing.breaker import BreakerConfig, BreakerState, CircuitBreaker
from natsrouter.routing.policy import Policy, Provider
from natsrouter.routing.strategies import InFlight

# Weight of the newest result in the running averages.
_ALPHA = 0.2

StateListener = Callable[[str, BreakerState], None]


@dataclass
class _Estimate:
    latency_ms: float
    cost: float


class ProviderHealth:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        on_state: StateListener | None = None,
    ) -> None:
        self._clock = clock
        self._on_state = on_state
        self._breakers: dict[str, CircuitBreaker] = {}
        self._estimates: dict[str, _Estimate] = {}
        #: Pushed assignments without a result yet (``least_busy``, the providers view).
        self.in_flight = InFlight(clock)
        #: Told (provider, seconds open) when a result opens a breaker here, to share it.
        self.on_opened: Callable[[str, float], None] | None = None

    def configure(self, policies: Iterable[Policy]) -> None:
        """Set the breakers for a policy set; unchanged thresholds keep their state."""
        configs: dict[str, BreakerConfig] = {}
        for policy in sorted(policies, key=lambda p: (p.tenant_id, p.policy_id)):
            if policy.circuit_breaker.enabled:
                for provider in policy.providers:
                    configs.setdefault(provider.name, policy.circuit_breaker)
        breakers: dict[str, CircuitBreaker] = {}
        for name, config in configs.items():
            current = self._breakers.get(name)
            keep = current is not None and current.config == config
            breakers[name] = current if keep and current else CircuitBreaker(config, self._clock)
        self._breakers = breakers
        self.publish_states()

    def available(self, name: str, policy: Policy) -> bool:
        if not policy.circuit_breaker.enabled:
            return True
        breaker = self._breakers.get(name)
        return breaker is None or breaker.available()

    def seconds_until_available(self, names: Iterable[str]) -> float:
        """How long until the first of ``names`` may be picked again (0 if one may now)."""
        waits = [b.seconds_until_trial() for n in names if (b := self._breakers.get(n))]
        return min(waits, default=0.0)

    def picked(self, name: str, policy: Policy) -> None:
        breaker = self._breakers.get(name)
        if policy.circuit_breaker.enabled and breaker is not None:
            before = breaker.state
            breaker.picked()
            self._changed(name, before, breaker)

    def record(self, name: str, success: bool, latency_ms: float, cost: float) -> None:
        """Feed one result: the breaker, and on success the running estimates."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            before = breaker.state
            breaker.record(success)
            self._changed(name, before, breaker)
            opened = before is not BreakerState.OPEN and breaker.state is BreakerState.OPEN
            if opened and self.on_opened is not None:
                self.on_opened(name, breaker.config.timeout_ms / 1000)
        # Parsers refuse non-finite numbers; this keeps estimates finite whatever the caller.
        if success and math.isfinite(latency_ms) and math.isfinite(cost):
            estimate = self._estimates.get(name)
            if estimate is None:
                self._estimates[name] = _Estimate(latency_ms, cost)
            else:
                estimate.latency_ms += _ALPHA * (latency_ms - estimate.latency_ms)
                estimate.cost += _ALPHA * (cost - estimate.cost)

    def expected(self, name: str, provider: Provider | None) -> tuple[float | None, float | None]:
        """(latency_ms, cost): learned from results, else the policy's estimates, else None."""
        estimate = self._estimates.get(name)
        if estimate is not None:
            return round(estimate.latency_ms, 3), round(estimate.cost, 6)
        if provider is None:
            return None, None
        return provider.expected_latency_ms, provider.expected_cost

    def breaker_names(self) -> list[str]:
        return list(self._breakers)

    def open_for(self, name: str, seconds: float) -> None:
        """Open ``name``'s breaker for ``seconds``, as another Router's did (not re-shared)."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            before = breaker.state
            if breaker.open_for(seconds):
                self._changed(name, before, breaker)

    def state(self, name: str) -> BreakerState | None:
        breaker = self._breakers.get(name)
        return breaker.state if breaker is not None else None

    def publish_states(self) -> None:
        """Report every breaker's current state (an open one may have become half-open)."""
        if self._on_state is not None:
            for name, breaker in self._breakers.items():
                self._on_state(name, breaker.state)

    def _changed(self, name: str, before: BreakerState, breaker: CircuitBreaker) -> None:
        after = breaker.state
        if after is not before and self._on_state is not None:
            self._on_state(name, after)
