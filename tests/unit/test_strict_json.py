"""Strict JSON at every door: NaN, infinities, huge integers and deep nesting are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing.health import ProviderHealth
from natsrouter.routing.messages import ErrorCode, RequestError, parse_decide_request
from natsrouter.routing.policy import PolicyError, load_policy_file
from natsrouter.routing.strict_json import (
    LONE_SURROGATE,
    MAX_DEPTH,
    StrictJsonError,
    dumps,
    loads,
    may_hide_refused,
)
from natsrouter.routing.worker_messages import InvalidMessage, parse_exec_ack, parse_exec_result

LIMIT = 1 << 20
REQUEST = (
    '{"version":"1","request_id":"r","tenant_id":"acme","task":{"type":"t","payload":{}},'
    '"constraints":{"max_cost":%s}}'
)
RESULT = '{"assignment_id":"a","status":"success","provider_id":"p","tenant_id":"acme",%s}'
HOSTILE_NUMBERS = ("NaN", "Infinity", "-Infinity", "1e400", "9" * 25, "9" * 5000)


@pytest.mark.parametrize("number", HOSTILE_NUMBERS)
def test_decide_request_with_a_hostile_number_is_invalid_request_naming_the_field(
    number: str,
) -> None:
    """constraints.max_cost = NaN, Infinity, 1e400 or a huge integer: invalid_request."""
    with pytest.raises(RequestError) as info:
        parse_decide_request((REQUEST % number).encode(), LIMIT)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert info.value.details["field"] == "constraints.max_cost"


@pytest.mark.parametrize("number", HOSTILE_NUMBERS)
@pytest.mark.parametrize("name", ["latency_ms", "cost", "timestamp"])
def test_result_with_a_hostile_number_is_invalid(name: str, number: str) -> None:
    """An ExecResult carrying NaN, Infinity or a huge number is InvalidMessage naming it."""
    with pytest.raises(InvalidMessage) as info:
        parse_exec_result((RESULT % f'"{name}":{number}').encode(), None, LIMIT)
    assert info.value.field == name


def test_ack_with_nan_anywhere_is_invalid() -> None:
    """An ExecAssignmentAck with a NaN in an extra field is InvalidMessage."""
    raw = b'{"assignment_id":"a","status":"accepted","tenant_id":"acme","x":[1,NaN]}'
    with pytest.raises(InvalidMessage) as info:
        parse_exec_ack(raw, None, LIMIT)
    assert info.value.field == "x[1]"


def test_deep_nesting_is_a_clear_error_at_any_depth() -> None:
    """Past MAX_DEPTH levels (or the parser's own limit) the error says nested too deeply."""
    for depth in (MAX_DEPTH + 1, 100_000):
        raw = ('{"version":"1","metadata":' + "[" * depth + "]" * depth + "}").encode()
        with pytest.raises(RequestError) as info:
            parse_decide_request(raw, 1 << 22)
        assert f"nested deeper than {MAX_DEPTH} levels" in info.value.message


def test_nesting_up_to_the_limit_is_accepted() -> None:
    """MAX_DEPTH levels, the document itself included, parse."""
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads(text) is not None


def test_64_bit_integers_at_both_ends_are_accepted() -> None:
    """-2**63 and 2**64-1 are numbers every 64-bit consumer can hold one way or the other."""
    assert loads(f"[{-(2**63)},{2**64 - 1}]") == [-(2**63), 2**64 - 1]


def test_policy_file_with_infinity_is_refused_naming_the_field(tmp_path: Path) -> None:
    """A policy's expected_cost = Infinity never becomes a provider estimate."""
    path = tmp_path / "acme" / "default.json"
    path.parent.mkdir()
    path.write_text('{"providers":[{"name":"a","weight":1,"expected_cost":Infinity}]}')
    with pytest.raises(PolicyError) as info:
        load_policy_file(path, tmp_path)
    assert info.value.field == "providers[0].expected_cost"


def test_provider_estimates_stay_finite() -> None:
    """A non-finite latency or cost never reaches the running averages."""
    health = ProviderHealth()
    health.record("p", True, 10.0, 0.5)
    health.record("p", True, float("nan"), float("inf"))
    assert health.expected("p", None) == (10.0, 0.5)


def test_dumps_refuses_nan_rather_than_emit_it() -> None:
    """What the Router emits is standard JSON or nothing."""
    with pytest.raises(ValueError):
        dumps({"cost": float("nan")})
    assert json.loads(dumps({"a": 1.5}), parse_constant=_refuse) == {"a": 1.5}


def _refuse(name: str) -> Any:
    raise AssertionError(name)


def test_strict_json_error_is_the_only_exception() -> None:
    """Broken text and bad UTF-8 raise StrictJsonError too."""
    for raw in (b"\xff", b"{", b"[1,]"):
        with pytest.raises(StrictJsonError):
            loads(raw)


@pytest.mark.parametrize("name", ["request_id", "tenant_id", "trace_id"])
def test_control_characters_in_ids_that_become_headers_are_refused(name: str) -> None:
    """A CR/LF in an id would split a NATS header line: invalid_request naming the field."""
    document = json.loads(REQUEST % "1")
    document[name] = "acme\r\nNats-Msg-Id: forged"
    with pytest.raises(RequestError) as info:
        parse_decide_request(json.dumps(document).encode(), LIMIT)
    assert info.value.details["field"] == name


@pytest.mark.parametrize("name", ["assignment_id", "tenant_id", "trace_id"])
def test_control_characters_in_result_ids_are_invalid(name: str) -> None:
    """The same in an ExecResult: InvalidMessage naming the field."""
    document = json.loads(RESULT % '"cost":1')
    document[name] = "x\ny"
    with pytest.raises(InvalidMessage) as info:
        parse_exec_result(json.dumps(document).encode(), None, LIMIT)
    assert info.value.field == name


def test_a_trailing_newline_alone_is_refused_too() -> None:
    """A regex `$` matches before a final newline: the check must still see it."""
    document = json.loads(RESULT % '"cost":1')
    document["assignment_id"] = "\n"
    with pytest.raises(InvalidMessage) as info:
        parse_exec_result(json.dumps(document).encode(), None, LIMIT)
    assert info.value.field == "assignment_id"


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=10,
    )
)
def test_dumps_writes_what_the_standard_encoder_writes(document: Any) -> None:
    """The encoder built once writes byte for byte what json.dumps writes, compact."""
    expected = json.dumps({"v": document}, separators=(",", ":"), allow_nan=False).encode()
    assert dumps({"v": document}) == expected


