"""The fast DecideRequest path and decide_request.schema.json accept and refuse alike."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing.messages import (
    _VALIDATOR,
    ErrorCode,
    RequestError,
    _build,
    _fast_request,
    parse_decide_request,
)
from natsrouter.routing.strict_json import MAX_DEPTH

SEED: dict[str, Any] = {
    "version": "1",
    "request_id": "r-1",
    "tenant_id": "acme",
    "trace_id": "0123456789abcdef0123456789abcdef",
    "policy_id": "default",
    "task": {"type": "text", "payload": {"prompt": "hi"}, "payload_ref": "s3://x"},
    "constraints": {"max_latency_ms": 5, "max_cost": 0.5},
    "metadata": {"session_id": "s"},
    "push_assignment": True,
    "assignment_subject": "jobs.gpu",
}
# Values near every rule of the schema: lengths at and past the bounds, control characters,
# subjects with wildcards, spaces and empty tokens, numbers at 0, below it, booleans.
EDGE_STRINGS = [
    "",
    "1",
    "a",
    "x" * 256,
    "x" * 257,
    "a\x00b",
    "a\x1fb",
    "a\x7fb",
    "a\x80b",
    "a\nb",
    "a b",
    "jobs.gpu",
    "jobs..gpu",
    ".jobs",
    "jobs.",
    "jobs.*",
    "jobs.>",
    "jobs\tgpu",
    "jöbs.gpu",
    "a\u2028b",
    # A lone surrogate: refused by both where the schema's patterns name one (ids, subject).
    "a\ud800b",
    "jobs.\udfff",
    "\U0001f600",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([2**63, -(2**63), 2**64 - 1, 0.0, -0.0, -0.5, 1e300])
    | st.floats(-10, 10, allow_nan=False)
    | st.sampled_from(EDGE_STRINGS)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["type", "payload", "payload_ref", "max_cost", "max_latency_ms", "k"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=6,
)
NESTED = ("task", "constraints")


def judge(document: Any) -> None:
    """Both paths give the same verdict, and the same request when they accept."""
    fast = _fast_request(document)
    accepted = _VALIDATOR.reference.is_valid(document)
    assert (fast is not None) is accepted, json.dumps(document)[:300]
    if fast is not None:
        assert fast == _build(document)


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_mutated_requests_are_judged_alike(data: st.DataObject) -> None:
    """A valid request with fields replaced, removed or added, nested ones too: same verdict."""
    document = json.loads(json.dumps(SEED))
    for _ in range(data.draw(st.integers(1, 3))):
        target = document
        if data.draw(st.booleans()):
            nested = data.draw(st.sampled_from(NESTED))
            if not isinstance(document.get(nested), dict):
                document[nested] = {}
            target = document[nested]
        key = data.draw(st.sampled_from([*sorted(target), "extra", "payload", "max_cost"]))
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(values | st.sampled_from(EDGE_STRINGS))
    judge(document)


@settings(max_examples=200, deadline=None)
@given(values)
def test_any_value_is_judged_alike(document: Any) -> None:
    """Any JSON value at all, as the whole document: same verdict."""
    judge(document)


def test_seed_takes_the_fast_path() -> None:
    """The full seed request (every field present) is accepted by the fast path."""
    assert _fast_request(SEED) == _build(SEED)


def _raw_with(where: str, number: str) -> bytes:
    """The seed as JSON with ``number`` written verbatim at ``where``."""
    text = json.dumps(SEED).replace('"max_cost": 0.5', '"max_cost": @')
    if where == "metadata":
        text = text.replace('"session_id": "s"', '"session_id": "s", "n": @')
    elif where == "payload":
        text = text.replace('"prompt": "hi"', '"prompt": [1, @]')
    return text.replace("@", number).encode()


@pytest.mark.parametrize("where", ["constraints", "metadata", "payload"])
@pytest.mark.parametrize(
    "number",
    ["NaN", "Infinity", "-Infinity", "1e400", str(2**64), str(-(2**63) - 1), "9" * 5000],
)
def test_strict_json_rules_hold_before_the_fast_path(where: str, number: str) -> None:
    """NaN, infinities, floats out of range and integers beyond 64 bits: invalid_request."""
    with pytest.raises(RequestError) as caught:
        parse_decide_request(_raw_with(where, number), 1 << 20)
    assert caught.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("where", ["constraints", "metadata", "payload"])
@pytest.mark.parametrize("number", [str(2**64 - 1), "0", "1e300"])
def test_numbers_within_the_rules_are_accepted(where: str, number: str) -> None:
    """The largest 64-bit integer and a large finite float are accepted wherever they are."""
    request = parse_decide_request(_raw_with(where, number), 1 << 20)
    assert request.request_id == "r-1"


def test_depth_limit_holds_before_the_fast_path() -> None:
    """A payload nested past MAX_DEPTH is refused; at MAX_DEPTH it is accepted."""
    # The document and task objects are two levels; the payload adds the rest.
    inside = MAX_DEPTH - 2
    for depth, refused in ((inside, False), (inside + 1, True)):
        payload = "[" * depth + "]" * depth
        raw = json.dumps(SEED).replace('{"prompt": "hi"}', payload).encode()
        if refused:
            with pytest.raises(RequestError) as caught:
                parse_decide_request(raw, 1 << 20)
            assert caught.value.code is ErrorCode.INVALID_REQUEST
        else:
            assert parse_decide_request(raw, 1 << 20).task.payload is not None


EDGE_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    0.0,
    -0.5,
    2.5,
    2**64 - 1,
    {},
    [],
    {"k": 1},
    ["jobs.gpu"],
    *EDGE_STRINGS,
]
PATHS = [
    *[(key,) for key in [*SEED, "extra"]],
    *[("task", key) for key in ["type", "payload", "payload_ref", "extra"]],
    *[("constraints", key) for key in ["max_latency_ms", "max_cost", "extra"]],
]


@pytest.mark.parametrize("path", PATHS, ids=".".join)
def test_every_edge_value_at_every_field_is_judged_alike(path: tuple[str, ...]) -> None:
    """Each edge value, and the field's absence, at each field of the seed: same verdict."""
    for value in [*EDGE_VALUES, "absent"]:
        document = json.loads(json.dumps(SEED))
        target = document
        for part in path[:-1]:
            target = target[part]
        if value == "absent":
            target.pop(path[-1], None)
        else:
            target[path[-1]] = value
        judge(document)
