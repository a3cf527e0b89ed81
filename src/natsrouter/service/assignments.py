"""Pushing an ExecAssignment to the workers' JetStream subject, through the link.

``Nats-Msg-Id`` is the assignment id, fixed before the first attempt, so a replay of a queued
assignment, or a retry after an uncertain send, is stored once by the server (within the
stream's duplicate window). The caller gets the link's typed outcome.

The ExecAssignment is written as JSON straight from its fields (``assignment_json``), not
built as a document and walked by the encoder: about half the time, on every push
(tests/unit/test_assignment_json.py proves the bytes, or the refusal, are the same).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from natsrouter.link.link import Link
from natsrouter.link.outcome import Outcome, Result
from natsrouter.routing.decider import REASON_TEXT, Decision
from natsrouter.routing.messages import DecideRequest
from natsrouter.routing.strict_json import dumps_value, escape_json_text
from natsrouter.service.envelope import headers_for
from natsrouter.service.events import RouterEvents


@dataclass(frozen=True)
class Pushed:
    assignment_id: str
    subject: str
    result: Result

    def to_dict(self) -> dict[str, Any]:
        """What the DecideResponse says about the assignment."""
        doc: dict[str, Any] = {
            "assignment_id": self.assignment_id,
            "subject": self.subject,
            "outcome": self.result.outcome.value,
        }
        if self.result.pub_ack is not None:
            doc["stream"] = self.result.pub_ack.stream
            doc["seq"] = self.result.pub_ack.seq
        if self.result.pending_id is not None:
            doc["pending_id"] = self.result.pending_id
        if self.result.reason is not None:
            doc["reason"] = self.result.reason.value
        return doc


#: Each reason as JSON text, written once.
_REASON_JSON = {reason: dumps_value(text) for reason, text in REASON_TEXT.items()}


def assignment_json(
    assignment_id: str, request: DecideRequest, decision: Decision, trace_id: str
) -> bytes:
    """``strict_json.dumps(exec_assignment(...))``, written from the fields (same keys, same
    order, same refusals: ``ValueError`` for NaN or an infinity in the payload)."""
    v, text = dumps_value, escape_json_text  # ids and names are strings by type
    max_latency = request.constraints.max_latency_ms
    # Before the payload is written, as exec_assignment converts it before dumps runs.
    deadline = "null" if max_latency is None else v(int(max_latency))
    task = request.task
    job = f'{{"type":{text(task.type)}'
    if task.payload_ref is not None:
        job += f',"payload_ref":{text(task.payload_ref)}'
    if task.payload is not None:
        job += f',"payload":{v(task.payload)}'
    metadata = request.metadata
    return (
        f'{{"version":"1","assignment_id":{text(assignment_id)},'
        f'"request_id":{text(request.request_id)},"tenant_id":{text(request.tenant_id)},'
        f'"executor":{{"provider_id":{text(decision.provider_id)},"channel":"nats"}},'
        f'"job":{job}}},'
        f'"options":{{"priority":{v(decision.priority)},"deadline_ms":{deadline},'
        f'"retry":{{"max_attempts":{v(decision.retry + 1)},"backoff_ms":1000}}}},'
        f'"correlation":{{"trace_id":{text(trace_id)}}},'
        f'"decision":{{"provider_id":{text(decision.provider_id)},'
        f'"priority":{v(decision.priority)},'
        f'"expected_latency_ms":{v(decision.expected_latency_ms)},'
        f'"expected_cost":{v(decision.expected_cost)},'
        f'"reason":{_REASON_JSON[decision.reason]},"policy_id":{text(decision.policy_id)},'
        f'"fallback_used":{v(decision.fallback_used)}}},'
        f'"metadata":{v(dict(metadata)) if metadata else "{}"}}}'
    ).encode()


class AssignmentPusher:
    def __init__(self, link: Link, default_subject: str, events: RouterEvents) -> None:
        self._link = link
        self._default_subject = default_subject
        self._events = events

    async def push(
        self,
        request: DecideRequest,
        decision: Decision,
        trace_id: str,
        assignment_id: str | None = None,
    ) -> Pushed:
        """Push (again, for a repeated request: same ``assignment_id``, same Nats-Msg-Id)."""
        assignment_id = assignment_id or str(uuid.uuid4())
        subject = request.assignment_subject or self._default_subject
        result = await self._link.publish_with_ack(
            subject,
            assignment_json(assignment_id, request, decision, trace_id),
            headers_for(trace_id, request.tenant_id, msg_id=assignment_id),
        )
        # ``_value_``: the member's text without the ``value`` property (a call per push).
        reason = result.reason._value_ if result.reason is not None else None
        self._events.assignment(result.outcome._value_, reason, subject)
        return Pushed(assignment_id, subject, result)

    def still_queued(self, pushed: Pushed) -> bool:
        """True while the link's pending queue holds ``pushed``'s queued item.

        Gone from the queue, it was either replayed (stored) or dropped (expired, evicted,
        poison): the link does not say which, so a repeat pushes it again under the same
        ``Nats-Msg-Id``; the stream's duplicate window (the idempotency TTL) stores it once.
        """
        pending_id = pushed.result.pending_id
        if pushed.result.outcome is not Outcome.QUEUED or pending_id is None:
            return False
        item = self._link.pending.oldest_after(pending_id - 1)  # ids only grow
        return item is not None and item.id == pending_id