LONE = "\ud800"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"a":"x\\ud800"}', "a"),
        ('{"a":["ok","\\uDFFF"]}', "a[1]"),
        ('{"a":{"\\udc00k":1}}', "a.\\udc00k"),
        ('"\\ud83d"', "(document)"),
        ('{"a":"\\ude00\\ud83d"}', "a"),  # a low then a high surrogate: no pair
    ],
)
def test_unicode_only_refuses_a_lone_surrogate_naming_its_field(text: str, field: str) -> None:
    """A lone surrogate escape in a value or a key: StrictJsonError at its field, printable."""
    with pytest.raises(StrictJsonError) as info:
        loads(text.encode(), unicode_only=True)
    assert (info.value.field, info.value.message) == (field, LONE_SURROGATE)
    str(info.value).encode()  # what is quoted in a header or a log line encodes as UTF-8


def test_unicode_only_accepts_pairs_and_escaped_backslashes() -> None:
    """A surrogate pair is one character; \\\\ud800 is a backslash and text; both parse."""
    text = b'{"emoji":"\\ud83d\\ude00","text":"\\\\ud800","raw":"\xf0\x9f\x98\x80"}'
    assert loads(text, unicode_only=True) == {
        "emoji": "\U0001f600",
        "text": "\\ud800",
        "raw": "\U0001f600",
    }


def test_without_unicode_only_a_lone_surrogate_parses() -> None:
    """The decide door parses it; its schema refuses one only where text must encode."""
    assert loads(b'{"a":"\\ud800"}') == {"a": LONE}


@pytest.mark.parametrize("name", ["request_id", "tenant_id", "trace_id", "assignment_subject"])
def test_a_lone_surrogate_in_a_decide_field_that_must_encode_is_refused(name: str) -> None:
    """Ids that become headers, message ids or keys, and the subject: invalid_request."""
    document = json.loads(REQUEST % "1")
    document[name] = "jobs" + LONE
    with pytest.raises(RequestError) as info:
        parse_decide_request(json.dumps(document).encode(), LIMIT)
    assert (info.value.code, info.value.details["field"]) == (ErrorCode.INVALID_REQUEST, name)


@pytest.mark.parametrize("kind", ["ack", "result"])
def test_a_lone_surrogate_anywhere_in_a_worker_message_is_invalid(kind: str) -> None:
    """In an extra field's key of an ack or a result: InvalidMessage naming it."""
    base = (
        '{"assignment_id":"a","status":"accepted","tenant_id":"acme",%s}'
        if kind == "ack"
        else RESULT
    )
    raw = (base % '"x":{"\\ud800":1}').encode()
    parse = parse_exec_ack if kind == "ack" else parse_exec_result
    with pytest.raises(InvalidMessage) as info:
        parse(raw, None, LIMIT)
    assert (info.value.field, info.value.message) == ("x.\\ud800", LONE_SURROGATE)


def test_policy_file_with_a_lone_surrogate_is_refused_naming_the_field(tmp_path: Path) -> None:
    """A provider name that no metric label or header could carry is refused at load."""
    path = tmp_path / "acme" / "default.json"
    path.parent.mkdir()
    path.write_text('{"providers":[{"name":"a\\ud800","weight":1}]}')
    with pytest.raises(PolicyError) as info:
        load_policy_file(path, tmp_path)
    assert info.value.field == "providers[0].name"


_DIGIT_RUN = re.compile(rb"[0-9]{19}")


@settings(max_examples=500)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=8),
            st.integers(min_value=0, max_value=10**25).map(lambda n: str(n).encode()),
        ),
        max_size=8,
    ).map(b"".join)
)
def test_may_hide_refused_finds_exactly_the_texts_with_a_run_of_19_digits(raw: bytes) -> None:
    """may_hide_refused is true exactly when the bytes hold 19 or more digits in a row."""
    assert may_hide_refused(raw) is (_DIGIT_RUN.search(raw) is not None)
