"""The Router's wire messages: DecideRequest in, ErrorResponse out (CONTRACT §2).

``parse_decide_request`` turns raw bytes into a typed request or raises ``RequestError`` with
the contract's error code and the field at fault; it never raises anything else, whatever
the bytes (tests/unit/test_messages.py fuzzes it). Unknown extra fields are accepted, so
newer clients can talk to older Routers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from natsrouter.errors import NatsRouterError
from natsrouter.routing import strict_json
from natsrouter.routing.policy import DEFAULT_POLICY_ID
from natsrouter.routing.strict_json import StrictJsonError
from natsrouter.schemas import field_path, validator


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNAUTHENTICATED = "unauthenticated"
    UNAUTHORIZED = "unauthorized"
    POLICY_NOT_FOUND = "policy_not_found"
    CONSTRAINTS_UNSATISFIABLE = "constraints_unsatisfiable"
    DECISION_FAILED = "decision_failed"
    RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
    OVERLOADED = "overloaded"
    INTERNAL = "internal"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS[self]


_HTTP_STATUS = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.UNAUTHORIZED: 403,
    ErrorCode.POLICY_NOT_FOUND: 404,
    ErrorCode.CONSTRAINTS_UNSATISFIABLE: 422,
    ErrorCode.DECISION_FAILED: 503,
    ErrorCode.RATE_LIMIT_EXCEEDED: 429,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.INTERNAL: 500,
}


class RequestError(NatsRouterError):
    """A request the Router answers with an ErrorResponse."""

    def __init__(
        self, code: ErrorCode, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details = dict(details or {})


@dataclass(frozen=True)
class Task:
    type: str
    payload_ref: str | None = None
    payload: Any = None


@dataclass(frozen=True)
class Constraints:
    max_latency_ms: float | None = None
    max_cost: float | None = None


@dataclass(frozen=True)
class DecideRequest:
    request_id: str
    tenant_id: str
    task: Task
    version: str = "1"
    trace_id: str | None = None
    policy_id: str = DEFAULT_POLICY_ID
    constraints: Constraints = field(default_factory=Constraints)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    push_assignment: bool = False
    assignment_subject: str | None = None


_VALIDATOR = validator("natsrouter.routing", "decide_request.schema.json")


def _invalid(message: str, **details: Any) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, message, details)


def parse_decide_request(raw: bytes, max_payload_size: int) -> DecideRequest:
    """Parse and validate one DecideRequest; raises ``RequestError(invalid_request)``."""
    if len(raw) > max_payload_size:
        raise _invalid(
            f"payload of {len(raw)} bytes is over the limit of {max_payload_size}",
            limit=max_payload_size,
            size=len(raw),
        )
    try:
        document = strict_json.loads(raw)
    except StrictJsonError as err:
        if err.field == "(document)":
            raise _invalid(f"payload: {err.message}") from None
        raise _invalid(f"{err.field}: {err.message}", field=err.field) from None
    error = _VALIDATOR.error(document)
    if error is not None:
        where = field_path(error)
        if where == "version":
            raise _invalid(
                f"unsupported version {document.get('version')!r}; expected '1'", field="version"
            )
        raise _invalid(f"{where}: {error.message}", field=where)
    task = document["task"]
    constraints = document.get("constraints", {})
    return DecideRequest(
        request_id=document["request_id"],
        tenant_id=document["tenant_id"],
        task=Task(task["type"], task.get("payload_ref"), task.get("payload")),
        trace_id=document.get("trace_id"),
        policy_id=document.get("policy_id", DEFAULT_POLICY_ID),
        constraints=Constraints(constraints.get("max_latency_ms"), constraints.get("max_cost")),
        metadata=document.get("metadata", {}),
        push_assignment=document.get("push_assignment", False),
        assignment_subject=document.get("assignment_subject"),
    )


def error_response(
    error: RequestError, request_id: str | None = None, trace_id: str | None = None
) -> dict[str, Any]:
    """The ErrorResponse document for ``error``."""
    body: dict[str, Any] = {"code": error.code.value, "message": error.message}
    if error.details:
        body["details"] = error.details
    return {"ok": False, "error": body, "context": {"request_id": request_id, "trace_id": trace_id}}
