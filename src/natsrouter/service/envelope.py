"""Headers on everything the Router publishes (CONTRACT §1): trace, tenant, version.

``trace_id``, ``tenant_id``, ``version: 1`` and a W3C ``traceparent`` whose trace id is the
request's ``trace_id`` when that is already 32 hex digits, and a digest of it otherwise (so
one request keeps one trace across every message it causes).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping
from os import urandom

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_span_bits = random.Random().getrandbits
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def new_trace_id() -> str:
    """32 random hex digits (a W3C trace id): from ``os.urandom``, as ``uuid4`` draws them,
    without building a ``UUID`` (2 µs against 0.5, on every decide sent without one)."""
    return urandom(16).hex()


def trace_from_headers(headers: Mapping[str, str] | None) -> str | None:
    """``trace_id`` header, else the trace id of a valid ``traceparent``."""
    if not headers:
        return None
    if headers.get("trace_id"):
        return headers["trace_id"]
    match = _TRACEPARENT.match(headers.get("traceparent", ""))
    return match.group(1) if match else None


def traceparent(trace_id: str) -> str:
    hex_id = (
        trace_id if _HEX32.match(trace_id) else hashlib.sha256(trace_id.encode()).hexdigest()[:32]
    )
    # A span id only has to differ between spans, not be secret: the process's PRNG, not a
    # system call for 8 random bytes on every message.
    return f"00-{hex_id}-{_span_bits(64) or 1:016x}-01"


def headers_for(trace_id: str, tenant_id: str, msg_id: str | None = None) -> dict[str, str]:
    headers = {
        "trace_id": trace_id,
        "tenant_id": tenant_id,
        "version": "1",
        "traceparent": traceparent(trace_id),
    }
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    return headers
