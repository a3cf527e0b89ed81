"""The decide path: raw bytes in, a DecideResponse or an ErrorResponse out.

``DecideService.handle`` never raises: bad input gets its contract code, an unexpected error
gets ``internal`` (logged with its traceback) and the process keeps serving. Each request is
counted by outcome and timed by transport. Both transports (``service.decide_intakes``: NATS
request-reply in a queue group, ``POST /v1/decide``) share ``decide_max_in_flight``: beyond
it a request is answered ``overloaded`` at once, unparsed (an answer, where a full buffer
would have dropped it). The HTTP path does not need NATS to answer: while NATS is down it
still decides, and the response says what happened to the assignment (``queued``, ...).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any, NamedTuple

from natsrouter.config import Settings
from natsrouter.link.outcome import Outcome
from natsrouter.routing.decider import Decider, Decision
from natsrouter.routing.messages import (
    DecideRequest,
    ErrorCode,
    RequestError,
    error_response,
    parse_decide_request,
)
from natsrouter.routing.subjects import AssignmentSubjects, SubjectRefusal
from natsrouter.service.answers import Answer
from natsrouter.service.assignments import AssignmentPusher, Pushed
from natsrouter.service.envelope import new_trace_id, trace_from_headers
from natsrouter.service.events import RouterEvents
from natsrouter.service.remembered import DecideMemory, Remembered, asked, same_asked
from natsrouter.service.shared_decide import first_answer
from natsrouter.service.shared_state import SharedState

# What an overloaded answer suggests: in-flight decides take milliseconds.
OVERLOAD_RETRY_AFTER_S = 1
#: ``router_decide_total`` outcome of a NATS decide whose answer could not be published.
REPLY_FAILED = "reply_failed"
# Header ids replace the payload's, so they keep its rules (decide_request.schema.json):
# they become header values of the assignment and usage event, and a label of a log line.
_HEADER_ID_MAX = 256
# A lone surrogate too: aiohttp reads a header byte that is not UTF-8 as one (surrogateescape).
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


# A refusal quotes the client's text (a value, a key): cut, so that the answer fits a NATS
# message and the log line stays a line, however large the request.
_QUOTED_MAX = 512


def _valid_id(value: object) -> bool:
    """An id by the payload's rules: a string of at most 256 characters, no control ones."""
    return isinstance(value, str) and len(value) <= _HEADER_ID_MAX and not _CONTROL.search(value)


def _bad_header(headers: Mapping[str, str] | None) -> str | None:
    """The name of a ``trace_id`` or ``tenant_id`` header that breaks the payload's rules."""
    if not headers:
        return None
    for name in ("trace_id", "tenant_id"):
        value = headers.get(name)
        if value and not _valid_id(value):
            return name
    return None


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _QUOTED_MAX:
        return f"{value[: _QUOTED_MAX - 30]}... ({len(value):,} characters)"
    return value


def _bounded(err: RequestError) -> RequestError:
    """``err`` with its message and detail strings cut to ``_QUOTED_MAX`` characters."""
    if len(err.message) <= _QUOTED_MAX and all(
        not isinstance(v, str) or len(v) <= _QUOTED_MAX for v in err.details.values()
    ):
        return err
    details = {k: _cut(v) for k, v in err.details.items()}
    return RequestError(err.code, _cut(err.message), details)


def _refuse_header(name: str | None) -> None:
    """Raise ``invalid_request`` naming the header ``_bad_header`` found, if any."""
    if name is not None:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"{name} header: at most {_HEADER_ID_MAX} characters, no control characters",
            {"field": name},
        )


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
        request_id if _valid_id(request_id) else None,
        trace_id if _valid_id(trace_id) else None,
    )


class Waiting(NamedTuple):
    """A request read and checked, whose answer waits (a push, or a copy being decided)."""

    request: DecideRequest
    trace_id: str
    size: int
    started: float


