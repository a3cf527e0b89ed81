"""The assignment subject guard: NATS pattern matching and the always-reserved subjects."""

from __future__ import annotations

import json

import pytest

from natsrouter.config import build_settings
from natsrouter.errors import ConfigError
from natsrouter.routing.messages import RequestError, parse_decide_request
from natsrouter.routing.subjects import AssignmentSubjects, SubjectRefusal, matches


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.>", "a", False),
        ("a.>", "a.b.c", True),
        (">", "x", True),
        ("*.b", "a.b", True),
    ],
)
def test_patterns_match_like_nats(pattern: str, subject: str, expected: bool) -> None:
    """`*` is one token, `>` one or more trailing tokens."""
    assert matches(pattern, subject) is expected


def test_owned_subjects_are_reserved_even_when_a_pattern_allows_everything() -> None:
    """`>` allows any subject except owned ones, their sub-subjects, $ and _INBOX."""
    guard = AssignmentSubjects("assign", [">"], ["usage", "assign.ack"])
    assert [
        guard.refusal(s) for s in ("usage", "usage.x", "assign.ack.dlq", "$JS.API.X", "_INBOX.r")
    ] == [SubjectRefusal.RESERVED] * 5
    assert guard.refusal("assign.gpu") is None


def test_bad_pattern_setting_is_a_config_error() -> None:
    """`>` in the middle of a pattern names the key."""
    with pytest.raises(ConfigError, match="assignment_subjects_allowed"):
        build_settings({"assignment_subjects_allowed": "a.>.b"})


def test_a_subject_with_a_trailing_newline_is_invalid_request() -> None:
    """`a.b\n` would end the PUB line early: refused by the schema naming the field."""
    document = {"version": "1", "request_id": "r", "tenant_id": "acme"}
    document["task"] = {"type": "t", "payload": {}}
    document["assignment_subject"] = "caf.exec.assign.v1.x\n"
    with pytest.raises(RequestError) as info:
        parse_decide_request(json.dumps(document).encode(), 1 << 20)
    assert info.value.details["field"] == "assignment_subject"
