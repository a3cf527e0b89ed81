"""Which provider runs this task: fallback rules, sticky sessions, then the policy's strategy.

The order, for the policy of (tenant_id, policy_id), once its ``rate_limit`` let the decide
through (routing/rate_limit.py):

1. **fallback**: the first rule whose ``when`` matches the request and whose ``to`` provider is
   usable wins (``fallback_used``). A key of ``when`` is a dotted path into the request
   (``task.type``, ``metadata.region``); a bare key that is not a request field is looked up
   in ``metadata`` (``{"status": "timeout"}`` matches ``metadata.status``).
2. **sticky**: with ``sticky.enabled`` and the session key in ``metadata``, the provider this
   session got before, within ``ttl_seconds``, if it is still in the policy and usable.
3. **strategy**: a pick among providers with weight > 0 that meet the request's
   constraints, leaving out those whose circuit breaker is open, by the policy's strategy
   (``weighted`` in proportion to the weights, or ``latency``, ``cost``, ``least_busy``:
   routing/strategies.py). The reason is the strategy; when a breaker left one out it is
   ``circuit_breaker_fallback``.

"Usable" means: the circuit breaker lets it be picked, and its expected latency and cost
(when known) are within the request's constraints. The random source and the clock are
injected, so tests assert exact picks.
"""

from __future__ import annotations

import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, NamedTuple

from natsrouter.routing import strategies
from natsrouter.routing.bounded import BoundedCache, text_size
from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.messages import DecideRequest, ErrorCode, RequestError
from natsrouter.routing.policy import Policy, PolicyStore, Provider, Scalar
from natsrouter.routing.rate_limit import RateLimits

# Sessions remembered for sticky routing, at most, in number and in estimated bytes; the
# least recently used go first.
MAX_STICKY_SESSIONS = 100_000
MAX_STICKY_BYTES = 64 * 1024 * 1024

SessionKey = tuple[str, str, str]
#: Longest session value (characters) that is sticky; a longer one is decided as if absent
#: (and counted): refusing the request would fail a client for a hint, and keeping it would
#: let one client fill the session table with megabytes of keys.
MAX_SESSION_CHARS = 256


class DecisionReason(StrEnum):
    WEIGHTED = "weighted"
    STICKY = "sticky"
    FALLBACK = "fallback"
    CIRCUIT_BREAKER_FALLBACK = "circuit_breaker_fallback"
    # The policy's strategy, when not weighted (routing/strategies.py).
    LATENCY = "latency"
    COST = "cost"
    LEAST_BUSY = "least_busy"


#: Each reason's text (``Enum.value`` is a property lookup, slow on the decide path).
REASON_TEXT: dict[DecisionReason, str] = {reason: reason.value for reason in DecisionReason}
#: The reason a strategy gives, found once instead of by value on every decide.
_STRATEGY_REASON = {s: DecisionReason(s.value) for s in strategies.Strategy}


class Decision(NamedTuple):
    """Immutable; a tuple, not a frozen dataclass: one is built per decide, and a frozen
    dataclass sets each of its fields through ``object.__setattr__`` (twice the time)."""

    provider_id: str
    reason: DecisionReason
    policy_id: str
    priority: int
    expected_latency_ms: float | None
    expected_cost: float | None
    fallback_used: bool = False
    #: Retries the worker may make (a fallback rule's ``retry``; 0 otherwise).
    retry: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider_id": self.provider_id,
            "priority": self.priority,
            "expected_latency_ms": self.expected_latency_ms,
            "expected_cost": self.expected_cost,
            "reason": REASON_TEXT[self.reason],
            "policy_id": self.policy_id,
            "fallback_used": self.fallback_used,
        }


def request_document(request: DecideRequest) -> dict[str, Any]:
    """The request as the nested mapping ``when`` keys are paths into (built once per decide)."""
    return {
        "request_id": request.request_id,
        "tenant_id": request.tenant_id,
        "policy_id": request.policy_id,
        "trace_id": request.trace_id,
        "task": {
            "type": request.task.type,
            "payload_ref": request.task.payload_ref,
            "payload": request.task.payload,
        },
        "constraints": {
            "max_latency_ms": request.constraints.max_latency_ms,
            "max_cost": request.constraints.max_cost,
        },
        "metadata": request.metadata,
    }


