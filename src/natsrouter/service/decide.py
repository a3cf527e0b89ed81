"""The decide path, served two ways: NATS request-reply (queue group) and ``POST /v1/decide``.

``DecideService.handle`` turns raw bytes into a DecideResponse or an ErrorResponse and never
raises: bad input gets its contract code, an unexpected error gets ``internal`` (logged with
its traceback) and the process keeps serving. Each request is counted by outcome and timed by
transport.

Over NATS each request is handled in its own task (nats-py runs a subscription's callback one
message at a time, and a decide with an assignment waits for a PubAck), bounded by
``_MAX_IN_FLIGHT``; ``drain`` waits for them at shutdown. The HTTP path does not need NATS to
answer: while NATS is down it still decides, and the response says what happened to the
assignment (``queued``, ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from natsrouter.config import Settings
from natsrouter.link.link import Link
from natsrouter.link.subscriptions import Subscription
from natsrouter.link.transport import InboundMessage
from natsrouter.routing.decider import Decider
from natsrouter.routing.messages import (
    DecideRequest,
    ErrorCode,
    RequestError,
    error_response,
    parse_decide_request,
)
from natsrouter.service.assignments import AssignmentPusher
from natsrouter.service.envelope import new_trace_id, trace_from_headers
from natsrouter.service.events import RouterEvents

# Decide requests handled at once per process over NATS; more wait in nats-py's buffer.
_MAX_IN_FLIGHT = 1000


def _dumps(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _context_of(raw: bytes) -> tuple[str | None, str | None]:
    """request_id and trace_id of a request that failed validation, when they can be read."""
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    request_id, trace_id = document.get("request_id"), document.get("trace_id")
    return (
        request_id if isinstance(request_id, str) else None,
        trace_id if isinstance(trace_id, str) else None,
    )


class DecideService:
    def __init__(
        self,
        settings: Settings,
        decider: Decider,
        assignments: AssignmentPusher,
        events: RouterEvents,
    ) -> None:
        self._settings = settings
        self._decider = decider
        self._assignments = assignments
        self.events = events

    async def handle(
        self, raw: bytes, headers: Mapping[str, str] | None, transport: str
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, response document) for one request; never raises."""
        started = time.perf_counter()
        request: DecideRequest | None = None
        trace_id = trace_from_headers(headers)
        try:
            request = self._apply_headers(
                parse_decide_request(raw, self._settings.nats_max_payload_size),
                trace_id,
                headers,
            )
            trace_id = request.trace_id or new_trace_id()
            self._check_tenant(request.tenant_id)
            decision = self._decider.decide(request)
            body: dict[str, Any] = {
                "ok": True,
                "decision": decision.to_dict(),
                "context": {"request_id": request.request_id, "trace_id": trace_id},
            }
            if request.push_assignment:
                pushed = await self._assignments.push(request, decision, trace_id)
                body["decision"]["assignment_id"] = pushed.assignment_id
                body["assignment"] = pushed.to_dict()
            outcome, status = "ok", 200
        except RequestError as err:
            if request is None:  # refused while parsing: echo what can be read
                request_id, payload_trace_id = _context_of(raw)
                trace_id = trace_id or payload_trace_id
            else:
                request_id = request.request_id
            body = error_response(err, request_id, trace_id)
            outcome, status = err.code.value, err.code.http_status
            self.events.decide_refused(
                err.code.value, err.message, transport, request_id=request_id, **err.details
            )
        except Exception as exc:  # noqa: BLE001 - the contract's `internal`: answer, keep serving
            request_id = request.request_id if request else None
            self.events.internal_error("decide", exc, request_id=request_id)
            error = RequestError(ErrorCode.INTERNAL, "internal error")
            body = error_response(error, request_id, trace_id)
            outcome, status = ErrorCode.INTERNAL.value, 500
        self.events.decided(outcome, transport, time.perf_counter() - started)
        return status, body

    def _check_tenant(self, tenant_id: str) -> None:
        allowed = self._settings.allowed_tenants
        if allowed and tenant_id not in allowed:
            self.events.tenant_rejected("decide", tenant_id)
            raise RequestError(
                ErrorCode.UNAUTHORIZED,
                f"tenant {tenant_id!r} is not allowed",
                {"tenant_id": tenant_id},
            )

    def refuse(self, error: RequestError, transport: str) -> tuple[int, dict[str, Any]]:
        """Answer a request refused before it could be read (counted and logged the same)."""
        self.events.decide_refused(error.code.value, error.message, transport, **error.details)
        self.events.decided(error.code.value, transport, 0.0)
        return error.code.http_status, error_response(error)

    @staticmethod
    def _apply_headers(
        request: DecideRequest, header_trace_id: str | None, headers: Mapping[str, str] | None
    ) -> DecideRequest:
        """Headers win over payload fields (CONTRACT §1)."""
        if not headers:
            return request
        trace_id = header_trace_id or request.trace_id
        tenant_id = headers.get("tenant_id") or request.tenant_id
        if (trace_id, tenant_id) == (request.trace_id, request.tenant_id):
            return request
        return dataclasses.replace(request, trace_id=trace_id, tenant_id=tenant_id)


class NatsDecideIntake:
    """Decide requests on ``decide_subject`` in the queue group, answered on their inbox."""

    def __init__(self, link: Link, service: DecideService, settings: Settings) -> None:
        self._link = link
        self._service = service
        self._subject = settings.decide_subject
        self._queue = settings.decide_queue_group
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(_MAX_IN_FLIGHT)

    async def start(self) -> None:
        self._subscription = await self._link.subscribe(
            self._subject, self._on_message, self._queue
        )

    async def _on_message(self, msg: InboundMessage) -> None:
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _answer(self, msg: InboundMessage) -> None:
        _, body = await self._service.handle(msg.data, msg.headers, "nats")
        # A request without a reply inbox is answered on <subject>.reply (CONTRACT §1).
        try:
            if msg.reply:  # an inbox: sent now or dropped, never queued
                await self._link.reply(msg.reply, _dumps(body))
            else:
                await self._link.publish(f"{self._subject}.reply", _dumps(body))
        except Exception as exc:  # noqa: BLE001 - nobody awaits this task: say it here
            self._service.events.internal_error("decide reply", exc)

    async def stop(self) -> None:
        """Stop taking requests (other Router processes in the group get them)."""
        if self._subscription is not None:
            await self._link.unsubscribe(self._subscription)
            self._subscription = None

    async def drain(self) -> None:
        """Wait for the requests being answered."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def http_app(service: DecideService, max_payload_size: int) -> web.Application:
    """``POST /v1/decide``: the DecideResponse or ErrorResponse with the code's HTTP status."""

    async def decide(request: web.Request) -> web.Response:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            error = RequestError(
                ErrorCode.INVALID_REQUEST,
                f"payload is over the limit of {max_payload_size} bytes",
                {"limit": max_payload_size},
            )
            status, body = service.refuse(error, "http")
            return web.Response(body=_dumps(body), status=status, content_type="application/json")
        status, body = await service.handle(raw, request.headers, "http")
        return web.Response(body=_dumps(body), status=status, content_type="application/json")

    # One byte over the limit lets the service say "over the limit" in the contract's words.
    app = web.Application(client_max_size=max_payload_size + 1)
    app.router.add_post("/v1/decide", decide)
    return app
