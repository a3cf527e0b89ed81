"""strict_json reads a text exactly as its JSONDecoder's own decode() does, and reads bytes
through msgspec (loads_bytes) exactly as loads does."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing.strict_json import (
    _DECODER,
    MAX_DEPTH,
    WALK_BELOW,
    StrictJsonError,
    _decode,
    loads,
    loads_bytes,
    within,
    within_packed,
)

_PIECES = st.sampled_from(
    [
        " ",
        "\t",
        "\n",
        "\r",
        "\x0b",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        '"a"',
        '"\\u00e9"',
        '"',
        "1",
        "-2.5e3",
        "1e400",
        "NaN",
        "true",
        "null",
        "x",
        "\ufeff",
    ]
)


def _outcome(decode: Any, text: str) -> Any:
    try:
        return ("doc", decode(text))
    except (ValueError, StrictJsonError, RecursionError) as exc:
        return ("error", type(exc) if not isinstance(exc, ValueError) else ValueError)


@settings(max_examples=2000)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_decode_accepts_and_refuses_what_the_decoder_does(text: str) -> None:
    """Any mix of JSON pieces and whitespace: the same document, or both refuse it alike."""
    assert _outcome(_decode, text) == _outcome(_DECODER.decode, text)


def _read(loads: Any, raw: bytes) -> Any:
    try:
        return ("doc", loads(raw))
    except StrictJsonError as err:
        return ("error", err.message, err.field)


def _typed(value: Any) -> Any:
    """``value`` with each scalar beside its type: 1, 1.0 and True stay apart, -0.0 too."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return (type(value).__name__, repr(value))


_BYTES_PIECES = st.sampled_from(
    [
        b" ",
        b"\n",
        b"{",
        b"}",
        b"[",
        b"]",
        b"[[[[[[[[",
        b"]]]]]]]]",
        b":",
        b",",
        b'"a"',
        b'"\\ud800"',
        b'"\\ud83d\\ude00"',
        b'"\xc3\xa9"',
        b'"\xff"',
        b"\xef\xbb\xbf",
        b"0",
        b"-0",
        b"-0.0",
        b"1.5e-400",
        b"1e400",
        b"18446744073709551615",
        b"18446744073709551616",
        b"-9223372036854775808",
        b"-9223372036854775809",
        b"9" * 30,
        b"0.1000000000000000055511151231257827021181583404541015625",
        b"NaN",
        b"-Infinity",
        b"true",
        b"null",
    ]
)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_BYTES_PIECES, max_size=16).map(b"".join))
def test_loads_bytes_reads_any_bytes_as_loads_does(raw: bytes) -> None:
    """Any mix of JSON pieces: loads_bytes gives loads's document (same types) or error."""
    fast, strict = _read(loads_bytes, raw), _read(loads, raw)
    assert (fast[0], _typed(fast[1]) if fast[0] == "doc" else fast[1:]) == (
        strict[0],
        _typed(strict[1]) if strict[0] == "doc" else strict[1:],
    )


@settings(max_examples=1000, deadline=None)
@given(_VALUES, st.integers(0, 1), st.integers(MAX_DEPTH - 3, MAX_DEPTH + 1))
def test_loads_bytes_reads_any_document_as_loads_does(value: Any, spaced: int, depth: int) -> None:
    """Any JSON document (big integers, any float), nested near MAX_DEPTH, small or spaced
    out past WALK_BELOW: the same document or the same error."""
    text = "[" * (depth - 1) + json.dumps(value) + "]" * (depth - 1)
    raw = text.encode("utf-8", "surrogatepass").ljust(WALK_BELOW * spaced, b" ")
    fast, strict = _read(loads_bytes, raw), _read(loads, raw)
    if strict[0] == "doc":
        assert fast[0] == "doc"
        assert _typed(fast[1]) == _typed(strict[1])
    else:
        assert fast == strict


@settings(max_examples=1000, deadline=None)
@given(_VALUES, st.integers(0, 4))
def test_within_packed_judges_as_within(value: Any, room: int) -> None:
    """A value inside enough arrays to leave it ``room`` levels: the encoder and the bracket
    count give the walk's verdict."""
    around = MAX_DEPTH - room
    raw = ("[" * around + json.dumps(value) + "]" * around).encode("utf-8", "surrogatepass")
    assert within_packed(raw, (value, room)) is within(value, room)
