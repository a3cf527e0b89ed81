"""Which subjects a DecideRequest may name in ``assignment_subject``: the operator's choice.

A client that could name any subject could make the Router store an ExecAssignment in the
billing stream, the DLQ or the JetStream API. So a request may name only a subject matching
one of ``assignment_subjects_allowed`` (NATS patterns, ``*`` one token, ``>`` the rest; by
default the configured ``assignment_subject`` and its sub-subjects), and never, whatever the
setting says, a subject the Router owns (decide, acks, results, usage, their dead letters,
and anything under them), a ``$...`` subject (system and JetStream API) or an ``_INBOX...``
one (someone's replies).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class SubjectRefusal(StrEnum):
    """Why a subject was refused; the ``reason`` metric label and error detail."""

    #: A subject the Router owns, ``$...`` or ``_INBOX...``: refused whatever the setting.
    RESERVED = "reserved"
    #: Not matched by ``assignment_subjects_allowed``.
    NOT_ALLOWED = "not_allowed"


def matches(pattern: str, subject: str) -> bool:
    """True when ``subject`` (no wildcards) matches the NATS ``pattern``."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(tokens) == len(wanted)


def _under(root: str, subject: str) -> bool:
    return subject == root or subject.startswith(root + ".")


class AssignmentSubjects:
    """Answers "may a request push its assignment to this subject?"."""

    def __init__(self, default_subject: str, allowed: Iterable[str], owned: Iterable[str]) -> None:
        self.default_subject = default_subject
        patterns = tuple(allowed)
        self.allowed = patterns or (default_subject, f"{default_subject}.>")
        self.owned = tuple(owned)

    def refusal(self, subject: str) -> SubjectRefusal | None:
        """None when the subject may be used, else why not."""
        if (
            subject.startswith("$")
            or _under("_INBOX", subject)
            or any(_under(root, subject) for root in self.owned)
        ):
            return SubjectRefusal.RESERVED
        if subject == self.default_subject or any(matches(p, subject) for p in self.allowed):
            return None
        return SubjectRefusal.NOT_ALLOWED
