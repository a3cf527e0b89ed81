"""The sender: sends the outbox's items and retries unsettled JetStream publishes.

The other half of the outbox (outbox.py keeps and accounts, this module sends). It
- sends one operation and counts its success (``send``);
- settles a failed send: a lost connection is reported, a retriable failure is held in the
  outbox, a refusal ends ``failed`` (``send_failed``);
- retries an unsettled JetStream publish (timeout, a stream between leaders) with its
  ``Nats-Msg-Id`` until ``js_publish_retry_deadline_ms`` (``retry_publish``);
- replays the pending queue oldest first on each new connection, and again now and then
  while items remain (``start_replay``, ``maybe_replay_again``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from natsrouter.config import Settings
from natsrouter.errors import LinkError, Reason
from natsrouter.link.connection import ConnectionSupervisor
from natsrouter.link.outbox import Outbox
from natsrouter.link.outcome import Operation, Outcome, Result
from natsrouter.link.pending import PendingItem, PendingOp
from natsrouter.link.spool import SpoolError
from natsrouter.link.tasks import TaskOwner
from natsrouter.link.telemetry import LinkTelemetry
from natsrouter.link.transport import Connection

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
# Replay yields to the event loop after this many items, so intake keeps flowing.
_REPLAY_BATCH = 100


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
        replay_changed: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._session = session
        self._t = telemetry
        self._tasks = tasks
        self._clock = clock
        self._wall = wall_clock
        self._direct = direct
        self._replay_changed = replay_changed
        self.request_timeout_s = settings.nats_request_timeout_ms / 1000
        self.retry_deadline_s = settings.js_publish_retry_deadline_ms / 1000
        metrics = telemetry.metrics
        self._pwa_total = metrics.operation_total[Operation.PUBLISH_WITH_ACK]
        self._pwa_duration = metrics.duration_of[Operation.PUBLISH_WITH_ACK]
        self.task: asyncio.Task[None] | None = None
        self._last_replay = 0.0

    @property
    def replaying(self) -> bool:
        return self.task is not None and not self.task.done()

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
            return self._outbox.hold(op, err.reason)
        return self._outbox.failed(err)

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
                break  # lost, or a replay runs: the queue keeps the order and the id
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
        return outbox.hold(op, err.reason)

    async def stream_exists(self, conn: Connection, subject: str) -> bool:
        """True when a stream holds ``subject``, or when the server cannot say right now."""
        try:
            return await conn.find_stream(subject, self.request_timeout_s) is not None
        except LinkError:
            return True

    # -- replay ------------------------------------------------------------------------------

    def start_replay(self, conn: Connection, generation: int) -> None:
        self._outbox.expire()
        if self._outbox.count:
            self.task = self._tasks.own(self._replay(conn, generation), "replay")
            self._replay_changed()

    def maybe_replay_again(self, conn: Connection, generation: int) -> None:
        """Items a replay left behind (refused by the server) are retried now and then."""
        due = self._clock() - self._last_replay >= self._settings.nats_max_reconnect_delay_ms / 1000
        if not self.replaying and due and self._outbox.count:
            self.start_replay(conn, generation)

    def cancel(self) -> None:
        """Stop a running replay (the connection was lost); its items stay queued."""
        task = self.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _replay(self, conn: Connection, generation: int) -> None:
        """Send pending operations oldest first; an item that fails stays queued."""
        outbox = self._outbox
        self._t.replay_started(outbox.count)
        success = failed = 0
        cursor = 0
        windows: dict[str, float | None] = {}  # duplicate window by subject, this replay
        try:
            while generation == self._session.generation:
                try:
                    item = outbox.oldest_after(cursor)
                except SpoolError as exc:
                    self._t.spool_failed("read", exc)
                    break
                if item is None:
                    break
                cursor = item.id
                if item.op.operation is Operation.PUBLISH_WITH_ACK:
                    await self._check_dedup_window(conn, item, windows)
                try:
                    await self.send(conn, item.op)
                except LinkError as err:
                    failed += 1
                    outbox.not_sent(item)
                    self._t.replay_item(sent=False)
                    self._t.failed(item.op.operation, err, item.op.subject)
                    if err.connection_lost:
                        self._session.on_lost(generation, conn, err)
                        break
                    continue
                outbox.sent(item)
                success += 1
                self._t.replay_item(sent=True)
                if success % _REPLAY_BATCH == 0:
                    outbox.gauges()
                    await asyncio.sleep(0)
        finally:
            self.task = None
            self._replay_changed()
            self._last_replay = self._clock()
            outbox.gauges()
            self._t.replay_complete(success, failed, outbox.count)

    async def _check_dedup_window(
        self, conn: Connection, item: PendingItem, windows: dict[str, float | None]
    ) -> None:
        """Say so before sending an item older than its stream's duplicate window.

        Past the window the server no longer remembers the id, so if an earlier send of this
        item was stored after all, this one is a duplicate. Looked up once per subject and
        replay; when the stream cannot be found the check is skipped.
        """
        subject = item.op.subject
        if subject not in windows:
            try:
                info = await conn.find_stream(subject, self.request_timeout_s)
            except LinkError:
                info = None
            windows[subject] = info.duplicate_window_s if info and info.duplicate_window_s else None
        window = windows[subject]
        age = self._wall() - item.enqueued_at
        if window is not None and age > window:
            msg_id = (item.op.headers or {}).get(MSG_ID, "")
            self._t.past_dedup_window(subject, msg_id, age, window)
