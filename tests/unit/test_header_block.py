"""The link's header block is nats-py 2.16's own, byte for byte, error for error.

``_header_block`` checks each header name once per process and translates a value only when
it holds a line break. These tests hold it, for any names and values (ones nats-py strips,
leaves out or refuses, text that is not UTF-8), to what nats-py's ``Client.publish`` buffers
on a client that is not connected (no server: the part under test is the command's bytes).
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any

import nats.errors
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from natsrouter.link import nats_client
from natsrouter.link.nats_client import OrderedClient

# The Router's own names, names nats-py strips or leaves out, and names it refuses.
_NAMES = st.one_of(
    st.sampled_from(
        ["trace_id", "tenant_id", "version", "traceparent", "Nats-Msg-Id", " A ", "", "  "]
    ),
    st.text(st.sampled_from("aZ9-_.!~ \t\r\n:é"), max_size=6),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=6),
)
_VALUES = st.one_of(
    st.text(st.sampled_from("ab1 \t\r\n\x0b\x85\u2028é"), max_size=12),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=12),
)
_HEADERS = st.dictionaries(_NAMES, _VALUES, max_size=6)

#: A buffer limit the publishes fit (a client not yet connected has none).
_BUFFER = 1 << 20

Written = bytes | tuple[type[BaseException], str]


def _done(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits (a publish on a client that is not connected)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    raise AssertionError("the publish waited")


def _by_nats_py(headers: Mapping[str, str]) -> Written:
    """The command nats-py's own publish buffers for ``headers``, or its error."""
    nc = Client()
    nc._max_pending_size = _BUFFER  # as connect() sets it: the publish is buffered
    try:
        _done(nc.publish("h.s", b"p", headers=dict(headers)))
    except Exception as exc:  # the error is the outcome compared
        return type(exc), str(exc)
    return bytes(nc._pending[-1])


def _by_publish_now(headers: Mapping[str, str]) -> Written:
    """The command the link's publish buffers for ``headers``, or its error."""
    nc = OrderedClient()
    nc._max_pending_size = _BUFFER
    try:
        assert nc.publish_now("h.s", b"p", headers=headers) is None
    except Exception as exc:  # the error is the outcome compared
        return type(exc), str(exc)
    return bytes(nc._pending[-1])


@settings(max_examples=500)
@given(headers=_HEADERS)
def test_the_block_is_nats_py_s_for_any_names_and_values(headers: dict[str, str]) -> None:
    """Any headers, written twice (names then known): nats-py's bytes, or its error and text."""
    expected = _by_nats_py(headers)
    assert _by_publish_now(headers) == expected
    assert _by_publish_now(headers) == expected


def test_a_bad_name_after_a_value_that_is_not_utf8_raises_the_value_s_error() -> None:
    """nats-py encodes each value in turn: the earlier value's UnicodeEncodeError wins."""
    headers = {"A": "\udc80", "B C": "1"}
    outcome = _by_publish_now(headers)
    assert outcome == _by_nats_py(headers)
    assert isinstance(outcome, tuple) and outcome[0] is UnicodeEncodeError


def test_a_refused_name_is_refused_every_time() -> None:
    """A name nats-py refuses is not remembered: the second publish raises BadHeaderError too."""
    for _ in range(2):
        assert _by_publish_now({"bad name": "1"}) == (
            nats.errors.BadHeaderError,
            "nats: invalid header: 'bad name'",
        )


def test_the_table_of_names_stays_bounded() -> None:
    """Past its bound, new names are checked on every publish and not kept."""
    for i in range(nats_client._NAME_LINES_MAX + 10):
        name = f"name-{i}"
        assert _by_publish_now({name: "v"}) == _by_nats_py({name: "v"})
    assert len(nats_client._NAME_LINES) <= nats_client._NAME_LINES_MAX
