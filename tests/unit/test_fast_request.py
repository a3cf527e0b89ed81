"""The fast DecideRequest path and decide_request.schema.json accept and refuse alike."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing import strict_json
from natsrouter.routing.messages import (
    _DECODE,
    _VALIDATOR,
    DecideRequest,
    ErrorCode,
    RequestError,
    _build,
    _checked,
    _fast_request,
    _from_wire,
    _loads,
    parse_decide_request,
)
from natsrouter.routing.strict_json import MAX_DEPTH, MSGSPEC_REFUSED

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


# --- The msgspec path (``_wire_request``) against the strict parse and the schema -----------


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (1 is not 1.0, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


def _wire_request(raw: bytes) -> DecideRequest | None:
    """The msgspec path alone: the request, or None where it declines."""
    if strict_json.may_hide_refused(raw):
        return None
    try:
        wire = _DECODE(raw)
    except MSGSPEC_REFUSED:
        return None
    return _from_wire(raw, wire)


def _checked_request(raw: bytes) -> DecideRequest:
    """The reference: the strict parse (json's scanner), then ``_fast_request`` or the schema."""
    return _checked(_loads(raw, strict_json.loads))


def agree(raw: bytes) -> bool:
    """What the msgspec path accepts, the strict parse and the schema accept and build alike.

    Returns whether the msgspec path accepted ``raw``.
    """
    fast = _wire_request(raw)
    try:
        checked: Any = _checked_request(raw)
    except RequestError as err:
        checked = err
    if fast is None:
        return False
    assert isinstance(checked, DecideRequest), (raw[:300], checked)
    assert _same(fast, checked), (raw[:300], fast, checked)
    return True


def _encode(document: Any, style: int) -> bytes:
    """``document`` as JSON bytes written one of five ways (escapes, spacing, key order); the
    fifth is spaced out past ``strict_json.WALK_BELOW`` bytes."""
    if style == 0:
        return json.dumps(document).encode()
    if style == 1:
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    if style == 2:
        return json.dumps(document, indent=1, sort_keys=True).encode()
    if style == 4:
        return json.dumps(document).encode().ljust(strict_json.WALK_BELOW, b" ")
    return (" \n" + json.dumps(document, ensure_ascii=False) + "\r\t").encode(
        "utf-8", "surrogatepass"
    )


def _mutated(data: st.DataObject) -> Any:
    """The seed with fields replaced, removed or added, nested ones too."""
    document = json.loads(json.dumps(SEED))
    for _ in range(data.draw(st.integers(0, 3))):
        target = document
        if data.draw(st.booleans()):
            nested = data.draw(st.sampled_from([*NESTED, "metadata"]))
            if not isinstance(document.get(nested), dict):
                document[nested] = {}
            target = document[nested]
        key = data.draw(st.sampled_from([*sorted(target), "extra", "payload", "max_cost"]))
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(values | st.sampled_from(EDGE_STRINGS))
    return document


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_msgspec_path_accepts_only_what_the_checked_path_builds_alike(
    data: st.DataObject,
) -> None:
    """Mutated requests, written five ways: msgspec's request equals the checked one, or None."""
    agree(_encode(_mutated(data), data.draw(st.integers(0, 4))))


# Bytes that strict JSON and msgspec might read differently, spliced anywhere into a request.
HOSTILE_PIECES = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-1e400",
    b"1.5e-400",
    b"4.9e-324",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"9223372036854775808",
    b"9" * 400,
    b"-0",
    b"-0.0",
    b"1E2",
    b"0.1000000000000000055511151231257827021181583404541015625",
    b'"\\ud800"',
    b'"\\udfff\\ud800"',
    b'"\\ud83d\\ude00"',
    b'"\\u0000"',
    b'"\xff"',
    b'"\xed\xa0\x80"',
    b'"\xc0\xaf"',
    b"\xef\xbb\xbf",
    b" ",
    b"\t",
    b"\x0b",
    b"\x00",
    b"[" * 70,
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b'"',
    b'"version":"1",',
    b'"request_id":"dup",',
    b'"task":{"type":"t","payload":1},',
    b'"x":1,',
]


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_spliced_bytes_are_refused_by_msgspec_or_read_alike(data: st.DataObject) -> None:
    """Hostile bytes inserted into, or replacing part of, a request's text: both agree."""
    raw = bytearray(_encode(_mutated(data), data.draw(st.integers(0, 4))))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw)))
        cut = data.draw(st.integers(0, 3))
        raw[at : at + cut] = data.draw(st.sampled_from(HOSTILE_PIECES))
    agree(bytes(raw))


