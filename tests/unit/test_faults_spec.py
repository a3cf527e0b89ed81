"""Fault descriptions: parsing (admin endpoint) and their log text."""

from __future__ import annotations

from typing import Any

import pytest

from natsrouter.errors import Reason
from natsrouter.link.faults import Fault, FaultKind, FaultSpecError


@pytest.mark.parametrize(
    ("data", "fault", "text"),
    [
        ({"kind": "error"}, Fault.error(), "error(fault_injected)"),
        ({"kind": "error", "reason": "timeout"}, Fault.error(Reason.TIMEOUT), "error(timeout)"),
        ({"kind": "timeout"}, Fault.timeout(), "timeout"),
        ({"kind": "close_connection"}, Fault.close_connection(), "close_connection"),
        ({"kind": "delay", "delay_ms": 50}, Fault.delay(50), "delay(50)"),
        (
            {"kind": "intermittent", "probability": 0.25},
            Fault.intermittent(0.25),
            "intermittent(0.25)",
        ),
    ],
)
def test_from_dict_and_describe(data: dict[str, Any], fault: Fault, text: str) -> None:
    """Each kind parses to the same fault its constructor makes, and describes itself."""
    parsed = Fault.from_dict(data)
    assert parsed == fault
    assert parsed.describe() == text
    assert Fault.from_dict(parsed.to_dict()) == parsed


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "explode"}, "kind"),
        ({}, "kind"),
        ({"kind": "error", "reason": "bad_luck"}, "reason"),
        ({"kind": "delay"}, "delay_ms"),
        ({"kind": "delay", "delay_ms": -5}, "delay_ms"),
        ({"kind": "delay", "delay_ms": True}, "delay_ms"),
        ({"kind": "intermittent", "probability": 2}, "probability"),
        ({"kind": "intermittent", "probability": "half"}, "probability"),
    ],
)
def test_bad_descriptions_name_the_field(data: dict[str, Any], field: str) -> None:
    """An invalid description raises FaultSpecError naming the field."""
    with pytest.raises(FaultSpecError) as info:
        Fault.from_dict(data)
    assert info.value.field == field


def test_kinds_are_the_contract_kinds() -> None:
    """The five fault kinds of the contract, no more."""
    assert {k.value for k in FaultKind} == {
        "error",
        "timeout",
        "close_connection",
        "delay",
        "intermittent",
    }
