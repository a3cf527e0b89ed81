"""The link reads a JetStream publish answer as nats-py's ``JetStreamContext.publish`` does.

``read_pub_ack`` reads the server's usual answer itself and hands anything else to nats-py's
steps; the reference below is those steps as ``JetStreamContext.publish`` runs them on the
answer (nats-py 2.16), then the link's conversion to its own PubAck.
"""

from __future__ import annotations

import json
from typing import Any

import nats.js.api
import nats.js.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.link.nats_jetstream import read_pub_ack
from natsrouter.link.outcome import PubAck


def _reference(data: bytes) -> PubAck:
    resp = json.loads(data)
    if "error" in resp:
        raise nats.js.errors.APIError.from_error(resp["error"])
    ack = nats.js.api.PubAck.from_response(resp)
    return PubAck(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))


def _outcome(read: Any, data: bytes) -> Any:
    """The PubAck, or the error's type, text and (for an APIError) its codes."""
    try:
        return read(data)
    except Exception as exc:  # the comparison is the point
        return (type(exc), str(exc), getattr(exc, "code", None), getattr(exc, "err_code", None))


_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
    st.lists(st.integers(), max_size=2),
)
_ERROR = st.fixed_dictionaries(
    {},
    optional={"code": _VALUE, "err_code": _VALUE, "description": _VALUE},
)
_ANSWER = st.fixed_dictionaries(
    {},
    optional={
        "stream": _VALUE,
        "seq": _VALUE,
        "duplicate": _VALUE,
        "domain": _VALUE,
        "error": st.one_of(_ERROR, _VALUE),
        "batch": _VALUE,
        "other": _VALUE,
    },
)


@st.composite
def _answers(draw: st.DrawFn) -> bytes:
    """JSON answers (usual, refused, odd) written in several ways, and stray bytes."""
    document = draw(st.one_of(_ANSWER, _VALUE, st.lists(_ANSWER, max_size=2)))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    text = json.dumps(document, separators=separators, ensure_ascii=draw(st.booleans()))
    text = draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", " ", "x"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-8-sig"]))
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:  # a lone surrogate
        data = text.encode("utf-8", "surrogatepass")
    return draw(st.one_of(st.just(data), st.binary(max_size=20)))


@settings(max_examples=1500)
@given(_answers())
def test_read_pub_ack_reads_every_answer_as_nats_py(data: bytes) -> None:
    """Any answer: the same PubAck, or the same error (type, text, code, err_code)."""
    assert _outcome(read_pub_ack, data) == _outcome(_reference, data)


def test_the_usual_answers_are_read() -> None:
    """A stored message, and a duplicate of one: stream, seq and the duplicate flag."""
    assert read_pub_ack(b'{"stream":"S","seq":7}') == PubAck("S", 7, False)
    assert read_pub_ack(b'{"stream":"S","domain":"d","seq":7,"duplicate":true}') == PubAck(
        "S", 7, True
    )


_USUAL = '{"stream":"S","seq":7}'


@pytest.mark.parametrize(
    "data",
    [
        (_USUAL + " ").encode(),
        (_USUAL + "x").encode(),
        (_USUAL + '{"stream":"T","seq":8}').encode(),
        (" " + _USUAL).encode(),
        _USUAL.encode("utf-8-sig"),
        _USUAL.encode("utf-16"),
        _USUAL.encode("utf-16-le"),
        b'{"stream":"S\xff","seq":7}',
        b'{"stream":"S\\ud800","seq":7}',
        b'{"stream":"S","seq":7,"error":{"code":503,"err_code":10077,"description":"full"}}',
        b'{"stream":"S","seq":NaN}',
        b'{"stream":"S"}',
        b'{"seq":7}',
        b'["stream","seq"]',
        b"",
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_an_answer_at_an_edge_is_read_as_nats_py_reads_it(data: bytes) -> None:
    """Text around the object, other encodings, bad bytes, an error beside a PubAck, fields
    missing, not an object, deep nesting: the same PubAck or the same error."""
    assert _outcome(read_pub_ack, data) == _outcome(_reference, data)
