"""Pushing an ExecAssignment to the workers' JetStream subject, through the link.

``Nats-Msg-Id`` is the assignment id, fixed before the first attempt, so a replay of a queued
assignment, or a retry after an uncertain send, is stored once by the server (within the
stream's duplicate window). The caller gets the link's typed outcome.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from natsrouter.link.link import Link
from natsrouter.link.outcome import Outcome, Result
from natsrouter.routing import strict_json
from natsrouter.routing.decider import Decision
from natsrouter.routing.messages import DecideRequest
from natsrouter.routing.worker_messages import exec_assignment
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
        document = exec_assignment(assignment_id, request, decision, trace_id)
        result = await self._link.publish_with_ack(
            subject,
            strict_json.dumps(document),
            headers_for(trace_id, request.tenant_id, msg_id=assignment_id),
        )
        reason = result.reason.value if result.reason is not None else None
        self._events.assignment(result.outcome.value, reason, subject)
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
