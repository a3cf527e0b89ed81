"""Where decide requests come in: the NATS queue-group subscription and ``POST /v1/decide``.

Both hand the raw bytes to ``DecideService`` (``service.decide``) and send what it answers;
they share its ``decide_max_in_flight`` slots. Over NATS the subscription is direct (its
handler a plain function called as the client reads each request): a decide answered without
waiting is replied to there through ``Link.reply_now`` (sent now or dropped, never queued; no
task, no coroutine), one that waits for a PubAck gets a task of its own, and so does a reply
that must wait for the client's buffer. A stop drains the subscription, and ``drain`` waits
for the requests in hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import partial
from time import perf_counter
from typing import Any

from aiohttp import web

from natsrouter.config import Settings
from natsrouter.link.link import Link
from natsrouter.link.outcome import Outcome, Result
from natsrouter.link.sender import SENT
from natsrouter.link.subscriptions import Subscription
from natsrouter.link.transport import InboundMessage
from natsrouter.routing.messages import ErrorCode, RequestError
from natsrouter.routing.strict_json import dumps as _dumps
from natsrouter.service.answers import Answer
from natsrouter.service.decide import REPLY_FAILED, DecideService, Waiting


class NatsDecideIntake:
    """Decide requests on ``decide_subject`` in the queue group, answered on their inbox."""

    def __init__(self, link: Link, service: DecideService, settings: Settings) -> None:
        self._link = link
        self._service = service
        self._subject = settings.decide_subject
        self._reply_subject = f"{settings.decide_subject}.reply"
        self._queue = settings.decide_queue_group
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: The service's bound, read once: the handler takes and gives back slots itself.
        #: It also bounds the overloaded answers whose publish waits, each in a task that
        #: holds no slot (the answers are not leaving: a stalled socket past the client's
        #: buffer limit, an injected delay): beyond it, one is dropped unsent.
        self._max_in_flight = settings.decide_max_in_flight
        self._overloaded_waiting = 0
        #: DecideService.count's step, resolved once: called for every decide.
        self._decided = service.events.decided

    async def start(self) -> None:
        # Direct: each request is handed to _on_message as nats-py's parser reads it, with no
        # message object, queue, task or coroutine of the client's (Link.subscribe_direct).
        self._subscription = await self._link.subscribe_direct(
            self._subject, self._on_message, self._queue
        )

    def _on_message(self, msg: InboundMessage) -> None:
        # Never waits: called from the client's read loop. A decide answered at once is
        # replied to here; one that waits (a PubAck) gets a task of its own. The client's
        # pending limits do not apply to this subscription (nothing is buffered): the bound
        # is decide_max_in_flight, past which requests are answered `overloaded` at once.
        service = self._service
        if service.in_flight >= self._max_in_flight:  # service.enter() refusing
            if self._overloaded_waiting >= self._max_in_flight:
                service.overloaded_unsent("nats")
                return
            _, body = service.overloaded("nats")
            sent = self._reply_now(msg, partial(_dumps, body))
            if not isinstance(sent, bool):
                self._overloaded_waiting += 1
                task = asyncio.get_running_loop().create_task(self._await(sent))
                self._tasks.add(task)
                task.add_done_callback(self._overloaded_done)
            return
        service.in_flight += 1  # the slot service.enter() takes
        try:
            started = service.start(msg.data, msg.headers, "nats")
        except BaseException:
            service.leave()
            raise
        if not isinstance(started, Answer):
            self._own(self._finish(msg, started))
            return
        # Answered at once (most decides): what _reply_now, _settled and count do, written
        # out for an inbox and a reply sent now, the same otherwise (a call each is ~0.1 µs).
        try:
            reply = msg.reply
            if not reply:  # answered on <subject>.reply: a publish that may be queued
                self._own(
                    self._counted(started, self._publish(self._reply_subject, started.encoded))
                )
                return
            try:  # an inbox: sent now or dropped, never queued
                result = self._link.reply_now(reply, started.encoded())
            except Exception as exc:  # noqa: BLE001 - called from the read loop: say it here
                service.events.internal_error("decide reply", exc)
                result = None
            if result is SENT:
                outcome = started.outcome
            elif result is None:
                outcome = REPLY_FAILED
            elif isinstance(result, Result):
                outcome = started.outcome if self._settled(result) else REPLY_FAILED
            else:
                # The reply must wait (the client's buffer past its limit, an injected
                # delay): its own task, which holds the slot until it is done.
                self._own(self._counted(started, self._settled_later(result)))
                return
            self._decided(outcome, "nats", perf_counter() - started.started)
        except BaseException:
            service.in_flight -= 1  # service.leave()
            raise
        service.in_flight -= 1  # service.leave()

    def _own(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in a task ``drain`` waits for; its slot is given back when it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _overloaded_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._overloaded_waiting -= 1

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._service.leave()

    @staticmethod
    async def _await(sent: Coroutine[Any, Any, bool]) -> None:
        await sent

    async def _counted(self, answer: Answer, sent: Coroutine[Any, Any, bool]) -> None:
        self._service.count(answer, "nats", reply_sent=await sent)

    async def _finish(self, msg: InboundMessage, waiting: Waiting) -> None:
        answer = await self._service.finish(waiting, "nats")
        sent = self._reply_now(msg, answer.encoded)
        if not isinstance(sent, bool):
            sent = await sent
        self._service.count(answer, "nats", reply_sent=sent)

    def _reply_now(
        self, msg: InboundMessage, encode: Callable[[], bytes]
    ) -> bool | Coroutine[Any, Any, bool]:
        """Publish the answer ``encode`` gives: True when the link sent it, False when not,
        or a coroutine saying so once what the publish must wait for is done."""
        reply = msg.reply
        if not reply:
            # Without a reply inbox, answered on <subject>.reply (CONTRACT §1): a publish
            # that may be queued while disconnected, so a coroutine.
            return self._publish(self._reply_subject, encode)
        try:  # an inbox: sent now or dropped, never queued
            result = self._link.reply_now(reply, encode())
        except Exception as exc:  # noqa: BLE001 - called from the read loop: say it here
            self._service.events.internal_error("decide reply", exc)
            return False
        if isinstance(result, Result):
            return self._settled(result)
        return self._settled_later(result)

    async def _settled_later(self, result: Coroutine[Any, Any, Result]) -> bool:
        try:
            return self._settled(await result)
        except Exception as exc:  # noqa: BLE001 - nobody awaits this task: say it here
            self._service.events.internal_error("decide reply", exc)
            return False

    async def _publish(self, subject: str, encode: Callable[[], bytes]) -> bool:
        try:
            result = await self._link.publish(subject, encode())
        except Exception as exc:  # noqa: BLE001 - nobody awaits this task: say it here
            self._service.events.internal_error("decide reply", exc)
            return False
        return self._settled(result)

    def _settled(self, result: Result) -> bool:
        """True for a reply sent; else the failure reported, and False."""
        if result.outcome is not Outcome.SENT:
            # Queued or dropped: the caller is likely to time out before a late answer.
            reason = result.reason.value if result.reason is not None else None
            self._service.events.reply_failed(result.outcome.value, reason)
            return False
        return True

    async def stop(self) -> None:
        """Stop taking requests, handing on the ones already received (they get answers).

        Draining, not unsubscribing: requests the server delivered before it saw the UNSUB
        are still answered; other Router processes in the group get the later ones.
        """
        if self._subscription is not None:
            await self._link.unsubscribe(self._subscription, drain=True)
            self._subscription = None

    async def drain(self) -> None:
        """Wait for the requests being answered."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _response(status: int, body: dict[str, Any]) -> web.Response:
    """The answer as JSON; a 429 or 503 says when to try again (``Retry-After``, seconds)."""
    headers = {}
    retry_after = body.get("error", {}).get("details", {}).get("retry_after_s")
    if status in (429, 503) and retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return web.Response(
        body=_dumps(body), status=status, headers=headers, content_type="application/json"
    )


def http_app(service: DecideService, max_payload_size: int) -> web.Application:
    """``POST /v1/decide``: the DecideResponse or ErrorResponse with the code's HTTP status."""

    async def decide(request: web.Request) -> web.Response:
        # The body is read before a slot is taken: a client sending slowly must not hold
        # slots that NATS requests need (reading is bounded by client_max_size).
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            error = RequestError(
                ErrorCode.INVALID_REQUEST,
                f"payload is over the limit of {max_payload_size} bytes",
                {"limit": max_payload_size},
            )
            return _response(*service.refuse(error, "http"))
        if not service.enter():
            return _response(*service.overloaded("http"))
        try:
            return _response(*await service.handle(raw, request.headers, "http"))
        finally:
            service.leave()

    # One byte over the limit lets the service say "over the limit" in the contract's words.
    app = web.Application(client_max_size=max_payload_size + 1)
    app.router.add_post("/v1/decide", decide)
    return app