class DecideService:
    def __init__(
        self,
        settings: Settings,
        decider: Decider,
        assignments: AssignmentPusher,
        events: RouterEvents,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedState | None = None,
    ) -> None:
        self._settings = settings
        #: Across Router processes (``shared_state_enabled``); None: this process only.
        self._shared = shared
        self._max_in_flight = settings.decide_max_in_flight
        # Read once (the settings are frozen): start() runs for every decide.
        self._max_payload = settings.nats_max_payload_size
        self._allowed_tenants = settings.allowed_tenants
        #: Decide requests being answered now, over both transports.
        self.in_flight = 0
        self._memory = DecideMemory(settings.idempotency_ttl_seconds, clock)
        #: The keys being decided now (``DecideMemory.busy``), looked up without a call.
        self._busy = self._memory.busy_keys
        self._decider = decider
        self._assignments = assignments
        self.events = events
        self._subjects = AssignmentSubjects(
            settings.assignment_subject,
            settings.assignment_subjects_allowed,
            (
                settings.decide_subject,
                settings.ack_subject,
                settings.result_subject,
                settings.usage_subject,
            ),
        )

    async def handle(
        self, raw: bytes, headers: Mapping[str, str] | None, transport: str
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, response document) for one request, counted; never raises."""
        answer = await self.answer(raw, headers, transport)
        self.count(answer, transport)
        return answer.status, answer.body

    def count(self, answer: Answer, transport: str, *, reply_sent: bool = True) -> None:
        """Count an answer by its outcome, or as ``reply_failed`` when it never left."""
        outcome = answer.outcome if reply_sent else REPLY_FAILED
        self.events.decided(outcome, transport, time.perf_counter() - answer.started)

    # -- admission -------------------------------------------------------------------------

    def enter(self) -> bool:
        """Take an in-flight slot; False when ``decide_max_in_flight`` are being answered."""
        if self.in_flight >= self._max_in_flight:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1

    def overloaded(self, transport: str) -> tuple[int, dict[str, Any]]:
        """The answer to a request beyond ``decide_max_in_flight``, given without reading it."""
        limit = self._max_in_flight
        error = RequestError(
            ErrorCode.OVERLOADED,
            f"{limit} decide requests are being answered; try again shortly",
            {"limit": limit, "retry_after_s": OVERLOAD_RETRY_AFTER_S},
        )
        self.events.decide_overloaded(transport, limit)
        self.events.decided(ErrorCode.OVERLOADED.value, transport, 0.0)
        return error.code.http_status, error_response(error)

    def overloaded_unsent(self, transport: str) -> None:
        """A request beyond ``decide_max_in_flight`` left unanswered: as many overloaded
        answers as there are slots already wait for their publish. Logged as overloaded and
        as an answer not sent, counted ``reply_failed``."""
        self.events.decide_overloaded(transport, self._max_in_flight)
        self.events.reply_failed(Outcome.DROPPED.value, "overloaded_answers_waiting")
        self.events.decided(REPLY_FAILED, transport, 0.0)

    async def answer(self, raw: bytes, headers: Mapping[str, str] | None, transport: str) -> Answer:
        """The answer to one request, not yet counted; never raises."""
        started = self.start(raw, headers, transport)
        return started if isinstance(started, Answer) else await self.finish(started, transport)

    def start(
        self, raw: bytes, headers: Mapping[str, str] | None, transport: str
    ) -> Answer | Waiting:
        """The answer when it needs no waiting; else what ``finish`` needs. Never raises.

        Most decides wait for nothing (no assignment to push, no shared state to ask, no copy
        of the request being decided): answered here, the NATS intake needs no task per
        request.
        """
        started = perf_counter()
        request: DecideRequest | None = None
        if headers:
            bad_header = _bad_header(headers)
            trace_id = None if bad_header == "trace_id" else trace_from_headers(headers)
        else:  # what the header steps give without headers, without their calls
            bad_header = trace_id = None
        try:
            parsed = parse_decide_request(raw, self._max_payload)
            if headers:
                _refuse_header(bad_header)
                request = self._apply_headers(parsed, trace_id, headers)
            else:
                request = parsed
            trace_id = request.trace_id or new_trace_id()
            if self._allowed_tenants:
                self._check_tenant(request.tenant_id)
            if request.assignment_subject is not None:
                self._check_subject(request.assignment_subject)
            key = (request.tenant_id, request.request_id)
            # Shared state is asked over NATS: that waits, so it takes the task path too.
            if request.push_assignment or self._shared is not None or key in self._busy:
                return Waiting(request, trace_id, len(raw), started)
            # Decide, or give the decision already given: nothing to wait for.
            memory = self._memory
            entry = memory.get(key)
            if entry is None:
                decision = self._decider.decide(request)
                memory.remember_new(key, request, decision, len(raw))
            else:
                self._check_same(entry, request)
                self.events.decide_replayed()
                decision = entry.decision
            return Answer(200, None, "ok", started, (decision, request.request_id, trace_id))
        except Exception as exc:  # noqa: BLE001 - sorted out in _failed, which never raises
            return self._failed(exc, raw, request, trace_id, transport, started)

    async def finish(self, waiting: Waiting, transport: str) -> Answer:
        """The answer to a request that waits (a push, or a copy being decided)."""
        request, trace_id = waiting.request, waiting.trace_id
        try:
            decision, pushed = await self._decide_once(request, trace_id, waiting.size)
            return self._ok(request, trace_id, decision, pushed, waiting.started)
        except Exception as exc:  # noqa: BLE001 - sorted out in _failed, which never raises
            return self._failed(exc, b"", request, trace_id, transport, waiting.started)

    @staticmethod
    def _ok(
        request: DecideRequest,
        trace_id: str,
        decision: Decision,
        pushed: Pushed | None,
        started: float,
    ) -> Answer:
        return Answer(200, None, "ok", started, (decision, request.request_id, trace_id), pushed)

    def _failed(
        self,
        exc: Exception,
        raw: bytes,
        request: DecideRequest | None,
        trace_id: str | None,
        transport: str,
        started: float,
    ) -> Answer:
        """The ErrorResponse for a refusal (its contract code) or anything else (internal)."""
        if isinstance(exc, RequestError):
            err = _bounded(exc)  # quoted strings cut, as everywhere a refusal is answered
            if request is None:  # refused while parsing: echo what can be read
                request_id, payload_trace_id = _context_of(raw)
                trace_id = trace_id or payload_trace_id
            else:
                request_id = request.request_id
            self.events.decide_refused(
                err.code.value, err.message, transport, request_id=request_id, **err.details
            )
            return Answer(
                err.code.http_status,
                error_response(err, request_id, trace_id),
                err.code.value,
                started,
            )
        # The contract's `internal`: answer, keep serving.
        request_id = request.request_id if request else None
        self.events.internal_error("decide", exc, request_id=request_id)
        error = RequestError(ErrorCode.INTERNAL, "internal error")
        body = error_response(error, request_id, trace_id)
        return Answer(500, body, ErrorCode.INTERNAL.value, started)

    @staticmethod
    def _check_same(entry: Remembered, request: DecideRequest) -> None:
        if not same_asked(entry.asked, asked(request)):
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"request_id {request.request_id!r} was used for a different request "
                "within idempotency_ttl_seconds",
                {"field": "request_id"},
            )

    async def _decide_once(
        self, request: DecideRequest, trace_id: str, size: int
    ) -> tuple[Decision, Pushed | None]:
        """Decide (and push), or give the answer already given to this request."""
        key = (request.tenant_id, request.request_id)
        memory = self._memory
        if key in self._busy:  # most are not: no coroutine made for wait_turn
            await memory.wait_turn(key)
        entry = memory.get(key)
        if entry is not None:
            self._check_same(entry, request)
            # Sent, or still waiting in the link's queue; a queued item that left the queue
            # may have been dropped, so it is pushed again (stored once: same Nats-Msg-Id).
            kept = entry.pushed is not None and (
                entry.pushed.result.outcome is Outcome.SENT
                or self._assignments.still_queued(entry.pushed)
            )
            if not request.push_assignment or kept:
                self.events.decide_replayed()
                return entry.decision, entry.pushed if request.push_assignment else None
        memory.begin(key)
        try:
            if entry is None:
                shared = self._shared
                if shared is None:
                    # A new request, decided here: remembered without an entry built (about
                    # 2 µs of a push, docs/performance.md), with the same values as below.
                    decision = self._decider.decide(request)
                    if not request.push_assignment:
                        memory.remember_new(key, request, decision, size)
                        return decision, None
                    assignment_id = str(uuid.uuid4())
                    try:
                        pushed = await self._assignments.push(
                            request, decision, trace_id, assignment_id
                        )
                    except BaseException:
                        memory.remember_new(key, request, decision, size, None, assignment_id)
                        raise
                    if pushed.result.outcome in (Outcome.SENT, Outcome.QUEUED):
                        # Busy until its result comes (least_busy, the providers view).
                        self._decider.health.in_flight.started(assignment_id, decision.provider_id)
                    memory.remember_new(key, request, decision, size, pushed, assignment_id)
                    return decision, pushed
                entry = await first_answer(shared, self._decider, request, size)
            else:
                self.events.decide_replayed()
            if request.push_assignment:
                previous = entry.pushed.assignment_id if entry.pushed else entry.assignment_id
                new_id = previous is None
                if new_id:
                    previous = entry.assignment_id = str(uuid.uuid4())
                try:
                    entry.pushed = await self._assignments.push(
                        request, entry.decision, trace_id, previous
                    )
                except BaseException:
                    if new_id:
                        # A copy cancelled while its push waits (the message may be stored)
                        # leaves the id a retry pushes again. Remembered here, not before the
                        # push: no one reads this key until end(), and a push is remembered
                        # once, with its result, below.
                        memory.remember(key, entry)
                    raise
                if entry.pushed.result.outcome in (Outcome.SENT, Outcome.QUEUED):
                    # Busy until its result comes (least_busy, the providers view).
                    self._decider.health.in_flight.started(
                        entry.pushed.assignment_id, entry.decision.provider_id
                    )
            memory.remember(key, entry)
        finally:
            memory.end(key)
        return entry.decision, entry.pushed if request.push_assignment else None

    def _check_tenant(self, tenant_id: str) -> None:
        allowed = self._settings.allowed_tenants
        if allowed and tenant_id not in allowed:
            self.events.tenant_rejected("decide", tenant_id)
            raise RequestError(
                ErrorCode.UNAUTHORIZED,
                f"tenant {tenant_id!r} is not allowed",
                {"tenant_id": tenant_id},
            )

    def _check_subject(self, subject: str) -> None:
        refusal = self._subjects.refusal(subject)
        if refusal is not None:
            self.events.assignment_subject_refused(refusal.value)
            why = (
                "is reserved to the Router, the server or replies"
                if refusal is SubjectRefusal.RESERVED
                else "is not in assignment_subjects_allowed"
            )
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"assignment_subject: {subject!r} {why}",
                {"field": "assignment_subject", "reason": refusal.value},
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
        return request._replace(trace_id=trace_id, tenant_id=tenant_id)
