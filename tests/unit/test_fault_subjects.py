"""A fault limited to a subject or pattern: NATS matching, parsing, and where it acts."""

from __future__ import annotations

import pytest

from natsrouter.errors import OperationTimeoutError
from natsrouter.link.faults import (
    Fault,
    FaultRegistry,
    FaultSpecError,
    FaultTarget,
    subject_matches,
)


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.b.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*.c", "a.x.c", True),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c", True),
        ("a.>", "a", False),
        (">", "anything.at.all", True),
        ("*", "a.b", False),
        ("a.b", "a.c", False),
    ],
)
def test_subject_matching_follows_nats(pattern: str, subject: str, matches: bool) -> None:
    """``*`` is exactly one token, a final ``>`` one or more."""
    assert subject_matches(pattern, subject) is matches


def test_from_dict_reads_the_subject_and_to_dict_gives_it_back() -> None:
    """The admin body's ``subject`` round-trips and shows in the description."""
    fault = Fault.from_dict({"kind": "delay", "delay_ms": 250, "subject": "caf.exec.>"})
    assert fault == Fault.delay(250).on_subject("caf.exec.>")
    assert fault.to_dict() == {
        "kind": "delay",
        "delay_ms": 250,
        "subject": "caf.exec.>",
        "description": "delay(250) on caf.exec.>",
    }


@pytest.mark.parametrize("subject", ["", "a..b", "a.>.b", "a b", "a.b*", 7])
def test_a_bad_subject_names_the_field(subject: object) -> None:
    """Empty tokens, a non-final >, partial wildcards, spaces and non-strings: field subject."""
    with pytest.raises(FaultSpecError) as caught:
        Fault.from_dict({"kind": "timeout", "subject": subject})
    assert caught.value.field == "subject"


@pytest.mark.parametrize("target", [FaultTarget.CONNECT, FaultTarget.ACK, FaultTarget.NAK])
def test_targets_without_a_subject_refuse_one(target: FaultTarget) -> None:
    """connect, ack and nak carry no subject: a subject fault on them is refused."""
    with pytest.raises(FaultSpecError) as caught:
        FaultRegistry().set(target, Fault.timeout().on_subject("a.>"))
    assert caught.value.field == "subject"


async def test_a_subject_fault_acts_only_on_matching_subjects() -> None:
    """Raised for slow.x, not for fast.x nor for an operation without a subject."""
    registry = FaultRegistry()
    registry.set(FaultTarget.PUBLISH, Fault.timeout().on_subject("slow.>"))
    with pytest.raises(OperationTimeoutError):
        await registry.apply(FaultTarget.PUBLISH, None, "slow.x")
    await registry.apply(FaultTarget.PUBLISH, None, "fast.x")
    await registry.apply(FaultTarget.PUBLISH, None)