_INTEGERS = st.integers(-(2**70), 2**70) | st.integers(-(2**65), 2**65)
_NUMBER_TEXT = (
    _INTEGERS.map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.tuples(
        st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,30})?", fullmatch=True),
        st.sampled_from(["", "e", "E", "e+", "e-"]),
        st.integers(0, 400),
    ).map(lambda parts: parts[0] + (parts[1] + str(parts[2]) if parts[1] else ""))
)


def _number_at(where: str, number: str) -> bytes:
    """The seed as JSON with ``number`` written verbatim at ``where`` only."""
    old = {
        "constraints": '"max_cost": 0.5',
        "metadata": '"session_id": "s"',
        "payload": '"prompt": "hi"',
    }[where]
    key = old.split(":")[0]
    return json.dumps(SEED).replace(old, f"{key}: {number}").encode()


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(["constraints", "metadata", "payload"]), _NUMBER_TEXT)
def test_any_number_text_is_read_alike(where: str, number: str) -> None:
    """Any JSON number, at a limit, in metadata or in the payload: same value, same type."""
    agree(_number_at(where, number))


def _nested(depth: int) -> str:
    """``depth`` levels of arrays and objects, alternating, with numbers at the bottom."""
    text = "[1,2.5]"
    for level in range(1, depth):
        text = f'{{"k":{text}}}' if level % 2 else f"[0,{text}]"
    return text


@pytest.mark.parametrize("where", ["payload", "metadata"])
def test_depth_is_read_alike_up_to_and_past_the_limit(where: str) -> None:
    """Payload and metadata nested up to MAX_DEPTH in all: msgspec's request; one more: None."""
    # The document is one level; the task, or the metadata object, another.
    room = MAX_DEPTH - 2 if where == "payload" else MAX_DEPTH - 1
    for depth, accepted in ((room, True), (room + 1, False), (3 * MAX_DEPTH, False)):
        if where == "payload":
            raw = json.dumps(SEED).replace('{"prompt": "hi"}', _nested(depth))
        else:
            raw = json.dumps(SEED).replace(
                '{"session_id": "s"}', '{"m":' + _nested(depth - 1) + "}"
            )
        assert agree(raw.encode()) is accepted, depth


def test_deeper_than_msgspec_can_go_is_declined() -> None:
    """100,000 levels of arrays in the payload: msgspec's recursion error becomes None."""
    raw = json.dumps(SEED).replace('{"prompt": "hi"}', "[" * 100_000 + "]" * 100_000)
    assert _wire_request(raw.encode()) is None


def _doc(top: str = "", task: str = '"payload":1', before: bytes = b"") -> bytes:
    """A small request: ``top`` is written before its task, ``task`` inside it."""
    text = '{"version":"1","request_id":"r","tenant_id":"t",%s"task":{"type":"x",%s}}'
    return before + (text % (top, task)).encode("utf-8", "surrogatepass")


