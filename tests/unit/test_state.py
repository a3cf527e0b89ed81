"""Connection states: the transition table and the gauge values."""

from __future__ import annotations

import itertools

import pytest

from natsrouter.link.state import (
    TRANSITIONS,
    ConnectionState,
    IllegalTransitionError,
    check_transition,
)

S = ConnectionState
LEGAL = {
    (S.CONNECTING, S.CONNECTED),
    (S.CONNECTING, S.DISCONNECTED),
    (S.CONNECTED, S.RECONNECTING),
    (S.CONNECTED, S.DISCONNECTED),
    (S.RECONNECTING, S.CONNECTED),
    (S.RECONNECTING, S.DISCONNECTED),
    (S.DISCONNECTED, S.CONNECTED),
}


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL))
def test_legal_moves_pass(old: ConnectionState, new: ConnectionState) -> None:
    """Each move of the written table is accepted."""
    check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [p for p in itertools.product(S, S) if p not in LEGAL])
def test_every_other_move_raises(old: ConnectionState, new: ConnectionState) -> None:
    """Any move outside the table raises (self-moves included)."""
    with pytest.raises(IllegalTransitionError):
        check_transition(old, new)


def test_table_matches_the_documented_moves() -> None:
    """The table holds exactly the documented moves."""
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL


def test_gauge_values() -> None:
    """router_nats_connection_status: 1 connected, 0.5 trying, 0 disconnected."""
    assert [s.gauge for s in S] == [0.5, 1.0, 0.5, 0.0]
