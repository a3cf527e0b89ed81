"""The Router's wire messages: DecideRequest in, ErrorResponse out (CONTRACT §2).

``parse_decide_request`` turns raw bytes into a typed request or raises ``RequestError`` with
the contract's error code and the field at fault; it never raises anything else, whatever
the bytes (tests/unit/test_messages.py fuzzes it). Unknown extra fields are accepted, so
newer clients can talk to older Routers.

``decide_request.schema.json`` stays the published contract; two faster readings of it only
ever accept, and whatever they do not accept goes on to the next:

1. msgspec decodes the bytes straight into a typed struct (``_Wire``: lengths, the version,
   types, limits, no unknown field) and ``_from_wire`` checks what msgspec cannot state (ids
   without control characters, the subject's pattern, the payload and metadata within
   strict JSON's bounds), then builds the request: about 1.2 µs for a small request;
2. the document, parsed by ``strict_json`` (through msgspec when it can read it), is checked
   and built in one pass by ``_fast_request``, a hand-written reading of the schema;
3. the schema itself, which names the field at fault.

tests/unit/test_fast_request.py checks with hypothesis that each reading accepts only what
the schema and the strict parse accept, and builds the same request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec import UNSET, Meta

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
    version = get("version")
    task: Any = get("task")
    request_id: Any = get("request_id")
    tenant_id: Any = get("tenant_id")
    if (
        type(version) is not str
        or version != "1"
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
    trace_id = get("trace_id", _ABSENT)
    if trace_id is _ABSENT:
        trace_id = None
    elif not _id(trace_id, 0):
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
        limits = _new(
            Constraints,
            (None if latency is _ABSENT else latency, None if cost is _ABSENT else cost),
        )
    metadata = get("metadata", _NO_METADATA)
    push = get("push_assignment", False)
    subject = get("assignment_subject", _ABSENT)
    if subject is _ABSENT:
        subject = None
    elif not _subject(subject):
        return None
    if type(metadata) is not dict or type(push) is not bool:
        return None
    # Positional, through tuple.__new__: a NamedTuple's own __new__ is a Python call more.
    return _new(
        DecideRequest,
        (
            request_id,
            tenant_id,
            _new(Task, (task_type, payload_ref, task.get("payload"))),
            "1",
            trace_id,
            policy_id,
            limits,
            metadata if metadata is not _NO_METADATA else {},
            push,
            subject,
        ),
    )


_ABSENT: Any = object()
_NO_LIMITS: Any = {}
_NO_METADATA: Any = {}
_NO_CONSTRAINTS = Constraints()
_new = tuple.__new__


# The wire form the common request is decoded into, straight from its bytes, by msgspec
# (one C pass): each rule of decide_request.schema.json that msgspec can state is stated
# here; ``_from_wire`` checks the rest. A default outside a field's type (None for a
# string) is taken only when the field is absent: an explicit null is refused, as by the
# schema. Unknown fields are refused: msgspec skips an unknown field's value without the
# strict-JSON checks (it lets 1e400, integers of any size and bytes that are not UTF-8
# through), so such a request goes the other way.
_Text = Annotated[str, Meta(min_length=1, max_length=256)]
_Limit = Annotated[int, Meta(ge=0, le=2**63 - 1)] | Annotated[float, Meta(ge=0)]


class _WireTask(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    type: _Text
    payload_ref: Annotated[str, Meta(min_length=1)] = None  # type: ignore[assignment]
    payload: Any = UNSET


class _WireConstraints(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    max_latency_ms: _Limit = None  # type: ignore[assignment]
    max_cost: _Limit = None  # type: ignore[assignment]


class _Wire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    version: Literal["1"]
    request_id: _Text
    tenant_id: _Text
    task: _WireTask
    trace_id: Annotated[str, Meta(max_length=256)] = None  # type: ignore[assignment]
    policy_id: _Text = DEFAULT_POLICY_ID
    constraints: _WireConstraints = None  # type: ignore[assignment]
    metadata: dict[str, Any] = {}  # msgspec copies it for each request
    push_assignment: bool = False
    assignment_subject: Annotated[str, Meta(min_length=1, max_length=256)] = None  # type: ignore[assignment]


_DECODE = msgspec.json.Decoder(_Wire).decode
_WITHIN, _WITHIN_PACKED = strict_json.within, strict_json.within_packed
# strict_json.may_hide_refused, written out in parse_decide_request (a call less).
_DIGITS_MARKED, _LONG_NUMBER = strict_json.DIGITS_MARKED, strict_json.LONG_NUMBER
_WALK_BELOW = strict_json.WALK_BELOW
# The document is level 1 of MAX_DEPTH, the task 2: a payload may hold the rest, and the
# metadata object (level 2) one level more than its own.
_PAYLOAD_ROOM = strict_json.MAX_DEPTH - 2
_METADATA_ROOM = strict_json.MAX_DEPTH - 1


def _from_wire(raw: bytes, wire: _Wire) -> DecideRequest | None:
    """The request ``wire`` (msgspec's reading of ``raw``) stands for, when the checks
    msgspec cannot state accept it; None when they may not (the strict parse and the schema
    then decide, and name the field at fault)."""
    task = wire.task
    payload = task.payload
    metadata = wire.metadata
    if payload is UNSET:
        if task.payload_ref is None:
            return None
        payload = None
    if len(raw) >= _WALK_BELOW:
        if not _WITHIN_PACKED(raw, (payload, _PAYLOAD_ROOM), (metadata, _METADATA_ROOM)):
            return None
    else:  # strict_json.within, the usual objects' string values seen without a call
        if type(payload) is dict:
            for value in payload.values():
                if type(value) is not str and not _WITHIN(value, _PAYLOAD_ROOM - 1):
                    return None
        elif not _WITHIN(payload, _PAYLOAD_ROOM):
            return None
        if metadata:
            for value in metadata.values():
                if type(value) is not str and not _WITHIN(value, _METADATA_ROOM - 1):
                    return None
    request_id, tenant_id, trace_id = wire.request_id, wire.tenant_id, wire.trace_id
    subject = wire.assignment_subject
    if (
        not (request_id.isprintable() or _CONTROL.search(request_id) is None)
        or not (tenant_id.isprintable() or _CONTROL.search(tenant_id) is None)
        or (
            trace_id is not None
            and not (trace_id.isprintable() or _CONTROL.search(trace_id) is None)
        )
        or (subject is not None and not _subject(subject))
    ):
        return None
    limits = wire.constraints
    return _new(
        DecideRequest,
        (
            request_id,
            tenant_id,
            _new(Task, (task.type, task.payload_ref, payload)),
            "1",
            trace_id,
            wire.policy_id,
            _NO_CONSTRAINTS
            if limits is None
            else _new(Constraints, (limits.max_latency_ms, limits.max_cost)),
            metadata,
            wire.push_assignment,
            subject,
        ),
    )


def parse_decide_request(raw: bytes, max_payload_size: int) -> DecideRequest:
    """Parse and validate one DecideRequest; raises ``RequestError(invalid_request)``."""
    if len(raw) > max_payload_size:
        raise _invalid(
            f"payload of {len(raw)} bytes is over the limit of {max_payload_size}",
            limit=max_payload_size,
            size=len(raw),
        )
    # strict_json.may_hide_refused: a duplicate key may hide what loads refuses.
    if raw.translate(_DIGITS_MARKED).find(_LONG_NUMBER) >= 0:
        return _checked(_loads(raw, strict_json.loads))
    try:
        wire = _DECODE(raw)
    except msgspec.ValidationError:
        # JSON to msgspec, only not this struct (an unknown field, a value out of its bounds):
        # msgspec reads it again as plain JSON, faster than the strict parse.
        return _checked(_loads(raw, strict_json.loads_bytes))
    except strict_json.MSGSPEC_REFUSED:  # not JSON to msgspec: to the strict parse alone
        return _checked(_loads(raw, strict_json.loads))
    request = _from_wire(raw, wire)
    if request is not None:
        return request
    return _checked(_loads(raw, strict_json.loads_bytes))


def _loads(raw: bytes, loads: Callable[[bytes], Any]) -> Any:
    """The document; the strict-JSON rule it breaks as ``invalid_request``."""
    try:
        return loads(raw)
    except StrictJsonError as err:
        if err.field == "(document)":
            raise _invalid(f"payload: {err.message}") from None
        raise _invalid(f"{err.field}: {err.message}", field=err.field) from None


def _checked(document: Any) -> DecideRequest:
    """The request from a strictly parsed document: ``_fast_request``, or the schema, which
    names the field at fault."""
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
