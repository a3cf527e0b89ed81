"""A trace id made for a request without one: 32 random hex digits, a traceparent's trace id."""

from __future__ import annotations

import re

from natsrouter.service.envelope import headers_for, new_trace_id


def test_a_new_trace_id_is_32_lowercase_hex_digits_and_never_repeats() -> None:
    """1,000 new trace ids: each 32 lowercase hex digits, all distinct."""
    ids = [new_trace_id() for _ in range(1000)]
    assert all(re.fullmatch("[0-9a-f]{32}", one) for one in ids)
    assert len(set(ids)) == 1000


def test_a_new_trace_id_is_the_traceparent_trace_id() -> None:
    """The traceparent made for a new trace id carries it unchanged."""
    trace_id = new_trace_id()
    assert headers_for(trace_id, "t")["traceparent"].split("-")[1] == trace_id
