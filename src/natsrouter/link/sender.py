"""The sender: sends the outbox's items and retries unsettled JetStream publishes.

The other half of the outbox (outbox.py keeps and accounts, this module sends). It
- sends one operation and counts its success (``send``); drops a reply that could not be
  sent now, never queued (``reply_failed``); makes a request on the live connection
  (``request``);
- settles a failed send: a lost connection is reported, a retriable failure is held in the
  outbox, a refusal ends ``failed`` (``send_failed``);
- retries an unsettled JetStream publish (timeout, a stream between leaders) with its
  ``Nats-Msg-Id`` until ``js_publish_retry_deadline_ms`` (``retry_publish``);
- replays the pending queue while connected (``start``): oldest first, order kept per
  subject, a subject that fails waiting out its own backoff (``destinations.py``) while the
  others flow, JetStream items with a window of PubAcks in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from natsrouter.config import Settings
from natsrouter.errors import LinkError, NotConnectedError, Reason
from natsrouter.link.connection import ConnectionSupervisor
from natsrouter.link.outbox import Outbox
from natsrouter.link.outcome import Operation, Outcome, Result
from natsrouter.link.pending import PendingItem, PendingOp
from natsrouter.link.spool import SpoolError
from natsrouter.link.tasks import TaskOwner
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import Connection, InboundMessage

#: The header JetStream deduplicates on.
MSG_ID = "Nats-Msg-Id"
# Results are immutable: the common one is shared.
SENT = Result(Outcome.SENT)
# JetStream publish failures whose outcome is not settled: a timeout (stored or not, nobody
# knows) and no responders while a stream holds the subject (a clustered stream between
# leaders). Retried with the same Nats-Msg-Id, pausing from the first value, doubling to the cap.
UNSETTLED = frozenset({Reason.TIMEOUT, Reason.NO_RESPONDERS})
_RETRY_PAUSE_S = 0.05
_RETRY_PAUSE_MAX_S = 1.0
# Items read from the queue (one spool query) per batch; replay yields between batches.
_REPLAY_BATCH = 100


@dataclass
class _Tally:
    sent: int = 0
    failed: int = 0
    announced: bool = False  # NATS_RETRY_PENDING logged for this pass


class Sender:
    """Sends operations on the current connection; replays the outbox."""

    def __init__(
        self,
        settings: Settings,
        outbox: Outbox,
        session: ConnectionSupervisor,
        telemetry: LinkTelemetry,
        tasks: TaskOwner,
        *,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        direct: Callable[[], Connection | None],
        max_in_flight: int = 1,
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._session = session
        self._t = telemetry
        self._tasks = tasks
        self._clock = clock
        self._wall = wall_clock
        self._direct = direct
        self._max_in_flight = max(max_in_flight, 1)
        self._recheck_s = settings.nats_max_reconnect_delay_ms / 1000
        self._wake = asyncio.Event()
        self.request_timeout_s = settings.nats_request_timeout_ms / 1000
        self.retry_deadline_s = settings.js_publish_retry_deadline_ms / 1000
        metrics = telemetry.metrics
        self._pwa_total = metrics.operation_total[Operation.PUBLISH_WITH_ACK]
        self._pwa_duration = metrics.duration_of[Operation.PUBLISH_WITH_ACK]
        self._publish_total = metrics.operation_total[Operation.PUBLISH]
        self.task: asyncio.Task[None] | None = None

    # -- one operation -----------------------------------------------------------------------

    async def send(self, conn: Connection, op: PendingOp) -> Result:
        """Send one operation; counts its success. Raises ``LinkError`` uncounted."""
        if op.operation is Operation.PUBLISH:
            await conn.publish(op.subject, op.payload, op.headers)
            self._t.succeeded(op.operation)
            return SENT
        started = self._clock()
        ack = await conn.publish_with_ack(
            op.subject, op.payload, op.headers, self.request_timeout_s
        )
        self._t.succeeded(op.operation, self._clock() - started)
        return Result(Outcome.SENT, pub_ack=ack)

    def send_failed(self, op: PendingOp, err: LinkError, conn: Connection) -> Result:
        self._outbox.accounting.slow += 1
        self._t.failed(op.operation, err, op.subject)
        session = self._session
        if err.connection_lost and conn is session.conn:
            session.on_lost(session.generation, conn, err)
        if err.retriable:
            return self._held_after_failure(op, err)
        return self._outbox.failed(err)

    def _held_after_failure(self, op: PendingOp, err: LinkError) -> Result:
        """Hold what failed in a way that can pass; while connected its subject backs off."""
        result = self._outbox.hold(op, err.reason)
        if result.outcome is Outcome.QUEUED and self._session.live() is not None:
            self._outbox.destinations.failed(op.subject, err.reason)
        return result

    async def retry_publish(
        self, op: PendingOp, err: LinkError, conn: Connection, started: float
    ) -> Result:
        """Send an unsettled JetStream publish again, same ``Nats-Msg-Id``, until the deadline.

        The caller waits at most ``js_publish_retry_deadline_ms`` from its first attempt (plus
        what is left of one request timeout). No responders when no stream holds the subject
        is settled (``failed``, at once). When the deadline passes or the connection is lost
        or replaced, the publish is held (``queued``) and the replay sends it with its id.
        """
        outbox = self._outbox
        self._t.failed(op.operation, err, op.subject)  # logged once; retries are counted
        if err.reason is Reason.NO_RESPONDERS and not await self.stream_exists(conn, op.subject):
            outbox.accounting.slow += 1
            return outbox.failed(err)
        deadline = started + self.retry_deadline_s
        pause = _RETRY_PAUSE_S
        attempt = 0
        while (remaining := deadline - self._clock()) > 0:
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _RETRY_PAUSE_MAX_S)
            current = self._direct()
            if current is None:
                break  # lost: the queue keeps the order and the id
            conn = current
            attempt += 1
            self._t.publish_retry(err, op.subject, attempt)
            timeout_s = min(self.request_timeout_s, max(deadline - self._clock(), 0.001))
            try:
                sent_at = self._clock()
                ack = await conn.publish_with_ack(op.subject, op.payload, op.headers, timeout_s)
            except LinkError as again:
                if again.reason not in UNSETTLED:
                    return self.send_failed(op, again, conn)
                err = again
                self._t.failed(op.operation, err, op.subject, log=False)
                continue
            self._pwa_duration.observe(self._clock() - sent_at)
            self._pwa_total.value += 1
            return Result(Outcome.SENT, ack)
        outbox.accounting.slow += 1
        return self._held_after_failure(op, err)

    def reply_failed(self, conn: Connection | None, subject: str, exc: BaseException) -> Result:
        """Settle a reply ``Link.reply`` could not send now: dropped, never queued.

        A reply that waited for a replay would reach a requester that gave up long ago, and
        under ``drop_oldest`` it would evict work clients were told is queued. ``conn`` is
        None when not connected; else ``exc`` is what its ``fast_publish`` (or the awaitable
        it returned) raised. A drop has reason ``reply_dropped`` (the cause is in ``error``),
        is counted in ``router_nats_replies_dropped_total{reason}`` and logged rate-limited
        (``NATS_REPLY_DROPPED``). Sent or dropped, it is in the ledger like any publish.
        """
        if conn is None:
            return self._reply_dropped(subject, NotConnectedError())
        err = conn.translate(exc)
        session = self._session
        if err.connection_lost and conn is session.conn:
            session.on_lost(session.generation, conn, err)
        return self._reply_dropped(subject, err)

    def _reply_dropped(self, subject: str, err: LinkError) -> Result:
        accounting = self._outbox.accounting
        accounting.slow += 1
        accounting.dropped += 1
        self._t.reply_dropped(subject, err)
        return Result(Outcome.DROPPED, reason=Reason.REPLY_DROPPED, error=err)

    async def request(
        self, subject: str, payload: bytes, headers: Mapping[str, str] | None, timeout_s: float
    ) -> InboundMessage:
        """Request-reply on the live connection; raises ``LinkError``, never queues."""
        live = self._session.live()
        if live is None:
            err = NotConnectedError()
            self._t.failed(Operation.REQUEST, err)
            if self._session.fail_open_active:
                self._t.fail_open(Operation.REQUEST, subject, err.reason)
            raise err
        conn, generation = live
        started = self._clock()
        try:
            reply = await conn.request(subject, payload, headers, timeout_s)
        except LinkError as err:
            self._t.failed(Operation.REQUEST, err)
            if err.connection_lost:
                self._session.on_lost(generation, conn, err)
            raise
        self._t.succeeded(Operation.REQUEST, self._clock() - started)
        return reply

    async def stream_exists(self, conn: Connection, subject: str) -> bool:
        """True when a stream holds ``subject``, or when the server cannot say right now."""
        try:
            return await conn.find_stream(subject, self.request_timeout_s) is not None
        except LinkError:
            return True

    # -- replay ------------------------------------------------------------------------------

    def start(self, conn: Connection, generation: int) -> None:
        """Run the replay loop for a new connection (until it is lost or replaced)."""
        self._wake.set()
        self.task = self._tasks.own(self._run(conn, generation), "replay")

    def wake(self, subject: str) -> None:
        """An item was queued: replay it soon, unless its subject waits out a backoff."""
        if not self._outbox.destinations.waiting(subject):
            self._wake.set()

    def cancel(self) -> None:
        """Stop the replay (the connection was lost); its items stay queued."""
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _run(self, conn: Connection, generation: int) -> None:
        """Replay passes while this connection lasts: at once, then when woken or due."""
        outbox = self._outbox
        first = True
        while generation == self._session.generation:
            self._wake.clear()
            outbox.expire()
            if outbox.count:
                await self._pass(conn, generation, announce=first)
                first = False
            due = outbox.destinations.next_due()
            if due is not None:
                timeout: float | None = max(due - self._clock(), 0.0)
            elif outbox.count:
                timeout = self._recheck_s  # left behind without a backoff (a spool error)
            else:
                timeout = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _pass(self, conn: Connection, generation: int, *, announce: bool) -> None:
        """Send the queue oldest first, skipping subjects that wait or failed in this pass.

        JetStream items go out with up to ``max_in_flight`` PubAcks awaited at once (each
        carries its ``Nats-Msg-Id``, so a resend is stored once); core items are sent inline.
        A subject that failed before sends one item alone (a probe) before the rest.
        """
        outbox = self._outbox
        dest = outbox.destinations
        tally = _Tally()
        # Logged at the first item a pass tries (at once for a connection's first pass), so
        # every NATS_RETRY_COMPLETE has its NATS_RETRY_PENDING.
        tally.announced = announce
        if announce:
            self._t.replay_started(outbox.count)
        skip: set[str] = set()
        # PubAcks awaited (task -> subject), at most max_in_flight: one callback per task.
        window: dict[asyncio.Task[None], str] = {}
        slots = asyncio.Semaphore(self._max_in_flight)
        windows: dict[str, float | None] = {}  # duplicate window by subject, this pass
        loop = asyncio.get_running_loop()

        def finished(task: asyncio.Task[None]) -> None:
            del window[task]
            slots.release()

        async def drain(subject: str) -> None:
            """Wait for the PubAcks of ``subject`` in flight (a probe, a core item after)."""
            mine = [task for task, of in window.items() if of == subject]
            if mine:
                await asyncio.wait(mine)

        cursor = 0
        try:
            while generation == self._session.generation:
                try:
                    items = outbox.batch_after(cursor, _REPLAY_BATCH)
                except SpoolError as exc:
                    self._t.spool_failed("read", exc)
                    break
                if not items:
                    break
                for item in items:
                    cursor = item.id
                    subject = item.op.subject
                    if subject in skip:
                        continue
                    if dest.waiting(subject):
                        skip.add(subject)
                        continue
                    if dest.probing(subject):
                        await drain(subject)  # the probe goes alone
                        if subject in skip:
                            continue
                    if item.op.operation is not Operation.PUBLISH_WITH_ACK:
                        await drain(subject)  # order per subject: after its PubAcks
                        if subject not in skip:
                            await self._replay_one(conn, generation, item, skip, tally)
                        continue
                    if subject not in windows:
                        windows[subject] = await self._dedup_window(conn, subject)
                    self._check_dedup_window(item, windows[subject])
                    await slots.acquire()
                    if subject in skip or generation != self._session.generation:
                        slots.release()
                        continue
                    task = loop.create_task(self._replay_one(conn, generation, item, skip, tally))
                    window[task] = subject
                    task.add_done_callback(finished)
                outbox.gauges()
                await asyncio.sleep(0)  # intake keeps flowing between batches
            if window:
                await asyncio.wait(list(window))
        finally:
            for task in list(window):
                task.cancel()
            outbox.end_pass()
            outbox.gauges()
            if tally.announced:
                self._t.replay_complete(tally.sent, tally.failed, outbox.count)

    async def _replay_one(
        self, conn: Connection, generation: int, item: PendingItem, skip: set[str], tally: _Tally
    ) -> None:
        """Send one queued item and settle it: exactly one of sent, not_sent, poisoned."""
        outbox = self._outbox
        if not outbox.sending(item):
            return  # dropped (expiry, drop_oldest) since it was read: counted there
        if not tally.announced:
            tally.announced = True
            self._t.replay_started(outbox.count)
        subject = item.op.subject
        try:
            await self.send(conn, item.op)
        except asyncio.CancelledError:
            outbox.not_sent(item)
            raise
        except LinkError as err:
            tally.failed += 1
            self._t.replay_item(sent=False)
            if err.connection_lost:
                outbox.not_sent(item)
                self._t.failed(item.op.operation, err, subject)
                self._session.on_lost(generation, conn, err)
                return
            if await self._is_poison(conn, item, err):
                self._t.failed(item.op.operation, err, subject, log=False)  # said once, below
                outbox.poisoned(item, err)
                return
            self._t.failed(item.op.operation, err, subject)
            skip.add(subject)
            outbox.not_sent(item)
            outbox.destinations.failed(subject, err.reason)
            return
        outbox.sent(item)
        outbox.destinations.healthy(subject)
        tally.sent += 1
        self._t.replay_item(sent=True)

    async def _is_poison(self, conn: Connection, item: PendingItem, err: LinkError) -> bool:
        """True when retrying cannot fix ``err``: a refusal, or no stream for the subject.

        ``no_responders`` while a stream holds the subject is a stream between leaders: it
        passes, so the item stays queued.
        """
        if err.retriable:
            return False
        if err.reason is Reason.NO_RESPONDERS and item.op.operation is Operation.PUBLISH_WITH_ACK:
            return not await self.stream_exists(conn, item.op.subject)
        return True

    async def _dedup_window(self, conn: Connection, subject: str) -> float | None:
        """The duplicate window of the stream holding ``subject``; None when unknown."""
        try:
            info = await conn.find_stream(subject, self.request_timeout_s)
        except LinkError:
            return None
        return info.duplicate_window_s if info and info.duplicate_window_s else None

    def _check_dedup_window(self, item: PendingItem, window_s: float | None) -> None:
        """Say so before sending an item older than its stream's duplicate window.

        Past the window the server no longer remembers the id, so if an earlier send of this
        item was stored after all, this one is a duplicate. Looked up once per subject and
        pass; when the stream cannot be found the check is skipped.
        """
        age = self._wall() - item.enqueued_at
        if window_s is not None and age > window_s:
            msg_id = (item.op.headers or {}).get(MSG_ID, "")
            self._t.past_dedup_window(item.op.subject, msg_id, age, window_s)
