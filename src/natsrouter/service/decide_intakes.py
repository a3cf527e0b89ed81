"""Where decide requests come in: the NATS queue-group subscription and ``POST /v1/decide``.

Both hand the raw bytes to ``DecideService`` (``service.decide``) and send what it answers;
they share its ``decide_max_in_flight`` slots. Over NATS a decide answered without waiting
is replied to from the subscription callback (no task), one that waits for a PubAck gets a
task of its own; the answer goes to the request's inbox through ``Link.reply`` (sent now or
dropped, never queued). A stop drains the subscription, and ``drain`` waits for the requests
in hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from aiohttp import web

from natsrouter.config import Settings
from natsrouter.link.link import Link
from natsrouter.link.outcome import Outcome
from natsrouter.link.subscriptions import Subscription
from natsrouter.link.transport import InboundMessage
from natsrouter.routing.messages import ErrorCode, RequestError
from natsrouter.routing.strict_json import dumps as _dumps
from natsrouter.service.decide import Answer, DecideService, Waiting


class NatsDecideIntake:
    """Decide requests on ``decide_subject`` in the queue group, answered on their inbox."""

    def __init__(self, link: Link, service: DecideService, settings: Settings) -> None:
        self._link = link
        self._service = service
        self._subject = settings.decide_subject
        self._queue = settings.decide_queue_group
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._subscription = await self._link.subscribe(
            self._subject, self._on_message, self._queue
        )

    async def _on_message(self, msg: InboundMessage) -> None:
        # Never wait here: nats-py delivers one message at a time, and a callback that waits
        # lets its buffer fill until it drops requests unanswered (a slow consumer).
        service = self._service
        if not service.enter():
            _, body = service.overloaded("nats")
            await self._reply(msg, partial(_dumps, body))
            return
        started = service.start(msg.data, msg.headers, "nats")
        if isinstance(started, Answer):
            # Answered without waiting: replying here costs no task. A reply is sent or
            # dropped at once, never waited for (Link.reply), so this does not hold the queue.
            # (_send, written out: a coroutine less per decide.)
            try:
                sent = await self._reply(msg, started.encoded)
                service.count(started, "nats", reply_sent=sent)
            finally:
                service.leave()
            return
        task = asyncio.get_running_loop().create_task(self._finish(msg, started))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._service.leave()

    async def _finish(self, msg: InboundMessage, waiting: Waiting) -> None:
        await self._send(msg, await self._service.finish(waiting, "nats"))

    async def _send(self, msg: InboundMessage, answer: Answer) -> None:
        sent = await self._reply(msg, answer.encoded)
        self._service.count(answer, "nats", reply_sent=sent)

    async def _reply(self, msg: InboundMessage, encode: Callable[[], bytes]) -> bool:
        """Publish the answer ``encode`` gives; True only when the link sent it."""
        # A request without a reply inbox is answered on <subject>.reply (CONTRACT §1).
        subject = msg.reply or f"{self._subject}.reply"
        try:
            if msg.reply:  # an inbox: sent now or dropped, never queued
                result = await self._link.reply(msg.reply, encode())
            else:
                result = await self._link.publish(subject, encode())
        except Exception as exc:  # noqa: BLE001 - nobody awaits this task: say it here
            self._service.events.internal_error("decide reply", exc)
            return False
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
