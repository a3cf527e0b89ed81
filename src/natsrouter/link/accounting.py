"""The no-silent-loss ledger: where every publish the link accepted ended up."""

from __future__ import annotations

from dataclasses import dataclass, field

from natsrouter.observability.fast import FastCounter


@dataclass
class Accounting:
    """Where every accepted publish ended; ``balanced`` is the no-silent-loss invariant.

    accepted = sent + pending + dropped + rejected + failed_open + failed

    Items found in the durable spool at start (``recovered``) were accepted by an earlier
    process; they count as accepted by this one, so the ledger balances per process.

    Counted so that the publish hot path pays for one integer increment, not three: a
    publish either succeeds at once (counted only by the success counters,
    ``router_nats_publish_total`` and ``router_nats_publish_with_ack_total``) or takes the
    slow path (``slow``: held, refused or failed), where every outcome is counted and where
    loss could happen. Replays that succeed are counted by the success counters too, and in
    ``replayed``. Hence ``sent`` = the success counters, and
    ``accepted`` = ``slow`` + ``recovered`` + (``sent`` - ``replayed``).
    """

    sent_counters: tuple[FastCounter, ...] = field(repr=False)
    slow: int = 0
    recovered: int = 0
    replayed: int = 0
    dropped: int = 0
    rejected: int = 0
    failed_open: int = 0
    failed: int = 0

    @property
    def sent(self) -> int:
        return sum(c.value for c in self.sent_counters)

    @property
    def accepted(self) -> int:
        return self.slow + self.recovered + self.sent - self.replayed

    def balanced(self, pending: int) -> bool:
        return self.accepted == (
            self.sent + pending + self.dropped + self.rejected + self.failed_open + self.failed
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "accepted": self.accepted,
            "sent": self.sent,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "failed_open": self.failed_open,
            "failed": self.failed,
        }
