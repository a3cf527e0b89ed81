"""DecideRequest parsing: typed results, errors naming the field, and fuzzing that never crashes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing.messages import (
    Constraints,
    ErrorCode,
    RequestError,
    error_response,
    parse_decide_request,
)

LIMIT = 1 << 20
VALID: dict[str, Any] = {
    "version": "1",
    "request_id": "req-1",
    "tenant_id": "acme",
    "task": {"type": "chat", "payload_ref": "s3://bucket/key"},
}


def parse(document: Any) -> Any:
    return parse_decide_request(json.dumps(document).encode(), LIMIT)


def test_a_minimal_request_gets_the_contract_defaults() -> None:
    """policy_id default, push_assignment false, empty metadata and constraints."""
    request = parse(VALID)
    assert (request.request_id, request.tenant_id, request.task.type) == ("req-1", "acme", "chat")
    assert (request.policy_id, request.push_assignment, request.metadata) == ("default", False, {})
    assert request.constraints == Constraints()


def test_every_optional_field_is_read() -> None:
    """trace_id, policy_id, constraints, metadata, push_assignment, assignment_subject."""
    request = parse(
        {
            **VALID,
            "trace_id": "t-9",
            "policy_id": "fast",
            "constraints": {"max_latency_ms": 250, "max_cost": 0.5},
            "metadata": {"session_id": "s-1"},
            "push_assignment": True,
            "assignment_subject": "caf.exec.assign.v1.gpu",
            "task": {"type": "chat", "payload": {"prompt": "hi"}},
        }
    )
    assert (request.trace_id, request.policy_id) == ("t-9", "fast")
    assert request.constraints == Constraints(250, 0.5)
    assert request.metadata == {"session_id": "s-1"}
    assert (request.push_assignment, request.assignment_subject) == (True, "caf.exec.assign.v1.gpu")
    assert request.task.payload == {"prompt": "hi"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"request_id": ""}, "request_id"),
        ({"tenant_id": ""}, "tenant_id"),
        ({"tenant_id": 7}, "tenant_id"),
        ({"task": {"type": "chat"}}, "task"),
        ({"task": {"payload_ref": "x"}}, "task"),
        ({"task": "chat"}, "task"),
        ({"constraints": {"max_cost": -1}}, "constraints.max_cost"),
        ({"metadata": []}, "metadata"),
        ({"push_assignment": "yes"}, "push_assignment"),
        ({"assignment_subject": "bad subject"}, "assignment_subject"),
        ({"version": "2"}, "version"),
        ({"version": 1}, "version"),
    ],
)
def test_violations_name_the_field(change: dict[str, Any], field: str) -> None:
    """Each schema violation is invalid_request (HTTP 400) with the field in details."""
    with pytest.raises(RequestError) as info:
        parse({**VALID, **change})
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.code.http_status == 400
    assert info.value.details["field"] == field


@pytest.mark.parametrize("missing", ["version", "request_id", "tenant_id", "task"])
def test_missing_required_fields_are_refused(missing: str) -> None:
    """A request without a required field is invalid_request."""
    document = {k: v for k, v in VALID.items() if k != missing}
    with pytest.raises(RequestError) as info:
        parse(document)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert missing in info.value.message


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
        (b"[]", "(document)"),
        (b"null", "(document)"),
    ],
)
def test_undecodable_payloads_are_refused(raw: bytes, text: str) -> None:
    """Non-UTF-8, broken or absurdly nested JSON, and non-objects: invalid_request."""
    with pytest.raises(RequestError) as info:
        parse_decide_request(raw, LIMIT * 4)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert text in info.value.message


def test_oversized_payloads_are_refused_before_parsing() -> None:
    """A payload over nats_max_payload_size is invalid_request with the limit in details."""
    raw = json.dumps({**VALID, "metadata": {"blob": "x" * 2000}}).encode()
    with pytest.raises(RequestError) as info:
        parse_decide_request(raw, 1000)
    assert info.value.details == {"limit": 1000, "size": len(raw)}


def test_error_response_shape() -> None:
    """ErrorResponse: ok false, error {code, message, details}, context."""
    error = RequestError(
        ErrorCode.POLICY_NOT_FOUND, "no policy fast for acme", {"policy_id": "fast"}
    )
    assert error.code.http_status == 404
    assert error_response(error, "req-1", "t-1") == {
        "ok": False,
        "error": {
            "code": "policy_not_found",
            "message": "no policy fast for acme",
            "details": {"policy_id": "fast"},
        },
        "context": {"request_id": "req-1", "trace_id": "t-1"},
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def _parses_or_refuses(raw: bytes) -> None:
    try:
        parse_decide_request(raw, LIMIT)
    except RequestError as exc:
        assert exc.code is ErrorCode.INVALID_REQUEST


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(raw: bytes) -> None:
    """Any bytes: a request or invalid_request, never another exception."""
    _parses_or_refuses(raw)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_fuzz_random_json(value: Any) -> None:
    """Any JSON value: a request or invalid_request."""
    _parses_or_refuses(json.dumps(value).encode())


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(
        [
            *VALID,
            "task.type",
            "task.payload_ref",
            "constraints",
            "metadata",
            "push_assignment",
            "policy_id",
        ]
    ),
    json_values,
)
def test_fuzz_mutated_valid_requests(key: str, value: Any) -> None:
    """A valid request with one field replaced by anything: a request or invalid_request."""
    document = json.loads(json.dumps(VALID))
    if "." in key:
        outer, inner = key.split(".")
        document[outer][inner] = value
    else:
        document[key] = value
    _parses_or_refuses(json.dumps(document).encode())


# Any character but the controls, which would split the NATS header lines ids become, and
# lone surrogates, which no header can carry (refused: test_strict_json.py).
ids = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=256)


@settings(max_examples=100, deadline=None)
@given(ids, ids)
def test_fuzz_any_ids_are_kept_exactly(request_id: str, tenant_id: str) -> None:
    """Valid requests with arbitrary (non-empty, no control character, no lone surrogate)
    ids parse exactly."""
    request = parse({**VALID, "request_id": request_id, "tenant_id": tenant_id})
    assert (request.request_id, request.tenant_id) == (request_id, tenant_id)
