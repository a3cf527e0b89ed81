"""How the last step of a decision picks among the usable providers: the policy's strategy.

- ``weighted`` (the default): a random pick in proportion to the weights.
- ``latency`` / ``cost``: the provider with the lowest expected latency (or cost), from the
  estimates learned from results (``ProviderHealth.expected``). With probability
  ``exploration`` the pick is weighted instead, so a provider that was slow once keeps being
  tried and its estimate can come back down when it recovers; without it, a provider whose
  estimate went up would never be picked again and never measured again. A provider with no
  estimate yet counts as the best, so a new provider is measured at once.
- ``least_busy``: the provider with the fewest assignments pushed and still without a result
  (``InFlight``); ties are broken by a weighted pick among the tied.

The random source is injected (the decider's), so every pick is reproducible in tests.
Weight 0 still means "never picked" for every strategy: it is how an operator takes a
provider out without deleting it.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # policy.py imports Strategy from here
    from natsrouter.routing.policy import Provider

#: Pushed assignments remembered while waiting for their result, at most: one that never gets
#: a result (a worker lost it) stops counting after ``IN_FLIGHT_TTL_S``, or when pushed out.
MAX_IN_FLIGHT = 100_000
IN_FLIGHT_TTL_S = 600


class Strategy(StrEnum):
    WEIGHTED = "weighted"
    LATENCY = "latency"
    COST = "cost"
    LEAST_BUSY = "least_busy"


#: Share of ``latency`` and ``cost`` picks made by weight instead, when the policy says nothing.
DEFAULT_EXPLORATION = 0.1

Estimates = Callable[[str], tuple[float | None, float | None]]


def weighted_pick(providers: Sequence[Provider], rng: random.Random) -> Provider:
    """One provider at random in proportion to its weight (one draw of ``rng``)."""
    point = rng.random() * sum(p.weight for p in providers)
    for provider in providers:
        point -= provider.weight
        if point < 0:
            return provider
    return providers[-1]


def pick(
    strategy: Strategy,
    providers: Sequence[Provider],
    rng: random.Random,
    *,
    expected: Estimates,
    busy: Callable[[str], int],
    exploration: float = DEFAULT_EXPLORATION,
) -> Provider:
    """The provider ``strategy`` picks among ``providers`` (non-empty, weights > 0)."""
    if strategy is Strategy.WEIGHTED or len(providers) == 1:
        return weighted_pick(providers, rng)
    if strategy is Strategy.LEAST_BUSY:
        fewest = min(busy(p.name) for p in providers)
        return weighted_pick([p for p in providers if busy(p.name) == fewest], rng)
    if rng.random() < exploration:
        return weighted_pick(providers, rng)
    index = 0 if strategy is Strategy.LATENCY else 1

    def rank(provider: Provider) -> tuple[float, float]:
        value = expected(provider.name)[index]
        # Unknown first (it gets measured); equal estimates: the heavier weight first.
        return (-1.0 if value is None else value, -provider.weight)

    return min(providers, key=rank)  # min keeps the policy's order among equals


class InFlight:
    """Assignments pushed and not yet answered by a result, counted per provider.

    Keyed by assignment id, so a repeated result (a redelivery) or a result for an assignment
    this process did not push changes nothing. One that never gets a result (a worker lost
    it) stops counting after ``IN_FLIGHT_TTL_S``, or when more than ``MAX_IN_FLIGHT`` wait.
    Each Router process counts the assignments it pushed and the results its consumer
    receives; see docs/policies.md.
    """

    def __init__(self, clock: Callable[[], float], max_entries: int = MAX_IN_FLIGHT) -> None:
        self._clock = clock
        self._max = max_entries
        # Insertion order is start order: the oldest, first to expire, is always in front.
        self._assignments: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._counts: dict[str, int] = {}

    def started(self, assignment_id: str, provider: str) -> None:
        if assignment_id in self._assignments:
            return  # the same assignment pushed again (an idempotent retry)
        self._assignments[assignment_id] = (provider, self._clock())
        self._counts[provider] = self._counts.get(provider, 0) + 1
        self._expire()

    def finished(self, assignment_id: str) -> None:
        entry = self._assignments.pop(assignment_id, None)
        if entry is not None:
            self._forget(entry[0])

    def count(self, provider: str) -> int:
        self._expire()
        return self._counts.get(provider, 0)

    def _expire(self) -> None:
        oldest = self._clock() - IN_FLIGHT_TTL_S
        while self._assignments:
            assignment_id, (provider, started) = next(iter(self._assignments.items()))
            if started > oldest and len(self._assignments) <= self._max:
                break
            del self._assignments[assignment_id]
            self._forget(provider)

    def _forget(self, provider: str) -> None:
        left = self._counts.get(provider, 0) - 1
        if left > 0:
            self._counts[provider] = left
        else:
            self._counts.pop(provider, None)
