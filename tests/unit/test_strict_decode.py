"""strict_json reads a text exactly as its JSONDecoder's own decode() does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from natsrouter.routing.strict_json import _DECODER, StrictJsonError, _decode

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
