"""Messages between the Router and its workers: ExecAssignment out, acks and results in.

``parse_exec_ack`` and ``parse_exec_result`` apply the message's headers first (headers win
over payload fields, CONTRACT §1) and then check the shipped schema; anything wrong raises
``InvalidMessage`` naming the field, whatever the bytes. ``exec_assignment`` and
``usage_event`` build the documents the Router publishes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from natsrouter.errors import NatsRouterError
from natsrouter.routing import strict_json
from natsrouter.routing.decider import Decision
from natsrouter.routing.messages import DecideRequest
from natsrouter.routing.strict_json import StrictJsonError
from natsrouter.schemas import Schema, field_path, validator

# Joins the parts of an idempotency key; ids refuse control characters, so none contains it
# and ("a:b", "c") never meets ("a", "b:c").
_SEP = "\x1f"

#: Payload fields a header of the same name replaces.
HEADER_FIELDS = ("tenant_id", "trace_id")


class InvalidMessage(NatsRouterError):
    """A consumed message that can never be processed; names the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ExecAck:
    assignment_id: str
    status: str
    tenant_id: str
    message: str | None = None
    trace_id: str | None = None

    @property
    def idempotency_key(self) -> str:
        return _SEP.join(("ack", self.tenant_id, self.assignment_id, self.status))


@dataclass(frozen=True)
class ExecResult:
    status: str
    provider_id: str
    tenant_id: str
    assignment_id: str | None = None
    request_id: str | None = None
    job_type: str | None = None
    latency_ms: float = 0.0
    cost: float = 0.0
    trace_id: str | None = None
    timestamp: int | None = None

    @property
    def key(self) -> str:
        """``assignment_id``, or ``request_id`` when the result has no assignment."""
        return self.assignment_id or self.request_id or ""

    @property
    def idempotency_key(self) -> str:
        # A result named only by its request gets a kind of its own: request_id X and
        # assignment_id X (same tenant) are two results, each processed and billed.
        kind = "result" if self.assignment_id else "result-request"
        return _SEP.join((kind, self.tenant_id, self.key))

    @property
    def usage_msg_id(self) -> str:
        """``usage-<len(tenant)>:<tenant>:<assignment_id>``, or ``usage-r-...:<request_id>``.

        Scoped by tenant and unambiguous; ``r`` is no digit, so the two forms never meet.
        """
        kind = "usage-" if self.assignment_id else "usage-r-"
        return f"{kind}{len(self.tenant_id)}:{self.tenant_id}:{self.key}"


_ACK = validator("natsrouter.routing", "exec_ack.schema.json")
_RESULT = validator("natsrouter.routing", "exec_result.schema.json")


def _document(raw: bytes, headers: Mapping[str, str] | None, max_size: int) -> dict[str, Any]:
    if len(raw) > max_size:
        raise InvalidMessage("(document)", f"{len(raw)} bytes is over the limit of {max_size}")
    try:
        document = strict_json.loads(raw, unicode_only=True)
    except StrictJsonError as err:
        raise InvalidMessage(err.field, err.message) from None
    if not isinstance(document, dict):
        raise InvalidMessage("(document)", "expected a JSON object")
    for name in HEADER_FIELDS:
        value = (headers or {}).get(name)
        if value:
            document[name] = value
    return document


def _check(schema: Schema, document: dict[str, Any]) -> None:
    error = schema.error(document)
    if error is not None:
        raise InvalidMessage(field_path(error), error.message)


def parse_exec_ack(raw: bytes, headers: Mapping[str, str] | None, max_size: int) -> ExecAck:
    document = _document(raw, headers, max_size)
    _check(_ACK, document)
    return ExecAck(
        assignment_id=document["assignment_id"],
        status=document["status"],
        tenant_id=document["tenant_id"],
        message=document.get("message"),
        trace_id=document.get("trace_id"),
    )


def parse_exec_result(raw: bytes, headers: Mapping[str, str] | None, max_size: int) -> ExecResult:
    document = _document(raw, headers, max_size)
    _check(_RESULT, document)
    return ExecResult(
        status=document["status"],
        provider_id=document["provider_id"],
        tenant_id=document["tenant_id"],
        assignment_id=document.get("assignment_id"),
        request_id=document.get("request_id"),
        job_type=(document.get("job") or {}).get("type"),
        latency_ms=float(document.get("latency_ms", 0)),
        cost=float(document.get("cost", 0)),
        trace_id=document.get("trace_id"),
        timestamp=document.get("timestamp"),
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def exec_assignment(
    assignment_id: str, request: DecideRequest, decision: Decision, trace_id: str
) -> dict[str, Any]:
    """The ExecAssignment document for a decided request."""
    job: dict[str, Any] = {"type": request.task.type}
    if request.task.payload_ref is not None:
        job["payload_ref"] = request.task.payload_ref
    if request.task.payload is not None:
        job["payload"] = request.task.payload
    max_latency = request.constraints.max_latency_ms
    return {
        "version": "1",
        "assignment_id": assignment_id,
        "request_id": request.request_id,
        "tenant_id": request.tenant_id,
        "executor": {"provider_id": decision.provider_id, "channel": "nats"},
        "job": job,
        "options": {
            "priority": decision.priority,
            "deadline_ms": int(max_latency) if max_latency is not None else None,
            "retry": {"max_attempts": decision.retry + 1, "backoff_ms": 1000},
        },
        "correlation": {"trace_id": trace_id},
        "decision": decision.to_dict(),
        "metadata": dict(request.metadata),
    }


def usage_event(result: ExecResult) -> dict[str, Any]:
    """The UsageEvent for one processed result."""
    return {
        "version": "1",
        "tenant_id": result.tenant_id,
        "provider_id": result.provider_id,
        "event_type": "execution",
        "job_type": result.job_type,
        "latency_ms": result.latency_ms,
        "cost": result.cost,
        "status": result.status,
        "trace_id": result.trace_id,
        "timestamp": result.timestamp if result.timestamp is not None else now_ms(),
        "assignment_id": result.assignment_id,
        "request_id": result.request_id,
    }
