"""The Router's wire messages: DecideRequest in, ErrorResponse out (CONTRACT §2).

``parse_decide_request`` turns raw bytes into a typed request or raises ``RequestError`` with
the contract's error code and the field at fault; it never raises anything else, whatever
the bytes (tests/unit/test_messages.py fuzzes it). Unknown extra fields are accepted, so
newer clients can talk to older Routers.

A parsed document is checked and built in one pass by ``_fast_request``, a hand-written
reading of ``decide_request.schema.json`` (the schema file stays the published contract): a
compiled schema validator cost about a sixth of a decide's time in a profile. The fast path
only ever accepts; a document it does not accept goes through the schema, which names the
field at fault. tests/unit/test_fast_request.py checks with hypothesis that the fast path
and the schema accept and refuse the same documents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

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


# Immutable tuples, not frozen dataclasses: these are built for every decide, and a frozen
# dataclass sets each field through ``object.__setattr__`` (about twice the time).
class Task(NamedTuple):
    type: str
    payload_ref: str | None = None
    payload: Any = None


class Constraints(NamedTuple):
    max_latency_ms: float | None = None
    max_cost: float | None = None


#: The metadata of a request built without any (read-only: a default shared by all).
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class DecideRequest(NamedTuple):
    request_id: str
    tenant_id: str
    task: Task
    version: str = "1"
    trace_id: str | None = None
    policy_id: str = DEFAULT_POLICY_ID
    constraints: Constraints = Constraints()
    metadata: Mapping[str, Any] = _EMPTY
    push_assignment: bool = False
    assignment_subject: str | None = None


_VALIDATOR = validator("natsrouter.routing", "decide_request.schema.json")


def _invalid(message: str, **details: Any) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, message, details)


# The schema's own patterns, applied as jsonschema applies ``pattern`` (re.search).
_PROPERTIES = _VALIDATOR.reference.schema["properties"]
_CONTROL = re.compile(_PROPERTIES["request_id"]["not"]["pattern"])
_SUBJECT = re.compile(_PROPERTIES["assignment_subject"]["pattern"])
_SUBJECT_REFUSED = re.compile(_PROPERTIES["assignment_subject"]["not"]["pattern"])


def _id(value: Any, min_length: int = 1) -> bool:
    """A string of ``min_length``..256 characters without control characters."""
    # A printable string has none (they are all category Cc): the usual id is answered
    # without the pattern, several times slower.
    return (
        type(value) is str
        and min_length <= len(value) <= 256
        and (value.isprintable() or _CONTROL.search(value) is None)
    )


def _limit(value: Any) -> bool:
    """A JSON number (not a boolean) of at least 0."""
    return type(value) in (int, float) and value >= 0


def _subject(value: Any) -> bool:
    return (
        type(value) is str
        and 1 <= len(value) <= 256
        and _SUBJECT.search(value) is not None
        and _SUBJECT_REFUSED.search(value) is None
    )


def _fast_request(document: Any) -> DecideRequest | None:
    """The request when the schema accepts ``document``; None when it may not."""
    # isinstance: the schema's "object", "string" and "boolean" are exactly these types
    # (json.loads builds no subclasses), and `type(x) is` keeps True out of the numbers.
    if type(document) is not dict:
        return None
    get = document.get
    task: Any = get("task")
    request_id: Any = get("request_id")
    tenant_id: Any = get("tenant_id")
    if (
        get("version") != "1"
        or type(get("version")) is not str
        or not _id(request_id)
        or not _id(tenant_id)
        or type(task) is not dict
    ):
        return None
    task_type, payload_ref = task.get("type"), task.get("payload_ref", _ABSENT)
    if type(task_type) is not str or not 1 <= len(task_type) <= 256:
        return None
    if payload_ref is _ABSENT:
        if "payload" not in task:
            return None
        payload_ref = None
    elif type(payload_ref) is not str or not payload_ref:
        return None
    trace_id = get("trace_id")
    if (trace_id is not None or "trace_id" in document) and not _id(trace_id, 0):
        return None
    policy_id = get("policy_id", DEFAULT_POLICY_ID)
    if type(policy_id) is not str or not 1 <= len(policy_id) <= 256:
        return None
    constraints = get("constraints", _NO_LIMITS)
    if constraints is _NO_LIMITS:
        limits = _NO_CONSTRAINTS
    else:
        if type(constraints) is not dict:
            return None
        latency = constraints.get("max_latency_ms", _ABSENT)
        cost = constraints.get("max_cost", _ABSENT)
        if (latency is not _ABSENT and not _limit(latency)) or (
            cost is not _ABSENT and not _limit(cost)
        ):
            return None
        limits = Constraints(
            None if latency is _ABSENT else latency, None if cost is _ABSENT else cost
        )
    metadata = get("metadata", _NO_METADATA)
    push = get("push_assignment", False)
    subject = get("assignment_subject")
    if (
        type(metadata) is not dict
        or type(push) is not bool
        or (("assignment_subject" in document) and not _subject(subject))
    ):
        return None
    return DecideRequest(
        request_id=request_id,
        tenant_id=tenant_id,
        task=Task(task_type, payload_ref, task.get("payload")),
        trace_id=trace_id,
        policy_id=policy_id,
        constraints=limits,
        metadata=metadata if metadata is not _NO_METADATA else {},
        push_assignment=push,
        assignment_subject=subject,
    )


_ABSENT: Any = object()
_NO_LIMITS: Any = {}
_NO_METADATA: Any = {}
_NO_CONSTRAINTS = Constraints()


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
    request = _fast_request(document)
    if request is not None:
        return request
    error = _VALIDATOR.error(document)
    if error is not None:
        where = field_path(error)
        if where == "version":
            raise _invalid(
                f"unsupported version {document.get('version')!r}; expected '1'", field="version"
            )
        raise _invalid(f"{where}: {error.message}", field=where)
    return _build(document)


def _build(document: dict[str, Any]) -> DecideRequest:
    """The request from a document the schema accepts (the reference for ``_fast_request``)."""
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
