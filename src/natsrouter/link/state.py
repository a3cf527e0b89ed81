"""Connection states, the legal moves between them, and their gauge values.

One enum and one table: ``check_transition`` is the only judge of a move, and the link's
``_transition`` is the only place that changes its state (see link.py).
"""

from __future__ import annotations

from enum import StrEnum


class ConnectionState(StrEnum):
    #: First connection not made yet (the process started, NATS may be down).
    CONNECTING = "connecting"
    #: A connection is up, every subscription is in place, pings are answered.
    CONNECTED = "connected"
    #: An established connection was lost; retrying with backoff.
    RECONNECTING = "reconnecting"
    #: Reconnection exhausted (the link may still be retrying, per policy), or closed.
    DISCONNECTED = "disconnected"

    @property
    def gauge(self) -> float:
        """Value of ``router_nats_connection_status``: 1 up, 0.5 trying, 0 down."""
        return _GAUGE[self]


_GAUGE = {
    ConnectionState.CONNECTING: 0.5,
    ConnectionState.CONNECTED: 1.0,
    ConnectionState.RECONNECTING: 0.5,
    ConnectionState.DISCONNECTED: 0.0,
}

TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.CONNECTING: frozenset(
        {ConnectionState.CONNECTED, ConnectionState.DISCONNECTED}
    ),
    ConnectionState.CONNECTED: frozenset(
        {ConnectionState.RECONNECTING, ConnectionState.DISCONNECTED}
    ),
    ConnectionState.RECONNECTING: frozenset(
        {ConnectionState.CONNECTED, ConnectionState.DISCONNECTED}
    ),
    ConnectionState.DISCONNECTED: frozenset({ConnectionState.CONNECTED}),
}


class IllegalTransitionError(RuntimeError):
    """A bug: the link tried a move the table does not allow."""


def check_transition(current: ConnectionState, new: ConnectionState) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransitionError(f"illegal connection state move {current} -> {new}")
