"""The link's operations, as a bounded enum shared by the link and its metrics.

It lives outside ``link/`` so that ``observability/`` (the ``operation`` metric label) needs
nothing from the link: imports go one way, link -> observability.
"""

from __future__ import annotations

from enum import StrEnum


class Operation(StrEnum):
    """Operations of the link; the values are the ``operation`` metric label."""

    PUBLISH = "publish"
    PUBLISH_WITH_ACK = "publish_with_ack"
    REQUEST = "request"
    ACK = "ack"
    NAK = "nak"
    SUBSCRIBE = "subscribe"
    #: Key-value reads and writes (shared state between Router processes).
    KV_GET = "kv_get"
    KV_PUT = "kv_put"
    KV_CREATE = "kv_create"
    KV_UPDATE = "kv_update"
