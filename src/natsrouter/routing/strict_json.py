"""Standard JSON only, in and out: what every door of the Router parses and emits with.

Python's ``json`` accepts ``NaN``, ``Infinity`` and integers of any size, and writes ``NaN``
back out, which is not JSON: one worker result with ``"cost": NaN`` would have made every
later decide answer, assignment and usage event unreadable to a standard parser. ``loads``
refuses, with the field named:

- ``NaN``, ``Infinity``, ``-Infinity``, and numbers a float cannot hold (``1e400``);
- integers outside what 64 bits hold (below -2**63 or above 2**64-1), refused from their
  digits, before Python turns thousands of digits into an int;
- documents nested deeper than ``MAX_DEPTH`` arrays or objects (the Router re-serialises
  ``metadata`` and ``payload``; a bounded depth keeps every later step far from the
  interpreter's recursion limit);
- with ``unicode_only``, a lone surrogate (``"\\ud800"`` without its pair) in any string or
  key: valid JSON syntax, but no Unicode text (RFC 7493 refuses it), and a string holding
  one cannot be encoded as UTF-8 (a header, a subject, a message id, a label). Used where
  a message is not on the decide path (worker messages, policy files, bucket values):
  finding one costs a scan of the text. A decide request refuses one only in the fields
  that reach headers, subjects and ids, by its schema's patterns (docs/messages.md).

``loads_bytes`` is ``loads`` for bytes (same documents, same errors), read by msgspec in one C
pass when it can: the decide path's parser, about three times faster.

``dumps`` is compact and refuses a non-finite float rather than write it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

MAX_DEPTH = 64
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
# Digits (and sign) of the longest integer in range: -9223372036854775808.
_MAX_INT_CHARS = 20


class StrictJsonError(Exception):
    """Not standard JSON, or outside the bounds above; ``field`` names where, when known."""

    def __init__(self, message: str, field: str = "(document)") -> None:
        super().__init__(f"{field}: {message}")
        self.message = message
        self.field = field


class _Bad:
    """Stands for a refused number while looking for where it is."""

    def __init__(self, why: str) -> None:
        self.why = why


def _constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a JSON number")


def _int(text: str) -> int:
    value = int(text) if len(text) <= _MAX_INT_CHARS else None
    if value is None or not INT_MIN <= value <= INT_MAX:
        raise StrictJsonError("integer out of the 64-bit range")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError("number too large for a float")
    return value


def _mark_int(text: str) -> Any:
    try:
        return _int(text)
    except StrictJsonError as err:
        return _Bad(err.message)


def _mark_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _Bad("number too large for a float")


LONE_SURROGATE = "lone surrogate (an unpaired \\ud800-\\udfff escape): not Unicode text"
# In bytes, a lone surrogate can only arrive as an escape: its UTF-8 is refused as not UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with any lone surrogate written as ``\\udXXX``: safe to encode as UTF-8."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


def _path(prefix: str, key: str | int) -> str:
    # A key may hold a lone surrogate: the path is quoted in headers and logs.
    return f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{printable(key)}".lstrip(".")


def _lone(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def _find_surrogate(document: Any) -> str | None:
    """The field of the first string or key holding a lone surrogate, or None."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if _lone(value):
                return where or "(document)"
        elif isinstance(value, dict):
            for key in value:
                if _lone(key):
                    return _path(where, key)
            stack.extend((_path(where, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((_path(where, i), v) for i, v in reversed(list(enumerate(value))))
    return None


def _find_bad(document: Any) -> tuple[str, str]:
    """(field, why) of the first refused number in a leniently parsed document."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, _Bad):
            return where or "(document)", value.why
        if isinstance(value, dict):
            stack.extend((_path(where, k), v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((_path(where, i), v) for i, v in reversed(list(enumerate(value))))
    return "(document)", "not standard JSON"


def _locate(text: str) -> StrictJsonError:
    """Parse again, marking instead of refusing, to name the field of the refused number."""
    try:
        document = json.loads(
            text,
            parse_constant=lambda name: _Bad(f"{name} is not a JSON number"),
            parse_int=_mark_int,
            parse_float=_mark_float,
        )
    except (ValueError, RecursionError):
        return StrictJsonError("not standard JSON")
    field, why = _find_bad(document)
    return StrictJsonError(why, field)


def _depth(document: Any) -> int:
    deepest = 0
    stack: list[tuple[int, Any]] = [(1, document)]
    while stack:
        level, value = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        stack.extend((level + 1, child) for child in children)
    return deepest


# Built once: json.loads with hooks builds a decoder and its scanner on every call (~4 µs).
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_int=_int, parse_float=_float)


_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # json.decoder.WHITESPACE
_SPACES = (" ", "\t", "\n", "\r")


def _after_spaces(text: str, at: int) -> int:
    match = _WHITESPACE.match(text, at)  # always matches (maybe nothing)
    return match.end() if match else at


def _decode(text: str) -> Any:
    """``_DECODER.decode(text)`` (same documents, same errors) without its two Python frames
    and, when there is none, its two whitespace matches: about a third of its time."""
    start = _after_spaces(text, 0) if text[:1] in _SPACES else 0
    try:
        document, end = _SCAN(text, start)
    except StopIteration:
        raise ValueError("Expecting value") from None
    if end != len(text) and _after_spaces(text, end) != len(text):
        raise ValueError("Extra data")
    return document


def loads(raw: bytes | str, *, unicode_only: bool = False) -> Any:
    """Parse standard JSON within the bounds above; raises only ``StrictJsonError``.

    ``unicode_only``: a lone surrogate anywhere is refused too, naming its field.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise StrictJsonError("not UTF-8") from None
    try:
        document = _decode(text)
    except StrictJsonError:
        raise _locate(text) from None
    except RecursionError:
        raise StrictJsonError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # JSONDecodeError, and anything else the scanner refuses
        raise StrictJsonError("not valid JSON") from None
    # Counting brackets runs at C speed; only a document with enough of them is walked.
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(document) > MAX_DEPTH:
        raise StrictJsonError(f"nested deeper than {MAX_DEPTH} levels")
    if unicode_only and (not isinstance(raw, bytes) or _SURROGATE_ESCAPE.search(text)):
        where = _find_surrogate(document)
        if where is not None:
            raise StrictJsonError(LONE_SURROGATE, where)
    return document


# msgspec reads standard JSON in one C pass, faster than the scanner above with its hooks.
# It refuses NaN, infinities, 1e400, bytes that are not UTF-8 and lone surrogates (which
# ``loads`` accepts: such a text is read by ``loads``), and lets through what ``within``
# checks after it: integers of any size, and nesting as deep as the interpreter's
# recursion limit (deeper: RecursionError).
_DECODE_ANY = msgspec.json.Decoder().decode
MSGSPEC_REFUSED = (msgspec.MsgspecError, RecursionError)
# msgpack holds exactly the integers allowed above (int64 and uint64): its encoder (C)
# refuses any other, which makes it a check of every integer in a document at C speed.
_PACK = msgspec.msgpack.Encoder().encode
#: Below this many bytes a text holds few values: walking them (``within``) costs less than
#: encoding them and counting brackets (about 0.25 µs at the least).
WALK_BELOW = 512


def within(value: Any, room: int) -> bool:
    """No integer outside 64 bits in ``value``, and at most ``room`` levels of arrays and
    objects (``value`` itself included): the bounds above, for a value msgspec decoded."""
    kind = type(value)
    if kind is dict:
        children: Any = value.values()
    elif kind is list:
        children = value
    elif kind is int:
        number: int = value
        return INT_MIN <= number <= INT_MAX
    else:
        return True
    if room < 1:
        return False
    room -= 1
    for child in children:  # scalars inline: a call per value would double the walk
        kind = type(child)
        if kind is dict or kind is list:
            if not within(child, room):
                return False
        elif kind is int and not INT_MIN <= child <= INT_MAX:
            return False
    return True


#: A text with more brackets than this may nest deeper than ``loads``'s scanner reads (it
#: gives up near the interpreter's recursion limit), in a value a duplicate key then hides
#: from the document: such a text is left to ``loads``, which refuses it as before.
_SCANNER_SAFE_BRACKETS = 500
#: Every byte a digit or not: an integer beyond 64 bits is a run of 19 digits or more.
DIGITS_MARKED = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
LONG_NUMBER = b"0" * 19


def may_hide_refused(raw: bytes) -> bool:
    """Whether ``raw`` may hold an integer beyond 64 bits (a run of 19 digits or more).

    ``loads`` refuses one while scanning, even when a later duplicate key replaces the
    value; msgspec keeps the last value and reads integers of any size, so a document read
    by msgspec cannot tell. A text with such a run goes to ``loads`` (about 0.35 µs to look
    for it in a small request; only long numbers or long digit ids pay the slower path).
    ``find`` rather than ``in``: the same answer, ``in`` takes a slower way to the search.
    """
    return raw.translate(DIGITS_MARKED).find(LONG_NUMBER) >= 0


def within_packed(raw: bytes, *values: tuple[Any, int]) -> bool:
    """``within(value, room)`` for each of ``values``: the same verdict, with C doing the
    work when there are many values. Each value is part of the document read from ``raw``,
    its room what its place leaves of ``MAX_DEPTH`` (the levels around it taken off)."""
    try:
        for value, _ in values:
            _PACK(value)
    except (OverflowError, RecursionError):
        return False
    # As loads: only a text with enough brackets can be too deep.
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > _SCANNER_SAFE_BRACKETS:
        return False
    return brackets <= MAX_DEPTH or all(within(value, room) for value, room in values)


def loads_bytes(raw: bytes) -> Any:
    """``loads(raw)``: the same document (same types), or the same ``StrictJsonError``."""
    if may_hide_refused(raw):
        return loads(raw)
    try:
        document = _DECODE_ANY(raw)
    except MSGSPEC_REFUSED:
        return loads(raw)
    if len(raw) < WALK_BELOW:
        bounded = within(document, MAX_DEPTH)
    else:
        bounded = within_packed(raw, (document, MAX_DEPTH))
    return document if bounded else loads(raw)  # out of bounds: loads names the field


def _unknown(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# Built once: json.dumps with any option, and JSONEncoder.encode itself, build the C encoder
# again on every call (half the ~5 µs of encoding a decide answer). This is the encoder
# JSONEncoder(separators=(",", ":"), allow_nan=False) builds, without the circular-reference
# check (the Router's documents are trees; a cycle would end in RecursionError).
_C_ENCODER = getattr(json.encoder, "c_make_encoder", None)
_ENCODE: Any = (
    _C_ENCODER(
        None, _unknown, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    if _C_ENCODER is not None
    else None
)
_FALLBACK = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dumps(document: Mapping[str, Any]) -> bytes:
    """Compact standard JSON; raises ``ValueError`` on NaN or an infinity."""
    return _text(document).encode()


def _text(value: Any) -> str:
    if _ENCODE is None:  # an interpreter without the C accelerator
        return _FALLBACK(value)
    return "".join(_ENCODE(value, 0))


_ESCAPE = json.encoder.encode_basestring_ascii
#: A string as ``dumps`` writes it (quoted, escaped, ASCII): the encoder's own function.
escape_json_text: Callable[[str], str] = _ESCAPE


def dumps_value(value: Any) -> str:
    """One value as ``dumps`` writes it within a document (text), for answers written from
    their fields: a string, None, a bool, an int or a finite float without the encoder's
    machinery (a call per document costs more than the few values of an answer)."""
    kind = type(value)
    if kind is str:
        return _ESCAPE(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    return _text(value)  # anything else as dumps does (NaN, infinities: ValueError)