def request_value(document: Mapping[str, Any], key: str) -> Any:
    """The value ``when`` key ``key`` refers to, or ``_MISSING``."""
    value: Any = document
    if "." not in key and key not in document:
        value = document["metadata"]
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def _same(a: Any, b: Scalar) -> bool:
    # Strict: True must not match 1, nor "1" match 1.
    return (type(a) is type(b) and a == b) or (
        isinstance(a, int | float)
        and isinstance(b, int | float)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def matches(when: Mapping[str, tuple[Scalar, ...]], document: Mapping[str, Any]) -> bool:
    """Every key of ``when`` has one of its accepted values in the request document."""
    for key, accepted in when.items():
        value = request_value(document, key)
        if value is _MISSING or not any(_same(value, v) for v in accepted):
            return False
    return True


def matches_compiled(
    matchers: tuple[tuple[tuple[str, ...], tuple[Scalar, ...]], ...], document: Mapping[str, Any]
) -> bool:
    """``matches`` for a rule's ``when`` compiled at load (``Fallback.matchers``)."""
    for path, accepted in matchers:
        value: Any = document
        for part in path:
            if not isinstance(value, Mapping) or part not in value:
                return False
            value = value[part]
        if not any(_same(value, v) for v in accepted):
            return False
    return True


class StickySessions:
    """(tenant, policy, session) -> provider, each valid for its policy's TTL; bounded, LRU."""

    def __init__(
        self,
        clock: Callable[[], float],
        max_sessions: int = MAX_STICKY_SESSIONS,
        max_bytes: int = MAX_STICKY_BYTES,
    ) -> None:
        self._entries: BoundedCache[SessionKey, str] = BoundedCache(
            max_sessions, max_bytes, clock, touch=True
        )

    def get(self, key: SessionKey) -> str | None:
        return self._entries.get(key)

    def put(self, key: SessionKey, provider: str, ttl_seconds: int) -> None:
        # The provider name is the policy's own string, shared by every entry: not counted.
        self._entries.put(key, provider, ttl_seconds, text_size(*key))

    def keys(self) -> list[SessionKey]:
        return list(self._entries.keys())

    @property
    def bytes(self) -> int:
        return self._entries.bytes

    def __len__(self) -> int:
        return len(self._entries)


class Decider:
    """Decides for one request; raises ``RequestError`` (policy_not_found,
    rate_limit_exceeded, constraints_unsatisfiable, decision_failed)."""

    def __init__(
        self,
        policies: PolicyStore,
        health: ProviderHealth,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_session_too_long: Callable[[], None] | None = None,
    ) -> None:
        self.policies = policies
        self.health = health
        self._on_session_too_long = on_session_too_long
        self._rng = rng or random.Random()
        self.sticky = StickySessions(clock)
        self.rate_limits = RateLimits(clock)

    def decide(self, request: DecideRequest) -> Decision:
        policy = self.policies.by_key.get((request.tenant_id, request.policy_id))
        if policy is None:
            raise RequestError(
                ErrorCode.POLICY_NOT_FOUND,
                f"no policy {request.policy_id!r} for tenant {request.tenant_id!r}",
                {"tenant_id": request.tenant_id, "policy_id": request.policy_id},
            )
        session: SessionKey | None = None
        if not policy.direct:  # no rate limit, fallback rule or sticky session to consider
            if policy.rate_limit.enabled:
                self.rate_limits.take(policy.tenant_id, policy.policy_id, policy.rate_limit)
            if policy.fallbacks:
                document = request_document(request)
                for rule in policy.fallbacks:
                    if matches_compiled(rule.matchers, document) and self._usable(
                        policy, rule.to, request
                    ):
                        return self._decision(
                            policy,
                            rule.to,
                            DecisionReason.FALLBACK,
                            fallback_used=True,
                            retry=rule.retry,
                        )
            if policy.sticky.enabled:
                session = self._session(policy, request)
                stuck = self.sticky.get(session) if session is not None else None
                if (
                    stuck is not None
                    and self._in_policy(policy, stuck)
                    and self._usable(policy, stuck, request)
                ):
                    return self._decision(policy, stuck, DecisionReason.STICKY)
        limits = request.constraints
        if (
            policy.one_draw
            and session is None
            and limits.max_latency_ms is None
            and limits.max_cost is None
        ):
            # The common case: _weighted's first branch and _decision, written out (the
            # same draw, the same decision; tests/unit/test_decider.py).
            weighted, cumulative = policy.weighted, policy.cumulative
            point = self._rng.random() * cumulative[-1]
            name = weighted[min(bisect_right(cumulative, point), len(weighted) - 1)].name
            provider = policy.by_name[name]
            latency, cost = self.health.expected(name, provider)
            return Decision(
                name, DecisionReason.WEIGHTED, policy.policy_id, provider.priority, latency, cost
            )
        name, reason = self._weighted(policy, request)
        if session is not None:
            self.sticky.put(session, name, policy.sticky.ttl_seconds)
        return self._decision(policy, name, reason)

    def session_of(self, request: DecideRequest) -> tuple[SessionKey, int] | None:
        """The request's sticky session and its policy's TTL; None when it is not sticky.

        Uncounted: ``decide`` counts a session value that is too long.
        """
        policy = self.policies.get(request.tenant_id, request.policy_id)
        if policy is None or not policy.sticky.enabled:
            return None
        value = request.metadata.get(policy.sticky.session_key)
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            return None
        if len(str(value)) > MAX_SESSION_CHARS:
            return None
        return (policy.tenant_id, policy.policy_id, str(value)), policy.sticky.ttl_seconds

    def stick_to(self, request: DecideRequest, provider: str) -> Decision | None:
        """The sticky decision for ``provider`` (the session's, as another Router picked it)
        when it is in the policy and usable; None otherwise. Takes no rate-limit token: the
        request already took one."""
        policy = self.policies.get(request.tenant_id, request.policy_id)
        if policy is None or not self._in_policy(policy, provider):
            return None
        if not self._usable(policy, provider, request):
            return None
        return self._decision(policy, provider, DecisionReason.STICKY)

    def _weighted(self, policy: Policy, request: DecideRequest) -> tuple[str, DecisionReason]:
        weighted = policy.weighted
        limits = request.constraints
        if policy.one_draw and limits.max_latency_ms is None and limits.max_cost is None:
            # Nobody left out: the branch below, written out (no breaker, so picking changes
            # nothing in the providers' health).
            cumulative = policy.cumulative
            point = self._rng.random() * cumulative[-1]
            chosen = weighted[min(bisect_right(cumulative, point), len(weighted) - 1)]
            return chosen.name, DecisionReason.WEIGHTED
        candidates = (
            weighted
            if limits.max_latency_ms is None and limits.max_cost is None
            else tuple(p for p in weighted if self._within(policy, p.name, request))
        )
        available = (
            tuple(p for p in candidates if self.health.available(p.name, policy))
            if policy.circuit_breaker.enabled
            else candidates
        )
        if not available:
            raise self._nobody(policy, list(weighted), list(candidates))
        if policy.strategy is strategies.Strategy.WEIGHTED and available is weighted:
            # Nobody left out: one draw against the running sums built at load, the same
            # pick as strategies.weighted_pick.
            point = self._rng.random() * policy.cumulative[-1]
            chosen = weighted[min(bisect_right(policy.cumulative, point), len(weighted) - 1)]
        else:
            chosen = strategies.pick(
                policy.strategy,
                available,
                self._rng,
                expected=lambda name: self.health.expected(name, self._provider(policy, name)),
                busy=self.health.in_flight.count,
                exploration=policy.exploration,
            )
        self.health.picked(chosen.name, policy)
        reason = (
            DecisionReason.CIRCUIT_BREAKER_FALLBACK
            if len(available) < len(candidates)
            else _STRATEGY_REASON[policy.strategy]
        )
        return chosen.name, reason

    def _nobody(
        self, policy: Policy, weighted: list[Provider], candidates: list[Provider]
    ) -> RequestError:
        """Whose problem it is that nobody can be picked: the client's, or nobody's yet."""
        names = [p.name for p in policy.providers]
        if weighted and not candidates:
            # Only the request's constraints left everyone out: asking again will not help.
            return RequestError(
                ErrorCode.CONSTRAINTS_UNSATISFIABLE,
                "no provider of the policy can meet the request's constraints",
                {"field": "constraints", "policy_id": policy.policy_id, "providers": names},
            )
        details: dict[str, Any] = {"policy_id": policy.policy_id, "providers": names}
        if candidates:
            wait = self.health.seconds_until_available(p.name for p in candidates)
            details["retry_after_s"] = max(1, math.ceil(wait))
        return RequestError(
            ErrorCode.DECISION_FAILED,
            "no provider available: "
            + ("circuit breakers open" if candidates else "no provider has a weight above 0"),
            details,
        )

    def _usable(self, policy: Policy, name: str, request: DecideRequest) -> bool:
        if not (self.health.available(name, policy) and self._within(policy, name, request)):
            return False
        self.health.picked(name, policy)
        return True

    def _within(self, policy: Policy, name: str, request: DecideRequest) -> bool:
        """Known estimates within the request's constraints (unknown ones do not exclude)."""
        latency, cost = self.health.expected(name, self._provider(policy, name))
        limits = request.constraints
        if (
            limits.max_latency_ms is not None
            and latency is not None
            and latency > limits.max_latency_ms
        ):
            return False
        return not (limits.max_cost is not None and cost is not None and cost > limits.max_cost)

    @staticmethod
    def _in_policy(policy: Policy, name: str) -> bool:
        return name in policy.by_name

    @staticmethod
    def _provider(policy: Policy, name: str) -> Provider | None:
        return policy.by_name.get(name)

    def _session(self, policy: Policy, request: DecideRequest) -> SessionKey | None:
        if not policy.sticky.enabled:
            return None
        value = request.metadata.get(policy.sticky.session_key)
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            return None
        session = str(value)
        if len(session) > MAX_SESSION_CHARS:
            if self._on_session_too_long is not None:
                self._on_session_too_long()
            return None
        return (policy.tenant_id, policy.policy_id, session)

    def _decision(
        self,
        policy: Policy,
        name: str,
        reason: DecisionReason,
        *,
        fallback_used: bool = False,
        retry: int = 0,
    ) -> Decision:
        provider = policy.by_name.get(name)
        latency, cost = self.health.expected(name, provider)
        # Positional: a keyword call of a NamedTuple costs over twice as much (it was a
        # quarter of a decide's time).
        return Decision(
            name,
            reason,
            policy.policy_id,
            provider.priority if provider else 0,
            latency,
            cost,
            fallback_used,
            retry,
        )