NAMED_EDGES: dict[str, tuple[bytes, bool]] = {
    # name: (the request, whether the msgspec path takes it)
    "seed": (json.dumps(SEED).encode(), True),
    "bench request": (_doc('"trace_id":"0123456789abcdef",', '"payload":{"p":"hi"}'), True),
    "payload_ref only": (_doc(task='"payload_ref":"s"'), True),
    "payload null": (_doc(task='"payload":null'), True),
    "neither payload": (_doc(task='"payload_ref":"s"').replace(b',"payload_ref":"s"', b""), False),
    "payload_ref null": (_doc(task='"payload":1,"payload_ref":null'), False),
    "trace_id null": (_doc('"trace_id":null,'), False),
    "trace_id empty": (_doc('"trace_id":"",'), True),
    "constraints null": (_doc('"constraints":null,'), False),
    "constraints empty": (_doc('"constraints":{},'), True),
    "limits int and float": (_doc('"constraints":{"max_latency_ms":0,"max_cost":-0.0},'), True),
    "limit above int64": (_doc('"constraints":{"max_cost":18446744073709551615},'), False),
    "metadata empty": (_doc('"metadata":{},'), True),
    "metadata null": (_doc('"metadata":null,'), False),
    "push false, subject": (_doc('"push_assignment":false,"assignment_subject":"a.b",'), True),
    "subject null": (_doc('"assignment_subject":null,'), False),
    "subject with a wildcard": (_doc('"assignment_subject":"a.*",'), False),
    "id with an escaped control": (_doc('"request_id":"r\\u0001",'), False),
    "id with a no-break space": (_doc('"request_id":"r\\u00a0",'), True),
    "id with DEL": (_doc('"request_id":"r\x7f",'), False),
    "id with a lone surrogate": (_doc('"request_id":"r\\ud800",'), False),
    "lone surrogate in the payload": (_doc(task='"payload":"\\ud800"'), False),
    "surrogate pair in the payload": (_doc(task='"payload":"\\ud83d\\ude00"'), True),
    "not UTF-8 in the payload": (_doc(task='"payload":"@"').replace(b"@", b"\xff"), False),
    "UTF-8 in the payload": (_doc(task='"payload":"\u00e9\U0001f600"'), True),
    "NaN in the payload": (_doc(task='"payload":NaN'), False),
    "Infinity in metadata": (_doc('"metadata":{"a":-Infinity},'), False),
    "1e400 in the payload": (_doc(task='"payload":[1e400]'), False),
    "2**64 in metadata": (_doc('"metadata":{"a":[18446744073709551616]},'), False),
    "2**64-1 in metadata": (_doc('"metadata":{"a":[18446744073709551615]},'), False),
    "-2**63-1 in the payload": (_doc(task='"payload":-9223372036854775809'), False),
    "-2**63 in the payload": (_doc(task='"payload":-9223372036854775808'), False),
    "duplicate version, last valid": (_doc('"version":"2","version":"1",'), False),
    "duplicate version, last invalid": (_doc('"version":"2",'), False),
    "duplicate task": (_doc('"task":{"type":"y","payload_ref":"s"},'), True),
    "duplicate payload key": (_doc(task='"payload":{"a":1,"b":2,"a":3}'), True),
    "18 digits in the payload": (_doc(task='"payload":999999999999999999'), True),
    "2**64 hidden by a duplicate payload": (
        _doc(task='"payload":18446744073709551616,"payload":1'),
        False,
    ),
    "-2**63-1 hidden by a duplicate in metadata": (
        _doc('"metadata":{"a":-9223372036854775809,"a":0},'),
        False,
    ),
    "2**64 hidden by a duplicate unknown field": (_doc('"zz":18446744073709551616,"zz":1,'), False),
    "leading BOM": (_doc(before=b"\xef\xbb\xbf"), False),
    "JSON whitespace around": (_doc(before=b" \t\r\n") + b"\n ", True),
    "vertical tab before": (_doc(before=b"\x0b"), False),
    "trailing data": (_doc() + b" 1", False),
    "unknown field": (_doc('"x":1,'), False),
    "unknown task field": (_doc(task='"payload":1,"x":1'), False),
    "unknown limit": (_doc('"constraints":{"x":1},'), False),
    "not an object": (b"[1]", False),
    "empty": (b"", False),
}


@pytest.mark.parametrize("name", NAMED_EDGES)
def test_named_edges_are_read_alike(name: str) -> None:
    """Each named edge: msgspec takes it or not as listed, and agrees with the checked path."""
    raw, taken = NAMED_EDGES[name]
    assert agree(raw) is taken


HIDDEN_BY_DUPLICATES = [
    _doc(task='"payload":18446744073709551616,"payload":1'),
    _doc('"metadata":{"a":-9223372036854775809,"a":0},'),
    _doc('"zz":18446744073709551616,"zz":1,'),
    _doc(task='"payload":{"a":[18446744073709551616],"a":[]}'),
    # Nested deeper than the scanner reads, then replaced: loads gives up on it.
    _doc(task='"payload":' + "[" * 994 + "]" * 994 + ',"payload":1'),
]


@pytest.mark.parametrize("raw", HIDDEN_BY_DUPLICATES, ids=range(len(HIDDEN_BY_DUPLICATES)))
def test_what_a_duplicate_key_hides_is_refused_as_by_the_strict_parse(raw: bytes) -> None:
    """An integer beyond 64 bits or a nesting the scanner cannot read, replaced by a later
    duplicate key: parse_decide_request refuses it with the strict parse's own error."""
    with pytest.raises(RequestError) as expected:
        _checked_request(raw)
    with pytest.raises(RequestError) as got:
        parse_decide_request(raw, 1 << 20)
    assert (got.value.code, got.value.message, got.value.details) == (
        expected.value.code,
        expected.value.message,
        expected.value.details,
    )


@pytest.mark.parametrize("raw", HIDDEN_BY_DUPLICATES, ids=range(len(HIDDEN_BY_DUPLICATES)))
def test_loads_bytes_refuses_what_a_duplicate_key_hides_as_loads_does(raw: bytes) -> None:
    """loads_bytes gives loads's error for a value a duplicate key hides from the document."""
    with pytest.raises(strict_json.StrictJsonError) as expected:
        strict_json.loads(raw)
    with pytest.raises(strict_json.StrictJsonError) as got:
        strict_json.loads_bytes(raw)
    assert (got.value.field, got.value.message) == (expected.value.field, expected.value.message)
