"""Destinations in trouble: a subject whose queued publishes fail waits out its own backoff.

Isolation by destination: when a queued publish to one subject fails in a way that can pass
(a timeout, a stream between leaders), that subject is *blocked*: its items stay queued, in
order, and are tried again after a delay that doubles per failure up to the cap
(``nats_reconnect_delay_ms`` .. ``nats_max_reconnect_delay_ms``, with jitter). Meanwhile the
other subjects' items and every new publish to other subjects go out. After the delay one
item is sent alone (a probe); when it succeeds the subject is healthy again.

The key is the subject: order is promised per subject, and a stream is reached through its
subjects. Pure bookkeeping with an injected clock: no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from natsrouter.errors import Reason
from natsrouter.link.backoff import BackoffPolicy

# /status lists at most this many blocked subjects (the gauge counts them all).
_STATUS_LIMIT = 20


@dataclass
class _Blocked:
    failures: int
    until: float
    reason: Reason


class Destinations:
    """Which subjects are blocked, until when, and why."""

    def __init__(
        self,
        backoff: BackoffPolicy,
        rng: random.Random,
        clock: Callable[[], float],
        on_change: Callable[[int], None],
    ) -> None:
        self._backoff = backoff
        self._rng = rng
        self._clock = clock
        self._on_change = on_change
        self._blocked: dict[str, _Blocked] = {}

    def __len__(self) -> int:
        return len(self._blocked)

    def waiting(self, subject: str) -> bool:
        """True while ``subject`` waits out its backoff."""
        entry = self._blocked.get(subject)
        return entry is not None and entry.until > self._clock()

    def probing(self, subject: str) -> bool:
        """True when ``subject`` failed before: its next item goes alone, as a probe."""
        return subject in self._blocked

    def reason(self, subject: str) -> Reason | None:
        """Why ``subject`` is blocked, or None."""
        entry = self._blocked.get(subject)
        return None if entry is None else entry.reason

    def failed(self, subject: str, reason: Reason) -> None:
        entry = self._blocked.get(subject)
        failures = 1 if entry is None else entry.failures + 1
        delay_s = self._backoff.delay_ms(failures - 1, self._rng) / 1000
        self._blocked[subject] = _Blocked(failures, self._clock() + delay_s, reason)
        if entry is None:
            self._on_change(len(self._blocked))

    def healthy(self, subject: str) -> None:
        """A send to ``subject`` worked, or nothing of it is queued any more."""
        if self._blocked.pop(subject, None) is not None:
            self._on_change(len(self._blocked))

    def next_due(self) -> float | None:
        """The clock value at which the first blocked subject may be tried again."""
        return min((e.until for e in self._blocked.values()), default=None)

    def status(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        worst = sorted(self._blocked.items(), key=lambda kv: -kv[1].failures)[:_STATUS_LIMIT]
        return {
            subject: {
                "failures": e.failures,
                "retry_in_s": round(max(e.until - now, 0.0), 3),
                "reason": e.reason.value,
            }
            for subject, e in worst
        }
