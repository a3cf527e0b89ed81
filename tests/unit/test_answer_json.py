"""A decision, with or without its push, is written from its fields exactly as ``dumps`` writes
its body."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.errors import Reason
from natsrouter.link.outcome import Outcome, PubAck, Result
from natsrouter.routing.decider import Decision, DecisionReason
from natsrouter.routing.strict_json import dumps, dumps_value
from natsrouter.service.answers import Answer, ok_body, ok_json, pushed_json
from natsrouter.service.assignments import Pushed

# Every kind of value a field may hold, and some it should not (the encoder decides those).
_NUMBERS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
_ANY = st.one_of(_NUMBERS, _TEXT, st.lists(st.integers(), max_size=3))


def _both(decision: Decision, request_id: Any, trace_id: Any) -> tuple[Any, Any]:
    """(ok_json's bytes or its error type, dumps's bytes or its error type)."""
    results: list[Any] = []
    for write in (ok_json, lambda *a: dumps(ok_body(*a))):
        try:
            results.append(write(decision, request_id, trace_id))
        except (ValueError, TypeError) as exc:
            results.append(type(exc))
    return results[0], results[1]


#: Any decision: any text for the names, any number or value where a number goes.
_DECISIONS = st.builds(
    Decision,
    _TEXT,
    st.sampled_from(list(DecisionReason)),
    _TEXT,
    _NUMBERS,
    _ANY,
    _ANY,
    st.booleans(),
)


@settings(max_examples=400)
@given(decision=_DECISIONS, request_id=_TEXT, trace_id=_TEXT)
def test_ok_json_is_dumps_of_the_body(decision: Decision, request_id: str, trace_id: str) -> None:
    """Any numbers (NaN, infinities, big ints), any text (lone surrogates): same bytes or error."""
    written, dumped = _both(decision, request_id, trace_id)
    assert written == dumped


@pytest.mark.parametrize(
    "value", [0, -1, 2**64, 1.5, 1e300, -0.0, 5e-324, None, True, False, 'é\udc80\n"', [1, "a"]]
)
def test_dumps_value_is_dumps_within_a_document(value: Any) -> None:
    """One value is written as dumps writes it inside a list."""
    assert f"[{dumps_value(value)}]".encode() == dumps({"v": [value]})[5:-1]


def test_an_answer_builds_its_body_only_when_asked_and_encodes_it_the_same() -> None:
    """An answer of a decision has the body ok_body gives, and encoded() is dumps of it."""
    decision = Decision("a", DecisionReason.WEIGHTED, "default", 0, None, 0.25)
    answer = Answer(200, None, "ok", 0.0, (decision, "r-1", "t" * 32))
    assert answer.encoded() == dumps(answer.body)
    assert answer.body == ok_body(decision, "r-1", "t" * 32)


@pytest.mark.parametrize("field", ["provider_id", "policy_id"])
def test_an_answer_whose_name_is_not_a_string_is_still_dumps_of_its_body(field: str) -> None:
    """A name of another type (a value no Router writes) is written as dumps writes it."""
    decision = Decision("a", DecisionReason.WEIGHTED, "default", 0, None, None)._replace(
        **{field: 5}
    )
    answer = Answer(200, None, "ok", 0.0, (decision, "r-1", "t-1"))
    assert answer.encoded() == dumps(ok_body(decision, "r-1", "t-1"))


def _pushed_body(decision: Decision, request_id: Any, trace_id: Any, pushed: Pushed) -> Any:
    """The document a decision with a push was answered with, built as it was before."""
    body = ok_body(decision, request_id, trace_id)
    body["decision"]["assignment_id"] = pushed.assignment_id
    body["assignment"] = pushed.to_dict()
    return body


def _written_or_error(write: Any, *args: Any) -> Any:
    try:
        return write(*args)
    except (ValueError, TypeError) as exc:
        return type(exc)


_PUB_ACKS = st.one_of(
    st.none(), st.builds(PubAck, _TEXT, st.one_of(st.integers(), _NUMBERS), st.booleans())
)
_RESULTS = st.builds(
    Result,
    st.sampled_from(list(Outcome)),
    _PUB_ACKS,
    st.one_of(st.none(), st.integers(), _NUMBERS),
    st.one_of(st.none(), st.sampled_from(list(Reason))),
)
_PUSHES = st.builds(Pushed, _TEXT, _TEXT, _RESULTS)


@settings(max_examples=400)
@given(decision=_DECISIONS, request_id=_TEXT, trace_id=_TEXT, pushed=_PUSHES)
def test_pushed_json_is_dumps_of_the_answer_with_its_push(
    decision: Decision, request_id: str, trace_id: str, pushed: Pushed
) -> None:
    """Any decision and push (any outcome, ack, pending id, reason): same bytes or error."""
    dumped = _written_or_error(
        lambda *a: dumps(_pushed_body(*a)), decision, request_id, trace_id, pushed
    )
    assert _written_or_error(pushed_json, decision, request_id, trace_id, pushed) == dumped
    answer = Answer(200, None, "ok", 0.0, (decision, request_id, trace_id), pushed)
    assert _written_or_error(answer.encoded) == dumped


def test_an_answer_with_a_push_builds_the_body_it_was_answered_with() -> None:
    """The body of an answer with a push is the document built before, and encoded() dumps it."""
    decision = Decision("a", DecisionReason.WEIGHTED, "default", 0, 120, 0.25)
    pushed = Pushed("as-1", "exec.a", Result(Outcome.SENT, PubAck("ASSIGN", 7)))
    answer = Answer(200, None, "ok", 0.0, (decision, "r-1", "t-1"), pushed)
    assert answer.body == _pushed_body(decision, "r-1", "t-1", pushed)
    assert answer.encoded() == dumps(answer.body)
    assert answer.body["assignment"] == {
        "assignment_id": "as-1",
        "subject": "exec.a",
        "outcome": "sent",
        "stream": "ASSIGN",
        "seq": 7,
    }


def test_a_push_whose_id_is_not_a_string_is_still_dumps_of_its_body() -> None:
    """An assignment id of another type (a value no Router writes) is written as dumps does."""
    decision = Decision("a", DecisionReason.WEIGHTED, "default", 0, None, None)
    pushed = Pushed(5, "exec.a", Result(Outcome.QUEUED, None, 3))  # type: ignore[arg-type]
    answer = Answer(200, None, "ok", 0.0, (decision, "r-1", "t-1"), pushed)
    assert answer.encoded() == dumps(_pushed_body(decision, "r-1", "t-1", pushed))
