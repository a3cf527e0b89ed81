"""An ExecAssignment is written from its fields exactly as ``dumps`` writes its document."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing.decider import Decision, DecisionReason
from natsrouter.routing.messages import Constraints, DecideRequest, Task
from natsrouter.routing.strict_json import dumps
from natsrouter.routing.worker_messages import exec_assignment
from natsrouter.service.assignments import assignment_json

_NUMBERS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
# Any text: lone surrogates, control characters, non-ASCII.
_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
_JSON = st.recursive(
    st.one_of(_NUMBERS, _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_TEXT, inner, max_size=3)),
    max_leaves=8,
)


def _both(assignment_id: str, request: DecideRequest, decision: Decision, trace: str) -> Any:
    """(assignment_json's bytes or its error type, dumps's bytes or its error type)."""
    results: list[Any] = []
    for write in (assignment_json, lambda *a: dumps(exec_assignment(*a))):
        try:
            results.append(write(assignment_id, request, decision, trace))
        except (ValueError, TypeError, OverflowError) as exc:
            results.append(type(exc))
    return results[0], results[1]


@settings(max_examples=400)
@given(
    ids=st.tuples(_TEXT, _TEXT, _TEXT, _TEXT),
    task=st.builds(Task, _TEXT, st.none() | _TEXT, st.none() | _JSON),
    max_latency=st.none() | st.integers() | st.floats(allow_nan=True, allow_infinity=True),
    metadata=st.dictionaries(_TEXT, _JSON, max_size=3),
    provider=_TEXT,
    reason=st.sampled_from(list(DecisionReason)),
    policy=_TEXT,
    numbers=st.tuples(_NUMBERS, _NUMBERS, _NUMBERS),
    fallback=st.booleans(),
    retry=st.integers(min_value=0, max_value=10),
)
def test_assignment_json_is_dumps_of_exec_assignment(
    ids: tuple[str, str, str, str],
    task: Task,
    max_latency: Any,
    metadata: dict[str, Any],
    provider: str,
    reason: DecisionReason,
    policy: str,
    numbers: tuple[Any, Any, Any],
    fallback: bool,
    retry: int,
) -> None:
    """Any payload, metadata and numbers (NaN, infinities, big ints), any text: same bytes,
    or the same error."""
    assignment_id, request_id, tenant_id, trace_id = ids
    request = DecideRequest(
        request_id,
        tenant_id,
        task,
        constraints=Constraints(max_latency_ms=max_latency),
        metadata=metadata,
    )
    priority, latency, cost = numbers
    decision = Decision(provider, reason, policy, priority, latency, cost, fallback, retry)
    written, dumped = _both(assignment_id, request, decision, trace_id)
    assert written == dumped


def test_an_assignment_without_metadata_or_payload_reads_back_as_its_document() -> None:
    """A request with no metadata and a payload_ref only: the bytes equal dumps of the
    document and read back as that document."""
    request = DecideRequest("r-1", "t-1", Task("text", payload_ref="s3://x"))
    decision = Decision("a", DecisionReason.WEIGHTED, "default", 0, None, 0.25)
    document = exec_assignment("a-1", request, decision, "f" * 32)
    written = assignment_json("a-1", request, decision, "f" * 32)
    assert written == dumps(document)
    assert json.loads(written) == document


def test_an_infinite_deadline_is_refused_before_a_nan_payload() -> None:
    """max_latency_ms infinite and a NaN payload: both writers raise OverflowError (the
    deadline is converted before the payload is written)."""
    request = DecideRequest(
        "r-1",
        "t-1",
        Task("text", payload={"x": float("nan")}),
        constraints=Constraints(max_latency_ms=float("inf")),
    )
    decision = Decision("a", DecisionReason.WEIGHTED, "default", 0, None, None)
    assert _both("a-1", request, decision, "f" * 32) == (OverflowError, OverflowError)
