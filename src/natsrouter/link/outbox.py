"""The outbox: publishes the link accepted but could not send yet, and their ledger.

This is the accumulator half of the link's publishing (the ``Sender`` in sender.py is the
other half, which sends and replays). It decides what happens to an operation that cannot
go out now: kept in the bounded pending queue (memory or the SQLite spool), refused
(fail-open, full under ``reject_new``), or dropped (full under ``drop_oldest``, spool
error); it expires items older than ``nats_pending_operation_timeout_ms``; and it keeps the
no-silent-loss ledger (``Accounting``) balanced for every one of those ends.

Order is kept per subject: ``held`` counts the queued items of each subject, and a new
publish to a subject that has items queued goes behind them (the link checks ``held``
before sending directly); publishes to other subjects go straight out. ``destinations``
says which subjects wait out their own backoff after failing.

It knows nothing of connections: it is unit-tested with a queue and a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from natsrouter.config import Settings
from natsrouter.errors import LinkError, NotConnectedError, Reason
from natsrouter.link.accounting import Accounting
from natsrouter.link.destinations import Destinations
from natsrouter.link.outcome import Outcome, Result
from natsrouter.link.pending import Admission, PendingItem, PendingOp, PendingQueue
from natsrouter.link.spool import SpoolError
from natsrouter.link.telemetry import LinkTelemetry


class Outbox:
    """The pending queue with its admission, expiry and ledger."""

    def __init__(
        self,
        settings: Settings,
        queue: PendingQueue,
        accounting: Accounting,
        telemetry: LinkTelemetry,
        *,
        wall_clock: Callable[[], float],
        fail_open: Callable[[], bool],
        state_name: Callable[[], str],
        destinations: Destinations,
        on_push: Callable[[str], None] = lambda _subject: None,
    ) -> None:
        self._settings = settings
        self.queue = queue
        self.accounting = accounting
        self._t = telemetry
        self._wall = wall_clock
        self._fail_open = fail_open
        self._state_name = state_name
        self.destinations = destinations
        #: Called after an item was queued (wakes the sender while connected).
        self.on_push = on_push
        #: Queued items per subject (subjects with none are absent): the publish path reads
        #: it to keep order per subject.
        self.held: dict[str, int] = {}
        #: Called when ``held`` goes from empty to not, or back (the publish path checks
        #: subjects only while something is queued).
        self.on_held_change: Callable[[], None] = lambda: None
        # Exact ledger when expiry or drop_oldest removes an item a replay holds (below).
        self._in_flight: set[int] = set()
        self._orphans: dict[int, Reason] = {}
        self._gone: set[int] = set()  # of the batch being replayed (bounded by it)
        self._batch_high = 0
        metrics = telemetry.metrics
        metrics.track_ledger(accounting.as_dict)
        metrics.pending_limit.set(settings.nats_max_pending_operations)
        metrics.pending_bytes_limit.set(settings.nats_max_pending_bytes)
        if queue.count:  # a spool from an earlier process: replayed once connected
            accounting.recovered = queue.count
            self._t.spool_recovered(settings.nats_pending_spool_path, queue.count, queue.size_bytes)
            self.gauges()
            try:
                self.held.update(queue.subject_counts())  # before the link reads it
            except SpoolError as exc:
                self._t.spool_failed("read", exc)

    @property
    def count(self) -> int:
        return self.queue.count

    def gauges(self) -> None:
        self._t.pending_gauges(self.queue.count, self.queue.size_bytes)

    # -- taking an operation in --------------------------------------------------------------

    def not_sendable(self, op: PendingOp, connected: bool) -> Result:
        """An operation that may not go out now: not connected, or behind its subject's items.

        Behind its subject's items, the reason is the subject's last failure, if any.
        """
        self.accounting.slow += 1
        if connected:
            return self.hold(op, self.destinations.reason(op.subject))
        # Counted, not logged per call: the rate-limited "queued" line speaks for it.
        self._t.failed(op.operation, NotConnectedError(), op.subject, log=False)
        return self.hold(op, Reason.NOT_CONNECTED)

    def failed(self, err: LinkError) -> Result:
        """An operation the server refused for good, never queued (counted ``failed``)."""
        self.accounting.failed += 1
        return Result(Outcome.FAILED, reason=err.reason, error=err)

    def hold(self, op: PendingOp, reason: Reason | None) -> Result:
        """Keep an operation that could not be sent now, or refuse it (fail-open, full)."""
        if self._fail_open():
            self.accounting.failed_open += 1
            reason = reason or Reason.NOT_CONNECTED
            self._t.fail_open(op.operation, op.subject, reason)
            return Result(Outcome.FAILED_OPEN, reason=reason)
        self.expire()
        queue = self.queue
        try:
            pushed = queue.push(op, self._wall())
        except SpoolError as exc:
            self.accounting.dropped += 1
            self._t.spool_failed("push", exc, dropped=True)
            return Result(Outcome.DROPPED, reason=Reason.SPOOL_ERROR)
        limits = queue.limits
        dropped = self._dropped(pushed.evicted, Reason.QUEUE_FULL)
        dropped += 1 if pushed.admission is Admission.DROP else 0
        if pushed.admission is not Admission.STORE:
            self._t.queue_full(
                queue.count,
                limits.max_count,
                limits.overflow.value,
                dropped,
                rejected=pushed.admission is Admission.REJECT,
            )
        self.gauges()
        self.accounting.dropped += dropped
        if pushed.admission is Admission.REJECT:
            self.accounting.rejected += 1
            return Result(Outcome.REJECTED, reason=Reason.QUEUE_FULL)
        if pushed.item is None:
            return Result(Outcome.DROPPED, reason=Reason.QUEUE_FULL)
        was_empty = not self.held
        self.held[op.subject] = self.held.get(op.subject, 0) + 1
        if was_empty:
            self.on_held_change()
        self._t.queued(op.operation, op.subject, self._state_name(), queue.count)
        self.on_push(op.subject)
        return Result(Outcome.QUEUED, pending_id=pushed.item.id, reason=reason)

    def _forget(self, items: Sequence[PendingItem]) -> None:
        """Items left the queue: take them out of the per-subject counts."""
        held = self.held
        for item in items:
            subject = item.op.subject
            left = held.get(subject, 0) - 1
            if left > 0:
                held[subject] = left
            else:
                held.pop(subject, None)
                self.destinations.healthy(subject)  # nothing of it waits any more
                if not held:
                    self.on_held_change()

    def expire(self) -> None:
        """Drop items older than ``nats_pending_operation_timeout_ms`` (when set)."""
        timeout_ms = self._settings.nats_pending_operation_timeout_ms
        if not timeout_ms or not self.queue.count:
            return
        try:
            expired = self.queue.expire(self._wall() - timeout_ms / 1000)
        except SpoolError as exc:
            self._t.spool_failed("expire", exc)
            return
        if expired:
            counted = self._dropped(expired, Reason.EXPIRED)
            self.accounting.dropped += counted
            if counted:
                self._t.expired(counted)
            self.gauges()

    def _dropped(self, items: Sequence[PendingItem], reason: Reason) -> int:
        """Items expiry or drop_oldest removed: how many are dropped now.

        One being sent right now is not: its send decides (sent, or dropped when it fails),
        so it is counted once (``_orphans``). None of them may be sent from now on.
        """
        self._forget(items)
        counted = 0
        for item in items:
            if item.id <= self._batch_high:  # in the batch the sender holds: not to send
                self._gone.add(item.id)
            if item.id in self._in_flight:
                self._orphans[item.id] = reason
            else:
                counted += 1
        return counted

    # -- ends of queued items (called by the sender) -----------------------------------------

    def batch_after(self, cursor: int, limit: int) -> list[PendingItem]:
        """The next items to replay, oldest first; raises ``SpoolError``."""
        self._gone.clear()  # ids removed before this read are not in it
        batch = self.queue.batch_after(cursor, limit)
        self._batch_high = batch[-1].id if batch else 0
        return batch

    def end_pass(self) -> None:
        """A replay pass ended: no batch is held, so no removal needs remembering."""
        self._gone.clear()
        self._batch_high = 0
        self.flush()

    def sending(self, item: PendingItem) -> bool:
        """Mark an item of the last batch as being sent; False when it was dropped since."""
        if item.id in self._gone:
            return False
        self._in_flight.add(item.id)
        return True

    def _settle(self, item: PendingItem) -> Reason | None:
        """The item's send ended; the reason it was dropped meanwhile, if it was."""
        self._in_flight.discard(item.id)
        return self._orphans.pop(item.id, None)

    def sent(self, item: PendingItem) -> None:
        """A replayed item was sent: remove it (counted as sent by the success counters)."""
        if self._settle(item) is not None:
            self.accounting.replayed += 1  # dropped meanwhile, sent all the same: sent once
            return
        self.queue.remove_later(item)  # the spool deletes in batches (flush)
        self._forget((item,))
        self.accounting.replayed += 1

    def flush(self) -> None:
        """Delete the rows of sent items from the spool (once per batch of a replay)."""
        try:
            self.queue.flush()
        except SpoolError as exc:
            # Sent but still in the spool: tried again at the next flush; after a restart
            # sent again, and deduplicated by its id.
            self._t.spool_failed("remove", exc)

    def poisoned(self, item: PendingItem, err: LinkError) -> None:
        """The server refused a queued item for good: it ends ``failed``, counted once."""
        if self._settle(item) is not None:
            self.accounting.failed += 1  # already out of the queue
            self._t.pending_failed(item.op.subject, err, item.attempts + 1)
            return
        try:
            removed = self.queue.remove(item.id)
        except SpoolError as exc:
            # Still in the spool: refused again next time, and counted then.
            self._t.spool_failed("remove", exc)
            return
        if not removed:
            return  # dropped meanwhile (expiry, drop_oldest): already counted
        self._forget((item,))
        self.accounting.failed += 1
        self._t.pending_failed(item.op.subject, err, item.attempts + 1)
        self.gauges()

    def not_sent(self, item: PendingItem) -> None:
        """A replayed item failed (or its send was cancelled) and stays queued."""
        reason = self._settle(item)
        if reason is not None:  # dropped while it was being sent, and not sent: dropped now
            self.accounting.dropped += 1
            self._t.dropped_in_flight(reason)
            return
        try:
            self.queue.record_failure(item.id)
        except SpoolError:
            return  # only the attempts column

    def status(self) -> dict[str, Any]:
        limits = self.queue.limits
        return {
            "spool": self._settings.nats_pending_spool_path or None,
            "recovered": self.accounting.recovered,
            "count": self.queue.count,
            "bytes": self.queue.size_bytes,
            "max_count": limits.max_count,
            "max_bytes": limits.max_bytes,
            "overflow": limits.overflow.value,
            "blocked": self.destinations.status(),
        }
