"""The link's inbound message types are immutable tuples of their fields (NamedTuples).

They were frozen dataclasses; a NamedTuple costs a third as much to build per message
(docs/performance.md). What a caller may rely on is pinned here.
"""

from __future__ import annotations

import pytest

from natsrouter.link.transport import InboundMessage, JsMessage, JsMetadata


def test_an_inbound_message_cannot_be_changed() -> None:
    """Setting a field of an InboundMessage raises AttributeError, as the frozen class did."""
    message = InboundMessage("a.b", b"{}", None, "_INBOX.1")
    with pytest.raises(AttributeError):
        message.reply = "_INBOX.2"  # type: ignore[misc]


def test_an_inbound_message_built_with_two_fields_has_no_headers_and_no_reply() -> None:
    """InboundMessage(subject, data) equals the one built with headers and reply None."""
    assert InboundMessage("a.b", b"x") == InboundMessage("a.b", b"x", None, None)


def test_a_js_message_names_its_fields_in_order() -> None:
    """A JsMessage built positionally reads back subject, data, headers, reply, metadata."""
    meta = JsMetadata("S", "C", 7, 3, 2, 0)
    message = JsMessage("s.x", b"d", {"k": "v"}, "$JS.ACK.x", meta)
    assert (message.subject, message.data, message.headers, message.reply) == (
        "s.x",
        b"d",
        {"k": "v"},
        "$JS.ACK.x",
    )
    assert message.metadata is not None
    assert (message.metadata.stream_seq, message.metadata.consumer_seq) == (7, 3)


def test_a_js_message_cannot_be_changed() -> None:
    """Setting a field of a JsMessage, or of its metadata, raises AttributeError."""
    meta = JsMetadata("S", "C", 1, 1, 1, 0)
    message = JsMessage("s.x", b"d", None, "$JS.ACK.x", meta)
    with pytest.raises(AttributeError):
        message.metadata = None  # type: ignore[misc]
    with pytest.raises(AttributeError):
        meta.num_delivered = 2  # type: ignore[misc]
